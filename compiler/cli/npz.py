"""Reading and writing .npz files of named arrays, without pickle.

Keys are the model's own input and output names, which may hold any character: they are zip
member names inside the .npz (as numpy itself writes them), never names of files on disk.
``numpy.savez`` cannot take keys such as ``file``, so the writer builds the zip itself.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from effc.errors import UserError


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.exists():
        raise UserError(f"no such file: {p}")
    if p.is_dir():
        raise UserError(f"{p} is a folder, expected an .npz file")
    if not zipfile.is_zipfile(p):
        raise UserError(f"{p} is not an .npz file (not a zip archive)")
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(p, allow_pickle=False) as z:
            for name in z.files:
                out[name] = z[name]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise UserError(f"{p}: cannot read the arrays: {' '.join(str(e).split())}") from None
    return out


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (a temporary sibling, renamed at the end)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p} is a folder, expected an .npz file name")
    if not p.parent.is_dir():
        raise UserError(f"cannot write {p}: folder {p.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            for name, a in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(a), allow_pickle=False)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
