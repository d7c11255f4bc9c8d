"""The C backend: generated kernels (codegen/c.py) compiled by the system C compiler, cached by
content and loaded in process with ctypes ([Note: C build cache] in build.py)."""

from .build import CompileError, LoadedLibrary, build, compiler_available

__all__ = ["CompileError", "LoadedLibrary", "build", "compiler_available"]
