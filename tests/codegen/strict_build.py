"""Compiling generated C for the template tests with warnings as errors (stricter than the
backend's build, so that sloppy generated code fails a test rather than passing unnoticed)."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

FLAGS = ["-O2", "-march=native", "-fopenmp", "-shared", "-fPIC", "-Wall", "-Werror",
         "-Wno-unused-variable", "-Wno-unused-function"]


def build_strict(source: str, tmp: Path) -> ctypes.CDLL:
    (tmp / "t.c").write_text(source)
    subprocess.run(["cc", *FLAGS, "-o", str(tmp / "t.so"), str(tmp / "t.c")], check=True)
    return ctypes.CDLL(str(tmp / "t.so"))
