"""The loop-level kernel IR: what a fused group lowers to, and all a code generator reads.

    kernel k0 pointwise(a0: f32[s0, 64], a1: f32[64]) -> (out0: f32[s0, 64])
      domain i0 < s0, i1 < 64
      %t0 = load a0[64*i0 + i1] : f32
      %t1 = load a1[i1] : f32
      %t2 = add(%t0, %t1) : f32
      %t3 = gelu(%t2) {approximate="none"} : f32
      store out0[64*i0 + i1] = %t3

A kernel runs its body once per point of its ``domain`` (axes ``i0, i1, ..``). Buffers are
contiguous and row-major, so every index is one flat element offset, a sympy expression of the
axes and the size symbols in which views and broadcasts are already folded.

[Note: kernel loops]
A reduction kernel also has ``reduce`` axes (``r0, ..``). Its body holds top-level statements,
run once per domain point, and ``Loop`` blocks, each one loop over every reduce point. A
``Reduce`` statement sits in a loop and folds its value over that loop; its result is visible
after the loop (at top level and in later loops); any other temporary defined in a loop is
local to it. Softmax is three loops: a max, a sum of exp(x - max), and one that stores
exp(x - max) / sum; a C generator emits three nested ``for`` loops over R, a Triton generator
three passes over R in blocks (or one block when R fits). Top-level statements between loops
compute what depends only on the outer index (``rstd = rsqrt(var + eps)``).

[Note: kernel templates]
A matmul or convolution kernel carries a ``Template``: the accumulator ``acc`` is
``sum over the reduce axes of operand0[index0] * operand1[index1]`` (an operand element whose
``mask`` is false reads as zero: convolution padding), computed at every domain point. The body
is the epilogue: top-level statements that read ``acc`` as a temporary (bias, activation,
residual) and store the results. ``Template(op="node")`` stands for a node no generator lowers
(pooling, gather, attention, extern): the generator calls a library routine for ``node`` with
the kernel's input buffers and writes its output buffers; such a kernel has no body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import sympy

from .dtypes import DType
from .graph import Node
from .printer import format_attr
from .types import Dim, dim_str

Attrs = tuple[tuple[str, Any], ...]  # (name, value) pairs: hashable, in a fixed order


class LoweringError(Exception):
    """A kernel node the kernel IR cannot express (raised by kernel_lower.lower); ``reason``
    says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def axis_symbol(name: str) -> sympy.Symbol:
    """The symbol of a loop axis (``i0``, ``r0``); distinct from size symbols, which are positive."""
    return sympy.Symbol(name, integer=True, nonnegative=True)


@dataclass(frozen=True)
class Axis:
    name: str
    size: Dim

    @property
    def symbol(self) -> sympy.Symbol:
        return axis_symbol(self.name)


@dataclass(frozen=True)
class Buffer:
    name: str
    dtype: DType
    shape: tuple[Dim, ...]
    role: str  # "in" or "out"


@dataclass(frozen=True)
class Load:
    dst: str
    buffer: str
    index: sympy.Expr
    dtype: DType


@dataclass(frozen=True)
class Const:
    dst: str
    value: bool | int | float
    dtype: DType


@dataclass(frozen=True)
class IndexValue:
    """An index expression used as a value (arange, or a fill value that is a size)."""
    dst: str
    expr: sympy.Expr
    dtype: DType


@dataclass(frozen=True)
class Compute:
    """Scalar math: ``op`` is an IR op name of the pointwise families (``add``, ``exp``,
    ``where``, ``cast``, ``gelu``..) with that op's attributes, applied to operands that are
    already of the op's computation dtype (lowering inserts the casts)."""
    dst: str
    op: str
    args: tuple[str, ...]
    attrs: Attrs
    dtype: DType


@dataclass(frozen=True)
class Reduce:
    """Folds ``value`` over the enclosing loop; ``op`` is sum, prod, max, min, any, all,
    argmax or argmin (the row-major linear position within the reduce axes)."""
    dst: str
    op: str
    value: str
    dtype: DType


@dataclass(frozen=True)
class Store:
    buffer: str
    index: sympy.Expr
    value: str


Stmt = Union[Load, Const, IndexValue, Compute, Reduce, Store]


@dataclass(frozen=True)
class Loop:
    """One loop over all the kernel's reduce axes [Note: kernel loops]."""
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Operand:
    buffer: str
    index: sympy.Expr               # over the domain and reduce axes
    mask: sympy.Basic | None = None  # where false, the element reads as zero


@dataclass(frozen=True)
class Template:
    """See [Note: kernel templates]. ``attrs`` records what a generator picks a routine by:
    for matmul the operands' strides along the m, n and k axes and the batch axes; for conv
    stride, padding, dilation and groups."""
    op: str  # "matmul", "conv" or "node"
    operands: tuple[Operand, ...]
    attrs: Attrs
    dtype: DType
    acc: str = "acc"
    node: Node | None = None


@dataclass(frozen=True)
class Kernel:
    name: str
    kind: str
    buffers: tuple[Buffer, ...]
    domain: tuple[Axis, ...]
    reduce: tuple[Axis, ...]
    body: tuple[Stmt | Loop, ...]
    template: Template | None = None

    @property
    def inputs(self) -> tuple[Buffer, ...]:
        return tuple(b for b in self.buffers if b.role == "in")

    @property
    def outputs(self) -> tuple[Buffer, ...]:
        return tuple(b for b in self.buffers if b.role == "out")

    def buffer(self, name: str) -> Buffer:
        return next(b for b in self.buffers if b.name == name)

    def statements(self) -> list[Stmt]:
        """Every statement, loops flattened, in order."""
        out: list[Stmt] = []
        for s in self.body:
            out.extend(s.body if isinstance(s, Loop) else (s,))
        return out

    def __str__(self) -> str:
        return format_kernel(self)


# -- text ---------------------------------------------------------------------------------------

def format_expr(e: sympy.Basic) -> str:
    return str(e)


def _attrs(attrs: Attrs) -> str:
    return " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in attrs) + "}" if attrs else ""


def format_stmt(s: Stmt) -> str:
    if isinstance(s, Load):
        return f"%{s.dst} = load {s.buffer}[{format_expr(s.index)}] : {s.dtype}"
    if isinstance(s, Const):
        return f"%{s.dst} = const {format_attr(s.value)} : {s.dtype}"
    if isinstance(s, IndexValue):
        return f"%{s.dst} = index {format_expr(s.expr)} : {s.dtype}"
    if isinstance(s, Compute):
        args = ", ".join("%" + a for a in s.args)
        return f"%{s.dst} = {s.op}({args}){_attrs(s.attrs)} : {s.dtype}"
    if isinstance(s, Reduce):
        return f"%{s.dst} = reduce {s.op}(%{s.value}) : {s.dtype}"
    return f"store {s.buffer}[{format_expr(s.index)}] = %{s.value}"


def _operand(o: Operand) -> str:
    mask = f" if {format_expr(o.mask)}" if o.mask is not None else ""
    return f"{o.buffer}[{format_expr(o.index)}]{mask}"


def _axes(axes: tuple[Axis, ...]) -> str:
    return ", ".join(f"{a.name} < {dim_str(a.size)}" for a in axes)


def format_kernel(k: Kernel) -> str:
    """Stable text, one statement per line: the dump format and the golden format of tests."""
    def bufs(role: str) -> str:
        return ", ".join(f"{b.name}: {b.dtype}[{', '.join(dim_str(d) for d in b.shape)}]"
                         for b in k.buffers if b.role == role)
    lines = [f"kernel {k.name} {k.kind}({bufs('in')}) -> ({bufs('out')})"]
    if k.domain:
        lines.append(f"  domain {_axes(k.domain)}")
    if k.reduce:
        lines.append(f"  reduce {_axes(k.reduce)}")
    t = k.template
    if t is not None and t.op == "node":
        assert t.node is not None
        lines.append(f"  call {t.node.op}{_attrs(tuple((n, v) for n, v in t.node.attrs.items() if n != 'body'))}")
    elif t is not None:
        ops = " * ".join(_operand(o) for o in t.operands)
        lines.append(f"  %{t.acc} = {t.op} sum({ops}){_attrs(t.attrs)} : {t.dtype}")
    loop = " ".join(["loop"] + [a.name for a in k.reduce])
    for s in k.body:
        if isinstance(s, Loop):
            lines.append(f"  {loop} {{")
            lines.extend("    " + format_stmt(x) for x in s.body)
            lines.append("  }")
        else:
            lines.append("  " + format_stmt(s))
    return "\n".join(lines) + "\n"
