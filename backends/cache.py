"""What the C and Triton backends' build caches share: the cache folder, content keys and the
stamp that tells a whole entry from a truncated or corrupt one ([Note: C build cache],
[Note: Triton build cache])."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


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
