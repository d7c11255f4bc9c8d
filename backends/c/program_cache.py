"""The C target's whole-program cache: a compile whose graph, weights, options, effc source and
toolchain match a stored entry loads it, and skips the passes, kernel lowering, code generation
and weight packing (the shared object itself comes from the build cache, build.py).

    key = program_key(imported.graph, options)          # before any pass runs
    hit = load(key, imported.graph.constants, label)     # Loaded, or None
    ...                                                  # on a miss: compile, then
    store(key, graph, plan, program, report, imported.graph.constants, label)

[Note: C program cache]
- The key is the sha256 of everything the compiled result depends on:
  * the imported IR graph's text: every node with its attributes (floats print exactly), the
    input types with their size symbols, the constants' names and types;
  * the weights' values ([Note: weight fingerprint] in backends/cache.py);
  * the options, size hints included, except those that change nothing compiled (``verify``,
    ``explain``, ``cache``; ``dump_dir`` bypasses the cache, since its dumps need the passes);
  * effc's own source, every ``.py`` file (``cache.source_digest``), and the versions of
    Python, torch and sympy (the entry is a pickle holding sympy expressions);
  * the host: the C toolchain (compiler, version, accepted flags), the CPU's flags, cache
    sizes and core count (tile sizes and thread counts in the generated C), and the cost
    model's ceilings (a calibration changes fusion decisions).
- An entry is ``$XDG_CACHE_HOME/effc/c/programs/<key>/`` (``~/.cache`` when unset):
  ``program.pkl``, a pickle of the final graph, the memory plan, the generated C
  (``program.Generated``) and the explain report's data as first compiled; ``weights.bin``,
  the tensors the compile made (packed weights, folded constants), raw and 64-byte aligned;
  and ``stamp.json``. Tensors never go into the pickle: each is a reference to an imported
  constant by name (the key proves the caller's weights are the ones compiled; they are not
  stored twice) or a place in ``weights.bin``.
- Loading maps ``weights.bin`` privately (``torch.from_file``): pages are read when the
  program first touches them, nothing is copied; the kernels' weight pointers point into the
  mapping. An entry is only ever replaced by a rename, never written in place, so a mapping
  stays valid while another process replaces or removes its entry.
- Integrity: ``stamp.json`` holds the sha256 of ``program.pkl`` (checked in full on each
  load), the size of ``weights.bin`` and a crc32 of samples of it (its first and last 64 KiB
  and 4 KiB of every 4 MiB). A truncated, missing, replaced or zeroed file fails the check;
  a flipped bit deep inside the weights may not: reading all of them would make a hit cost
  what hashing them does, and a cache entry is trusted as the page cache is. An entry that
  fails the check or fails to load (whatever the reason) is moved aside, logged, and the
  model is compiled again; a cache never makes a compile fail. Entries are written in a
  temporary folder and renamed into place (backends/cache.py ``publish``), so a reader sees
  a whole entry or none.
- Size: ``weights.bin`` is about the size of the model's weights (GPT-2 small: 0.5 GB). After
  each store, the least recently used entries (a hit touches its stamp) are removed until the
  rest fit in ``EFFC_CACHE_LIMIT`` (default 8 GiB).
- Off: option ``cache=False``, or ``EFFC_CACHE=0`` in the environment (the test suite does).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import sympy
import torch

from effc import debug
from effc.backends.cache import (content_key, discard, prune, publish, source_digest, staging,
                                 tensor_bytes, touch, weights_digest)
from effc.debug import log
from effc.ir import Graph
from effc.options import Options, parse_bytes

from .build import cache_root as build_cache_root, toolchain
from .program import CProgram

FORMAT = 1
PROGRAM, WEIGHTS, STAMP = "program.pkl", "weights.bin", "stamp.json"
ALIGN = 64
EDGE, SAMPLE, EVERY = 64 << 10, 4 << 10, 4 << 20      # the sampled integrity check, in bytes
# options that change nothing compiled; dump_dir never reaches the cache
_NOT_KEYED = frozenset({"verify", "explain", "cache", "dump_dir"})


def cache_root() -> Path:
    return build_cache_root() / "programs"


def program_key(graph: Graph, options: Options) -> str:
    """The key of what compiling ``graph`` (as imported, with its weights) under ``options``
    gives on this host with this effc [Note: C program cache]."""
    return content_key("effc C program", str(FORMAT), source_digest(), _versions(), _host(),
                       _options(options), str(graph), weights_digest(graph.constants))


def _versions() -> str:
    return f"python {sys.version}; torch {torch.__version__}; sympy {sympy.__version__}"


def _host() -> str:
    from effc.codegen.c_gemm_tiles import host_caches, host_flags
    from effc.costmodel import current_target
    tc = toolchain()
    return json.dumps([tc.compiler, tc.version, list(tc.flags), host_flags(), repr(host_caches()),
                       os.cpu_count(), repr(current_target("cpu"))])


def _options(options: Options) -> str:
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name not in _NOT_KEYED}
    values["size_hints"] = sorted(values["size_hints"].items())
    return json.dumps(values, sort_keys=True, default=repr)


@dataclass
class Loaded:
    graph: Graph
    plan: Any
    program: CProgram
    report: Any                 # the GraphReport as first compiled, without label and graph
    entry: Path


def load(key: str, imported: Mapping[str, torch.Tensor], label: str) -> Loaded | None:
    """The program stored under ``key``, loaded, or None (nothing stored, or an entry that is
    damaged or does not load: then it is removed, and the caller compiles)."""
    root = cache_root()
    entry = root / key
    if not (entry / STAMP).exists():
        return None
    try:
        stamp = json.loads((entry / STAMP).read_text())
        data = (entry / PROGRAM).read_bytes()
        if stamp.get("format") != FORMAT or hashlib.sha256(data).hexdigest() != stamp["program_sha256"]:
            raise ValueError(f"{PROGRAM} does not match its stamp")
        weights = _map_weights(entry / WEIGHTS, int(stamp["weights_bytes"]), stamp["weights_crc32"])
        state = _Unpickler(io.BytesIO(data), imported, weights).load()
        program = CProgram(state["graph"], state["plan"], label, state["generated"], state["packed"])
    except Exception as e:  # noqa: BLE001 - any failure to load means: compile again
        log.warning("compile cache entry %s is damaged or does not load (%s: %s); compiling again",
                    entry, type(e).__name__, e)
        discard(entry, root)
        return None
    touch(entry)
    return Loaded(state["graph"], state["plan"], program, state["report"], entry)


def store(key: str, graph: Graph, plan: Any, program: CProgram, report: Any,
          imported: Mapping[str, torch.Tensor], label: str) -> Path | None:
    """Keep ``program`` (compiled from ``graph`` and ``plan``; ``report`` its explain record)
    under ``key``; the entry, or None where it could not be written (logged: the compile
    itself stands)."""
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = staging(root, label)
    except OSError as e:
        log.warning("compile cache %s is not writable (%s); not cached", root, e)
        return None
    entry = root / key
    try:
        state = {"graph": graph, "plan": plan, "generated": program.generated, "packed": program.packed,
                 "report": dataclasses.replace(report, label="", graph=None, extern_reasons={})}
        pickler = _Pickler(imported)
        data = pickler.dumps(state)
        (tmp / PROGRAM).write_bytes(data)
        size = _write_weights(tmp / WEIGHTS, pickler.stored)
        stamp = {"format": FORMAT, "name": label, "program_sha256": hashlib.sha256(data).hexdigest(),
                 "weights_bytes": size, "weights_crc32": _sampled_crc(tmp / WEIGHTS, size)}
        publish(tmp, entry, root, stamp, _valid)
    except Exception as e:  # noqa: BLE001 - an entry that cannot be written costs only the next compile
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("could not store the compiled program in the compile cache (%s: %s)", type(e).__name__, e)
        return None
    try:
        prune(root, parse_bytes(debug.CACHE_LIMIT, "EFFC_CACHE_LIMIT") or 0, keep=entry)
    except Exception as e:  # noqa: BLE001
        log.warning("could not prune the compile cache %s (%s)", root, e)
    return entry


def _valid(entry: Path) -> bool:
    try:
        stamp = json.loads((entry / STAMP).read_text())
        return (hashlib.sha256((entry / PROGRAM).read_bytes()).hexdigest() == stamp["program_sha256"]
                and _sampled_crc(entry / WEIGHTS, int(stamp["weights_bytes"])) == stamp["weights_crc32"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


# -- tensors outside the pickle ---------------------------------------------------------------

class _Pickler:
    """Pickles a program's state with every tensor replaced by a reference: to an imported
    constant (by name) when it is one, else to its place in ``weights.bin`` (``stored``)."""

    def __init__(self, imported: Mapping[str, torch.Tensor]) -> None:
        self.imported = {id(t): name for name, t in sorted(imported.items(), reverse=True)}
        self.stored: list[torch.Tensor] = []
        self._refs: dict[int, tuple] = {}
        self._keep: list[torch.Tensor] = []     # ids stay unique while the pickle is made
        self._end = 0

    def dumps(self, state: Any) -> bytes:
        buf = io.BytesIO()
        _RefPickler(buf, self).dump(state)
        return buf.getvalue()

    def ref(self, obj: Any) -> tuple | None:
        if not isinstance(obj, torch.Tensor):
            return None
        ref = self._refs.get(id(obj))
        if ref is None:
            self._keep.append(obj)
            name = self.imported.get(id(obj))
            if name is not None:
                ref = ("imported", name)
            else:
                nbytes = obj.numel() * obj.element_size()
                ref = ("stored", self._end, str(obj.dtype).removeprefix("torch."), tuple(obj.shape))
                self.stored.append(obj)
                self._end += -(-nbytes // ALIGN) * ALIGN
            self._refs[id(obj)] = ref
        return ref


class _RefPickler(pickle.Pickler):
    def __init__(self, file: Any, refs: _Pickler) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.refs = refs

    def persistent_id(self, obj: Any) -> tuple | None:
        return self.refs.ref(obj)

    def reducer_override(self, obj: Any) -> Any:
        # sympy rebuilds a pickled expression through its constructor, which evaluates it:
        # Max(a, b) built unevaluated comes back simplified, and code generated from it later
        # (a standalone export) would differ from what the first compile generates
        if isinstance(obj, sympy.Basic) and not obj.is_Atom:
            return _unevaluated, (obj.func, obj.args)
        return NotImplemented


def _unevaluated(func: Any, args: tuple) -> sympy.Basic:
    with sympy.evaluate(False):
        return func(*args)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, imported: Mapping[str, torch.Tensor], weights: torch.Tensor) -> None:
        super().__init__(file)
        self.imported, self.weights = imported, weights

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if pid[0] == "imported":
            return self.imported[pid[1]]
        _, offset, dtype_name, shape = pid
        dtype = getattr(torch, dtype_name)
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"not a dtype: {dtype_name}")
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * dtype.itemsize
        if offset + nbytes > self.weights.numel():
            raise pickle.UnpicklingError(f"a tensor at byte {offset} lies past the end of {WEIGHTS}")
        return self.weights[offset:offset + nbytes].view(dtype).view(shape)


def _write_weights(path: Path, tensors: list[torch.Tensor]) -> int:
    """Write ``tensors`` one after another, each at a multiple of ALIGN bytes (the order of
    ``_Pickler.stored``); the file's size."""
    end = 0
    with open(path, "wb") as f:
        for t in tensors:
            data = tensor_bytes(t)
            f.write(data)
            end += len(data)
            pad = -end % ALIGN
            f.write(b"\0" * pad)
            end += pad
    return end


def _map_weights(path: Path, size: int, crc: int) -> torch.Tensor:
    """``weights.bin`` as one uint8 tensor over a private mapping of the file, after the
    sampled check [Note: C program cache]."""
    if _sampled_crc(path, size) != crc:
        raise ValueError(f"{WEIGHTS} does not match its stamp (truncated or damaged)")
    if size == 0:
        return torch.empty(0, dtype=torch.uint8)
    return torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)


def _sampled_crc(path: Path, size: int) -> int:
    """crc32 of the file's size, first and last EDGE bytes and SAMPLE bytes at every EVERY;
    -1 where the file's size is not ``size``."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size != size:
            return -1
        fd = f.fileno()
        crc = zlib.crc32(str(size).encode())
        for at in [0, *range(EVERY, max(0, size - EDGE), EVERY), max(0, size - EDGE)]:
            crc = zlib.crc32(os.pread(fd, EDGE if at in (0, max(0, size - EDGE)) else SAMPLE, at), crc)
    return crc
