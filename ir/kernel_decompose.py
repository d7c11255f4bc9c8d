"""Composite reductions spelt out as primitive reductions and pointwise math, before lowering.

    %0 = softmax(%x) {dim=-1} : f32[s0, 64]
becomes
    %0 = amax(%x) {dims=[-1], keepdim=true} : f32[s0, 1]
    %1 = sub(%x, %0) : f32[s0, 64]
    %2 = exp(%1) : f32[s0, 64]
    %3 = sum(%2) {dims=[-1], keepdim=true, dtype=none} : f32[s0, 1]
    %4 = div(%2, %3) {rounding_mode=none} : f32[s0, 64]

Kernel lowering (kernel_lower.py) then knows only sum/amax/amin/prod/any/all/argmax/argmin
as reductions: each becomes one ``Reduce`` statement, and the order in which they depend on
each other decides the kernel's loops (softmax: max first, then the sum). Doing this on the
graph rather than while emitting statements keeps it checkable: the decomposed body runs on
the reference backend and must agree with the original. Batch norm (inference) is spelt out
too, so that it reaches the lowering as plain broadcast arithmetic.
"""

from __future__ import annotations

from typing import Callable, Sequence

import sympy
import torch

from .graph import Graph, GraphBuilder, Node, Value
from .rewrite import Rewriter
from .ops import Op
from .types import normalize_axis

Rule = Callable[[GraphBuilder, Node, Sequence[Value]], Value]


def decompose(graph: Graph) -> Graph:
    """``graph`` with every composite reduction and batch norm replaced by its definition."""
    rw = Rewriter(graph)
    for node in graph.nodes:
        rule = RULES.get(node.op)
        if rule is None:
            rw.copy(node)
        else:
            rw.replace(node.output, rule(rw.b, node, rw.map(node.inputs)))
    return rw.finish()


def _axes(x: Value, dims: Sequence[int] | None) -> list[int]:
    rank = x.type.rank
    return sorted({normalize_axis(d, rank) for d in dims}) if dims else list(range(rank))


def _count(b: GraphBuilder, x: Value, axes: Sequence[int], minus: float = 0) -> Value:
    """The number of elements reduced (less ``minus``), as a scalar of x's dtype; a size
    expression when the reduced axes are symbolic."""
    minus = int(minus) if float(minus).is_integer() else minus
    n = sympy.Mul(*(sympy.sympify(x.type.shape[a]) for a in axes)) - sympy.sympify(minus)
    if n.is_number:
        return b.scalar(int(n) if n.is_integer else float(n), x.type.dtype)
    return b.op(Op.FULL, [], shape=(), value=n, dtype=x.type.dtype)


def _sum(b: GraphBuilder, x: Value, axes: Sequence[int], keepdim: bool = True) -> Value:
    return b.op(Op.SUM, [x], dims=tuple(axes), keepdim=keepdim, dtype=None)


def _div(b: GraphBuilder, x: Value, y: Value) -> Value:
    return b.op(Op.DIV, [x, y], rounding_mode=None)


def _mean(b: GraphBuilder, x: Value, axes: Sequence[int], keepdim: bool = True) -> Value:
    return _div(b, _sum(b, x, axes, keepdim), _count(b, x, axes))


def _centred_square_sum(b: GraphBuilder, x: Value, axes: Sequence[int], keepdim: bool) -> tuple[Value, Value]:
    """(x - mean(x), sum((x - mean(x))^2)): the two-pass variance, stable where E[x^2] - E[x]^2 is not."""
    d = b.op(Op.SUB, [x, _mean(b, x, axes)])
    return d, _sum(b, b.op(Op.MUL, [d, d]), axes, keepdim)


def _var(b: GraphBuilder, node: Node, ins: Sequence[Value]) -> Value:
    x = ins[0]
    axes = _axes(x, node.attrs["dims"])
    _, ss = _centred_square_sum(b, x, axes, node.attrs["keepdim"])
    c = node.attrs["correction"]
    var = _div(b, ss, _count(b, x, axes, 1 if c is None else c))
    return b.op(Op.SQRT, [var]) if node.op is Op.STD else var


def _softmax(b: GraphBuilder, node: Node, ins: Sequence[Value]) -> Value:
    x = ins[0]
    axes = [normalize_axis(node.attrs["dim"], x.type.rank)] if x.type.rank else []
    shifted = b.op(Op.SUB, [x, b.op(Op.AMAX, [x], dims=tuple(axes), keepdim=True)])
    e = b.op(Op.EXP, [shifted])
    s = _sum(b, e, axes)
    if node.op is Op.SOFTMAX:
        return _div(b, e, s)
    return b.op(Op.SUB, [shifted, b.op(Op.LOG, [s])])


def _rsqrt_eps(b: GraphBuilder, v: Value, eps: float) -> Value:
    return b.op(Op.RSQRT, [b.op(Op.ADD, [v, b.scalar(eps, v.type.dtype)])])


def _layer_norm(b: GraphBuilder, node: Node, ins: Sequence[Value]) -> Value:
    x = ins[0]
    axes = list(range(x.type.rank - len(node.attrs["normalized_shape"]), x.type.rank))
    d, ss = _centred_square_sum(b, x, axes, True)
    var = _div(b, ss, _count(b, x, axes))
    y = b.op(Op.MUL, [d, _rsqrt_eps(b, var, node.attrs["eps"])])
    rest = list(ins[1:])
    if node.attrs["has_weight"]:
        y = b.op(Op.MUL, [y, rest.pop(0)])
    if node.attrs["has_bias"]:
        y = b.op(Op.ADD, [y, rest.pop(0)])
    return y


def _rms_norm(b: GraphBuilder, node: Node, ins: Sequence[Value]) -> Value:
    x = ins[0]
    axes = list(range(x.type.rank - len(node.attrs["normalized_shape"]), x.type.rank))
    eps = node.attrs["eps"]
    if eps is None:
        eps = torch.finfo(x.type.dtype.to_torch()).eps
    ms = _mean(b, b.op(Op.MUL, [x, x]), axes)
    y = b.op(Op.MUL, [x, _rsqrt_eps(b, ms, eps)])
    return b.op(Op.MUL, [y, ins[1]]) if node.attrs["has_weight"] else y


def _batch_norm(b: GraphBuilder, node: Node, ins: Sequence[Value]) -> Value:
    """(x - mean) / sqrt(var + eps) * weight + bias, per channel (axis 1)."""
    x = ins[0]
    rank = x.type.rank

    def per_channel(v: Value) -> Value:
        if rank <= 2:
            return v
        return b.op(Op.RESHAPE, [v], shape=(v.type.shape[0],) + (1,) * (rank - 2))
    mean, var = per_channel(ins[1]), per_channel(ins[2])
    std = b.op(Op.SQRT, [b.op(Op.ADD, [var, b.scalar(node.attrs["eps"], var.type.dtype)])])
    y = _div(b, b.op(Op.SUB, [x, mean]), std)
    rest = list(ins[3:])
    if node.attrs["has_weight"]:
        y = b.op(Op.MUL, [y, per_channel(rest.pop(0))])
    if node.attrs["has_bias"]:
        y = b.op(Op.ADD, [y, per_channel(rest.pop(0))])
    return y


def _mean_rule(b: GraphBuilder, node: Node, ins: Sequence[Value]) -> Value:
    return _mean(b, ins[0], _axes(ins[0], node.attrs["dims"]), node.attrs["keepdim"])


RULES: dict[Op, Rule] = {
    Op.MEAN: _mean_rule, Op.VAR: _var, Op.STD: _var, Op.SOFTMAX: _softmax,
    Op.LOG_SOFTMAX: _softmax, Op.LAYER_NORM: _layer_norm, Op.RMS_NORM: _rms_norm,
    Op.BATCH_NORM: _batch_norm,
}

# Reductions the lowering turns into one Reduce statement each, and that statement's op.
PRIMITIVE_REDUCTIONS: dict[Op, str] = {
    Op.SUM: "sum", Op.PROD: "prod", Op.AMAX: "max", Op.AMIN: "min", Op.ANY: "any",
    Op.ALL: "all", Op.ARGMAX: "argmax", Op.ARGMIN: "argmin",
}
