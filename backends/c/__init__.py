"""The C backend: generated kernels (codegen/c.py) compiled by the system C compiler, cached by
content and loaded in process with ctypes ([Note: C build cache] in build.py); whole compiled
programs, packed weights included, cached by model ([Note: C program cache] in
program_cache.py)."""

from .build import CompileError, LoadedLibrary, build, compiler_available

__all__ = ["CompileError", "LoadedLibrary", "build", "compiler_available"]
