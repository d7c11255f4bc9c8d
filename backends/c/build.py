"""Compile generated C into a shared object, cache it by content, and load it with ctypes.

    lib = build(PRELUDE + source, "model")      # cc once; later calls (any process) hit the cache
    lib.effc_k0(...)                             # ctypes functions, as on a CDLL

[Note: C build cache]
- Flags are chosen once per host and compiler (``flags()``): ``-O3 -march=native -fopenmp``
  where the compiler takes them; a refused ``-march=native`` or ``-fopenmp`` is dropped and
  recorded in ``Toolchain.dropped`` (OpenMP pragmas are then ignored: kernels run on one
  thread). The verdict is kept in ``toolchains/<key>.json`` under the cache folder, keyed by
  the compiler's path and version and the CPU's flags, so a new process skips the probe.
  Meaning-preserving only: ``-fno-math-errno -fno-trapping-math`` (no value changes)
  and ``-ffp-contract=off`` (no silent fused multiply-adds: eager rounds a*b before adding;
  templates that want FMA say ``fmaf``). Never ``-ffast-math`` ([Note: C kernel ABI]).
- An entry is ``$XDG_CACHE_HOME/effc/c/<key>/`` (``~/.cache`` when unset), ``key`` the sha256
  of the compiler's identity, the flags and the source. It holds ``model.c`` (what the
  compiler saw; error messages and debugging point at it), ``lib.so`` and ``stamp.json`` with
  the .so's sha256. Entries are built in a temporary folder beside them and renamed into
  place, so a reader sees a whole entry or none; an entry whose .so does not match its stamp
  (truncated, corrupt) is moved aside and rebuilt.
- A failed compile leaves its source at ``<key>-failed/model.c`` and raises CompileError
  naming that path and quoting the compiler's first error lines.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effc.codegen.c_gemm_tiles import host_flags
from effc.errors import CompileError

from effc.backends.cache import cache_base, content_key, discard, file_sha256, publish, stamp_matches, staging

BASE_FLAGS = ("-O3", "-fPIC", "-shared", "-std=gnu11", "-fno-math-errno", "-fno-trapping-math",
              "-ffp-contract=off")
OPTIONAL_FLAGS = ("-march=native", "-fopenmp")
ERROR_LINES = 20
_PROBE = "#include <math.h>\nint effc_probe(int n){int s=0;\n#pragma omp parallel for reduction(+:s)\n" \
         "for(int i=0;i<n;i++) s+=i; return s;}\n"


@dataclass(frozen=True)
class Toolchain:
    compiler: str
    version: str                 # the compiler's ``--version`` text: part of every cache key
    flags: tuple[str, ...]
    dropped: tuple[str, ...] = ()  # optional flags the compiler refused

    @property
    def openmp(self) -> bool:
        return "-fopenmp" in self.flags


@dataclass
class LoadedLibrary:
    """A loaded shared object; attribute access gives its ctypes functions."""
    path: Path                  # the .so
    source_path: Path           # model.c beside it
    cache_hit: bool
    toolchain: Toolchain
    cdll: ctypes.CDLL = field(repr=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.cdll, name)


def compiler() -> str:
    return os.environ.get("CC", "cc")


def cache_root() -> Path:
    return cache_base() / "c"


@functools.lru_cache(maxsize=None)
def toolchain(cc: str | None = None) -> Toolchain:
    """The compiler and the flags this host's compiler accepts (probed once per process)."""
    cc = cc or compiler()
    if shutil.which(cc) is None:
        raise CompileError(f"no C compiler: {cc!r} is not on PATH (set CC)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.strip()
    # the probe's verdict is kept on disk per compiler, version and CPU (-march=native)
    key = content_key(shutil.which(cc) or cc, version, host_flags(), *BASE_FLAGS, *OPTIONAL_FLAGS, _PROBE)[:32]
    memo = cache_root() / "toolchains" / f"{key}.json"
    try:
        kept, dropped = json.loads(memo.read_text())
        return Toolchain(cc, version, BASE_FLAGS + tuple(kept), tuple(dropped))
    except (OSError, ValueError, TypeError):
        pass
    kept, dropped = [], []
    with tempfile.TemporaryDirectory(prefix="effc-probe-") as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(_PROBE)
        if not _compiles(cc, list(BASE_FLAGS), src):
            raise CompileError(f"{cc} cannot build a shared object with {' '.join(BASE_FLAGS)}")
        for flag in OPTIONAL_FLAGS:
            (kept if _compiles(cc, list(BASE_FLAGS) + kept + [flag], src) else dropped).append(flag)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp_memo = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp_memo.write_text(json.dumps([kept, dropped]))
        os.replace(tmp_memo, memo)
    except OSError:
        pass   # an unwritable cache only costs the probe next time
    return Toolchain(cc, version, BASE_FLAGS + tuple(kept), tuple(dropped))


def _compiles(cc: str, flags: list[str], src: Path) -> bool:
    out = src.with_suffix(".so")
    r = subprocess.run([cc, *flags, str(src), "-o", str(out)], capture_output=True, text=True)
    return r.returncode == 0


def compiler_available() -> bool:
    """Whether a C compiler that builds shared objects is on this host."""
    try:
        toolchain()
        return True
    except (CompileError, OSError):
        return False


def cache_key(source: str, tc: Toolchain) -> str:
    return content_key(tc.compiler, tc.version, " ".join(tc.flags), source)


def _valid(entry: Path) -> bool:
    return stamp_matches(entry, "so_sha256", "lib.so")


def build(source: str, name: str, cache_dir: str | os.PathLike[str] | None = None) -> LoadedLibrary:
    """The shared object of ``source`` (a whole translation unit), from the cache or compiled
    now, loaded; ``name`` labels the build in the stamp and temporary folders. Raises
    CompileError naming the source file when the compiler fails; see [Note: C build cache]."""
    tc = toolchain()
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(source, tc)
    entry = root / key
    hit = _valid(entry)
    if not hit:
        if entry.exists():
            discard(entry, root)
        _compile_entry(source, name, tc, root, entry)
    return LoadedLibrary(entry / "lib.so", entry / "model.c", hit, tc, ctypes.CDLL(str(entry / "lib.so")))


def _compile_entry(source: str, name: str, tc: Toolchain, root: Path, entry: Path) -> None:
    tmp = staging(root, name)
    try:
        src = tmp / "model.c"
        src.write_text(source)
        so = tmp / "lib.so"
        r = subprocess.run([tc.compiler, *tc.flags, str(src), "-o", str(so), "-lm"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            failed = root / f"{entry.name}-failed"
            shutil.rmtree(failed, ignore_errors=True)
            os.replace(tmp, failed)
            path = failed / "model.c"
            msg = (r.stderr or r.stdout).replace(str(src), str(path))
            lines = msg.splitlines()
            first = next((k for k, line in enumerate(lines) if "error" in line), 0)
            errors = lines[max(0, first - 1):]
            raise CompileError(f"{tc.compiler} failed to compile {path}:\n" + "\n".join(errors[:ERROR_LINES]))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, entry, root, {"name": name, "so_sha256": file_sha256(so), "compiler": tc.compiler,
                               "flags": list(tc.flags)}, _valid)
