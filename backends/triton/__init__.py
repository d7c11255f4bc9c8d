"""The Triton backend: generated kernels (codegen/triton.py) loaded from a content-hash cache
([Note: Triton build cache] in build.py) and run over the memory plan's arena by
``TritonProgram`` (program.py), on CUDA or, with TRITON_INTERPRET=1, on the CPU."""

from .build import LoadedKernel, load

__all__ = ["LoadedKernel", "interpreter_mismatch", "load", "triton_available"]


def triton_available() -> bool:
    """Whether triton imports here."""
    try:
        import triton  # noqa: F401
        return True
    except ImportError:
        return False


def interpreter_mismatch() -> str | None:
    """Why generated kernels cannot run in this process's TRITON_INTERPRET mode, or None.
    triton.language's own jit helpers (``tl.cdiv``..) take the mode of the moment triton was
    imported, so setting the variable afterwards breaks every kernel that calls them."""
    import os

    import triton.language as tl
    interpreted = type(tl.cdiv).__name__ == "InterpretedFunction"
    if (os.environ.get("TRITON_INTERPRET") == "1") != interpreted:
        now = "set" if os.environ.get("TRITON_INTERPRET") == "1" else "unset"
        return (f"TRITON_INTERPRET is {now} now but was not when triton was imported; "
                "set it before anything imports triton")
    return None
