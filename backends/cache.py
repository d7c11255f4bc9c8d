"""What the C and Triton backends' build caches share: the cache folder, content keys and the
stamp that tells a whole entry from a truncated or corrupt one ([Note: C build cache],
[Note: Triton build cache])."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


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
