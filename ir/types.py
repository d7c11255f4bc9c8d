"""Tensor types: an element type and a shape whose dimensions are ints or sympy expressions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Union

import sympy

from .dtypes import DType

Dim = Union[int, sympy.Expr]


def size_symbol(name: str) -> sympy.Symbol:
    """The one way to make a size symbol, so that symbols of the same name are equal."""
    return sympy.Symbol(name, integer=True, positive=True)


class ShapeError(ValueError):
    """A shape rule rejected its operands (raised while building or verifying a node)."""


def as_dim(d: object) -> Dim:
    """Normalise a dimension: python/sympy integers become int, other expressions stay sympy."""
    if isinstance(d, bool):
        raise ShapeError(f"a dimension cannot be a bool ({d!r})")
    if isinstance(d, int):
        return d
    if isinstance(d, sympy.Basic):
        e = sympy.sympify(d)
        if e.is_Integer:
            return int(e)
        if e.is_number:
            raise ShapeError(f"dimension {e} is not an integer")
        return e
    raise ShapeError(f"not a dimension: {d!r}")


def dims_equal(a: Dim, b: Dim) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if a == b:
        return True
    diff = sympy.expand(sympy.sympify(a) - sympy.sympify(b))
    if diff == 0:
        return True
    if diff.is_number:
        return False
    # floor/Mod terms need the full simplifier; it is slow, so it comes last
    return sympy.simplify(diff) == 0


def dim_str(d: Dim) -> str:
    return str(d) if isinstance(d, int) else sympy.sstr(d, order="lex").replace(" ", "")


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(as_dim(d) for d in self.shape))
        for d in self.shape:
            if isinstance(d, int) and d < 0:
                raise ShapeError(f"negative dimension {d} in {self}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def symbols(self) -> set[sympy.Symbol]:
        out: set[sympy.Symbol] = set()
        for d in self.shape:
            if not isinstance(d, int):
                out |= d.free_symbols  # type: ignore[arg-type]
        return out

    def numel(self) -> Dim:
        return as_dim(sympy.Mul(*self.shape)) if not self.is_static else math.prod(self.shape)  # type: ignore[arg-type]

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(dtype, self.shape)

    def with_shape(self, shape: Iterable[Dim]) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(dim_str(d) for d in self.shape)}]"

    def same_as(self, other: "TensorType") -> bool:
        """Equality that treats equivalent symbolic expressions as equal."""
        return (self.dtype == other.dtype and self.rank == other.rank
                and all(dims_equal(a, b) for a, b in zip(self.shape, other.shape)))


def broadcast_shapes(*shapes: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """Numpy broadcasting. A symbolic dimension broadcasts against 1 or an equal expression."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        cur: Dim = 1
        for s in shapes:
            j = i - (rank - len(s))
            if j < 0:
                continue
            d = s[j]
            if isinstance(d, int) and d == 1:
                continue
            if isinstance(cur, int) and cur == 1:
                cur = d
            elif not dims_equal(cur, d):
                raise ShapeError(f"shapes {', '.join(map(_shape_str, shapes))} do not broadcast")
        out.append(cur)
    return tuple(out)


def _shape_str(shape: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(dim_str(d) for d in shape) + "]"


def normalize_axis(axis: int, rank: int) -> int:
    """Map a possibly negative axis into [0, rank); rank-0 tensors accept axis 0 and -1."""
    r = max(rank, 1)
    if not -r <= axis < r:
        raise ShapeError(f"axis {axis} out of range for rank {rank}")
    return axis % r
