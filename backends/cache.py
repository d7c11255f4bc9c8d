"""What effc's caches share: the cache folder, content keys, the stamp that tells a whole entry
from a truncated or corrupt one ([Note: C build cache], [Note: Triton build cache]), and for
the whole-program cache ([Note: C program cache]) fingerprints of effc's own source and of a
model's weights, and a size limit.

[Note: weight fingerprint]
A whole-program cache entry holds what was compiled from one set of weights, so its key must
change when any weight does; GPT-2 small has ~500 MB of them, read on every compile, hit or
miss. Measured on this repository's 2-core x86 host over 500 MB, one thread: zlib.crc32 2.9
GB/s, zlib.adler32 2.5 GB/s, sha1 1.5 GB/s, sha256 1.4 GB/s, md5 0.6 GB/s, blake2b 0.5 GB/s; a
torch reduction over the bytes was slower still. This CPU has SHA instructions: here crc32 and
adler32 together cost what sha256 does (0.37 against 0.36 s on one thread, 0.17 against 0.18 s
on two), but without them sha256 typically runs at a third of that speed, over a second for
GPT-2, which is the budget of a whole warm compile; crc32 and adler32 need no special
instructions. ``weights_digest`` takes both of each 16 MiB block of every tensor (the blocks
spread over a few threads: both release the GIL) and hashes them with sha256 together with
each tensor's name, dtype, shape and size: about 0.2 s for GPT-2 small on two idle cores.
The risk taken is an accidental collision, not an attack (whoever can write a model's weights
controls what it computes anyway):
- a change confined to 32 consecutive bits (one float32 weight, any value) always changes
  the block's crc32, whatever else it does;
- any other change to a block leaves both checksums as they were with a probability of about
  2**-64 per changed block (they are computed in unrelated ways: a polynomial remainder and
  two sums modulo 65521); crc32 alone would halve the time and leave 2**-32;
- a change of dtype, shape, name or length changes the sha256 input directly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

BLOCK = 16 << 20     # bytes per checksummed block [Note: weight fingerprint]


def cache_base() -> Path:
    """``$XDG_CACHE_HOME/effc`` (``~/.cache/effc`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "effc"


def content_key(*parts: str) -> str:
    """The sha256 of ``parts``, each ended by a NUL (so no two splits of one text collide)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp_matches(entry: Path, field: str, artifact: str) -> bool:
    """Whether ``entry/stamp.json`` records, under ``field``, the sha256 that ``entry/artifact``
    has now (False for a missing, unreadable or damaged entry)."""
    try:
        stamp = json.loads((entry / "stamp.json").read_text())
        return stamp[field] == file_sha256(entry / artifact)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def discard(entry: Path, root: Path) -> None:
    """Move a bad entry out of the way (atomically), then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=root))
    try:
        os.replace(entry, trash / "entry")
    except FileNotFoundError:
        pass
    shutil.rmtree(trash, ignore_errors=True)


def staging(root: Path, label: str) -> Path:
    """A new temporary folder beside the entries, where an entry is built before ``publish``."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:40]
    return Path(tempfile.mkdtemp(prefix=f".tmp-{safe}-", dir=root))


def publish(tmp: Path, entry: Path, root: Path, stamp: dict[str, Any], valid: Callable[[Path], bool]) -> None:
    """Write ``stamp.json`` into the built folder ``tmp`` and rename it to ``entry``: readers see
    a whole entry or none. Where another process placed the entry first, theirs is kept if
    ``valid``, else replaced. ``tmp`` is gone afterwards either way."""
    try:
        (tmp / "stamp.json").write_text(json.dumps(stamp, indent=1))
        try:
            os.replace(tmp, entry)
        except OSError:
            if not valid(entry):
                discard(entry, root)
                os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The bytes of ``t``'s values in row-major order, without a copy when ``t`` is a
    contiguous CPU tensor."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy()).cast("B")


def _checksums(block: memoryview) -> tuple[int, int]:
    return zlib.crc32(block), zlib.adler32(block)


def weights_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """A sha256 hex digest standing for the names, dtypes, shapes and values of ``tensors``
    ([Note: weight fingerprint])."""
    names = sorted(tensors)
    data = [tensor_bytes(tensors[n]) for n in names]
    blocks = [d[i:i + BLOCK] for d in data for i in range(0, len(d), BLOCK)]
    workers = max(1, min(8, os.cpu_count() or 1, len(blocks)))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="effc-digest") as pool:
            sums = list(pool.map(_checksums, blocks))
    else:
        sums = [_checksums(b) for b in blocks]
    h = hashlib.sha256(b"effc weights 1\0")
    k = 0
    for n, d in zip(names, data):
        t = tensors[n]
        h.update(f"{n}\0{t.dtype}\0{tuple(t.shape)}\0{len(d)}\0".encode())
        for _ in range(0, len(d), BLOCK):
            h.update(struct.pack("<II", *sums[k]))
            k += 1
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def source_digest() -> str:
    """The sha256 of effc's own Python source (every ``.py`` file of the package, with its
    path): a cache entry made by other code is never used. Computed once per process."""
    import effc
    import effc.backends
    import effc.codegen
    import effc.ir
    import effc.passes
    roots = {Path(p).resolve() for m in (effc, effc.ir, effc.passes, effc.codegen, effc.backends)
             for p in m.__path__}
    files = sorted({f.resolve() for r in roots for f in r.rglob("*.py")})
    h = hashlib.sha256(f"{getattr(effc, '__version__', '')}\0{sys.version}\0".encode())
    for f in files:
        rel = next((str(f.relative_to(r.parent)) for r in sorted(roots) if f.is_relative_to(r)), f.name)
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def touch(entry: Path) -> None:
    """Mark ``entry`` as just used (its stamp's time), for ``prune``."""
    try:
        os.utime(entry / "stamp.json")
    except OSError:
        pass


def prune(root: Path, limit: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used entries under ``root`` (by their stamp's time) until
    their files add up to at most ``limit`` bytes; ``keep`` is never removed. The removed."""
    entries = []
    for entry in root.iterdir():
        stamp = entry / "stamp.json"
        if entry.name.startswith(".") or not entry.is_dir() or not stamp.exists():
            continue
        try:
            size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
            entries.append((stamp.stat().st_mtime, size, entry))
        except OSError:
            continue      # removed meanwhile by another process
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, entry in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if keep is not None and entry == keep:
            continue
        discard(entry, root)
        removed.append(entry)
        total -= size
    return removed
