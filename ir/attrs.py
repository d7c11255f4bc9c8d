"""Attribute values a node may carry, and their normal form.

Allowed: None, bool, int, float, str, DType, sympy expressions (symbolic sizes), tuples of
allowed values, dicts from str to allowed values, and two markers used by ``extern`` nodes:
``InputRef(i)`` (the node's i-th tensor input goes here) and ``TorchObj(name)`` (a torch
singleton such as ``torch.contiguous_format``, named rather than held). A ``kernel`` node's
``body`` attribute is a ``Graph`` (its fused subgraph), held as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import sympy

from .dtypes import DType


@dataclass(frozen=True)
class InputRef:
    index: int


@dataclass(frozen=True)
class TorchObj:
    name: str  # e.g. "torch.contiguous_format", resolved with getattr(torch, ...)


def normalize(value: Any) -> Any:
    """Return ``value`` in normal form (lists become tuples, sympy integers become int)."""
    from .graph import Graph  # graph.py imports this module
    if value is None or isinstance(value, (bool, str, DType, InputRef, TorchObj, Graph)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple)):
        return tuple(normalize(v) for v in value)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"attribute dict keys must be strings: {value!r}")
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, sympy.Basic):
        e = sympy.sympify(value)
        if e.is_Integer:
            return int(e)
        if e.is_Float or e.is_Rational:
            return float(e)
        if e.is_Boolean and e in (sympy.true, sympy.false):
            return bool(e)
        return e
    raise TypeError(f"{type(value).__name__} is not an attribute value: {value!r}")


def freeze(value: Any) -> Any:
    """A hashable key for an attribute value (for CSE and caches). Floats compare by bits."""
    if isinstance(value, tuple):
        return ("t",) + tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return ("d",) + tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, float):
        return ("f", "nan" if math.isnan(value) else value.hex())
    if isinstance(value, bool):
        return ("b", value)
    if type(value).__name__ == "Graph":
        return ("g", id(value))  # bodies are compared by identity
    return value


def symbols_in(value: Any) -> set[sympy.Symbol]:
    if isinstance(value, sympy.Basic):
        return set(value.free_symbols)  # type: ignore[arg-type]
    if isinstance(value, tuple):
        return set().union(*(symbols_in(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(symbols_in(v) for v in value.values())) if value else set()
    return set()
