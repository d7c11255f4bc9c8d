"""Load generated Triton modules through a content-hash cache on disk.

    entry = load(source).entry        # written once, imported; later loads (any process) hit the cache
    entry(inputs, outputs, sizes)     # [Note: Triton kernel ABI]

[Note: Triton build cache]
- An entry is ``$XDG_CACHE_HOME/effc/triton/<key>/`` (``~/.cache`` when unset), ``key`` the
  sha256 of triton's version and the module text. It holds ``kernel.py`` (Triton's jit reads
  a function's source from its file, so the module must be a real file; tracebacks and
  debugging point at it) and ``stamp.json`` with the file's sha256. Compiled GPU binaries
  are Triton's own cache's business (``~/.triton``), keyed by that same source.
- Entries are written in a temporary folder beside them and renamed into place, so a reader
  sees a whole entry or none; an entry whose file does not match its stamp, or that fails to
  import, is moved aside and written again, once.
- A module is imported once per process and per TRITON_INTERPRET mode (``_LOADED``; the
  ``@triton.jit`` decorator reads the variable when the module runs), registered in
  ``sys.modules`` as ``effc_triton_<key>`` so that Triton and ``inspect`` find it.
- The autotuner's choice for a kernel lives beside the modules, in ``tune/``
  (backends/triton/autotune.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

from effc.backends.cache import cache_base, content_key, discard, file_sha256, publish, stamp_matches, staging
from effc.codegen.triton_abi import TritonSource
from effc.errors import CompileError

_LOADED: dict[str, ModuleType] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadedKernel:
    module: ModuleType
    entry: Callable[..., None]
    path: Path            # kernel.py
    cache_hit: bool


def cache_root() -> Path:
    return cache_base() / "triton"


def triton_version() -> str:
    import triton
    return str(triton.__version__)


def cache_key(source: str) -> str:
    return content_key(triton_version(), source)


def _valid(entry: Path) -> bool:
    return stamp_matches(entry, "sha256", "kernel.py")


def load(src: TritonSource, cache_dir: str | os.PathLike[str] | None = None) -> LoadedKernel:
    """The module of ``src`` imported from its cache entry (written now when missing or
    damaged); see [Note: Triton build cache]. Raises CompileError when the text does not import."""
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    key = cache_key(src.source)
    entry = root / key
    # @triton.jit reads TRITON_INTERPRET when the module runs: one import per mode
    mode = key + ("-interpret" if os.environ.get("TRITON_INTERPRET") == "1" else "")
    with _LOCK:
        if mode in _LOADED and _valid(entry):
            mod = _LOADED[mode]
            return LoadedKernel(mod, getattr(mod, src.entry), entry / "kernel.py", True)
        hit = _valid(entry)
        if not hit:
            _write(src, root, entry)
        try:
            mod = _import(mode, entry / "kernel.py")
        except Exception as first:  # noqa: BLE001 - a damaged entry is rewritten once, then reported
            discard(entry, root)
            _write(src, root, entry)
            hit = False
            try:
                mod = _import(mode, entry / "kernel.py")
            except Exception as e:
                raise CompileError(f"generated Triton module {entry / 'kernel.py'} does not import: {e}") from first
        _LOADED[mode] = mod
    if not hasattr(mod, src.entry):
        raise CompileError(f"generated Triton module {entry / 'kernel.py'} has no function {src.entry}")
    return LoadedKernel(mod, getattr(mod, src.entry), entry / "kernel.py", hit)


def _import(mode: str, path: Path) -> ModuleType:
    name = f"effc_triton_{mode[:24]}{'_i' if mode.endswith('-interpret') else ''}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def _write(src: TritonSource, root: Path, entry: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if entry.exists():
        discard(entry, root)
    tmp = staging(root, src.name)
    path = tmp / "kernel.py"
    try:
        path.write_text(src.source)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, entry, root, {"name": src.name, "sha256": file_sha256(path), "triton": triton_version()}, _valid)
