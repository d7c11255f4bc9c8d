"""The reference backend: effc IR executed with torch ops (the oracle and the fallback)."""

from .program import ReferenceProgram

__all__ = ["ReferenceProgram"]
