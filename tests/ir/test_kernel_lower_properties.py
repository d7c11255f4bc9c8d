"""Property: a random pointwise, view, reduction or matmul body, lowered to kernel IR and run
by ``run_kernel``, equals the reference backend running the body, at symbolic sizes too.

Trivial reshapes (inserting or removing size-1 dims) appear among the views, on reduction
results, and in matmul epilogues, whose outputs then have the domain's shape up to size-1 dims.
"""

from __future__ import annotations

from typing import Any, Callable

import sympy
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from effc.backends.reference.program import ReferenceProgram
from effc.ir import DType, Graph, GraphBuilder, Op, TensorType, Value, size_symbol
from effc.ir.kernel import format_kernel
from effc.ir.kernel_interp import run_kernel
from effc.ir.kernel_lower import lower
from effc.ir.kernel_node import add_kernel
from effc.ir.types import Dim

from tests.strategies import examples

S0 = size_symbol("s0")
END = 2**63 - 1
UNARY = [Op.NEG, Op.ABS, Op.RELU, Op.SIN, Op.TANH, Op.SIGMOID, Op.SILU]
BINARY = [Op.ADD, Op.SUB, Op.MUL, Op.MAXIMUM]
Draw = Callable[[st.SearchStrategy[Any]], Any]


class Body:
    """A body under construction: a current value that each step transforms."""

    def __init__(self, draw: Draw, shape: list[Dim]) -> None:
        self.draw, self.b = draw, GraphBuilder()
        self.cur = self.input(shape)
        self.pool = [self.cur]

    def input(self, shape: list[Dim], dtype: DType = DType.F32) -> Value:
        return self.b.input(f"a{len(self.b.inputs)}", TensorType(dtype, tuple(shape)))

    def static(self, pred: Callable[[int], bool]) -> list[int]:
        return [k for k, d in enumerate(self.cur.type.shape) if isinstance(d, int) and pred(d)]

    def trivial(self, v: Value) -> Value:
        """``v`` through a reshape that inserts or removes one size-1 dim."""
        shape = list(v.type.shape)
        ones = [k for k, d in enumerate(shape) if isinstance(d, int) and d == 1]
        if ones and len(shape) > 1 and (len(shape) >= 4 or self.draw(st.booleans())):
            del shape[self.draw(st.sampled_from(ones))]
        elif len(shape) < 4:
            shape.insert(self.draw(st.integers(0, len(shape))), 1)
        return self.b.op(Op.RESHAPE, [v], shape=tuple(shape))

    def view(self) -> None:
        draw, v = self.draw, self.cur
        shape, rank = list(v.type.shape), v.type.rank
        choice = draw(st.sampled_from(["permute", "unsqueeze", "squeeze", "expand", "merge", "split",
                                       "slice", "select", "trivial"]))
        if choice == "trivial":
            self.cur = self.trivial(v)
        elif choice == "permute" and rank > 1:
            dims = draw(st.permutations(range(rank)))
            self.cur = self.b.op(Op.PERMUTE, [v], dims=tuple(dims))
        elif choice == "unsqueeze" and rank < 4:
            self.cur = self.b.op(Op.UNSQUEEZE, [v], dim=draw(st.integers(-rank - 1, rank)))
        elif choice == "squeeze" and self.static(lambda d: d == 1) and rank > 1:
            self.cur = self.b.op(Op.SQUEEZE, [v], dims=(draw(st.sampled_from(self.static(lambda d: d == 1))),))
        elif choice == "expand" and self.static(lambda d: d == 1):
            k = draw(st.sampled_from(self.static(lambda d: d == 1)))
            self.cur = self.b.op(Op.EXPAND, [v], shape=tuple(3 if i == k else d for i, d in enumerate(shape)))
        elif choice == "merge" and rank > 1:
            k = draw(st.integers(0, rank - 2))
            new = shape[:k] + [shape[k] * shape[k + 1]] + shape[k + 2:]
            self.cur = self.b.op(Op.RESHAPE, [v], shape=tuple(new))
        elif choice == "split" and self.static(lambda d: d in (4, 6)) and rank < 4:
            k = draw(st.sampled_from(self.static(lambda d: d in (4, 6))))
            self.cur = self.b.op(Op.RESHAPE, [v], shape=tuple(shape[:k] + [2, shape[k] // 2] + shape[k + 1:]))
        elif choice == "slice" and self.static(lambda d: d >= 2):
            k = draw(st.sampled_from(self.static(lambda d: d >= 2)))
            start = draw(st.integers(-shape[k], shape[k] - 1))
            end = draw(st.sampled_from([END, shape[k], -1 if start < -1 or 0 <= start < shape[k] - 1 else END]))
            self.cur = self.b.op(Op.SLICE, [v], dim=k, start=start, end=end, step=draw(st.integers(1, 2)))
        elif choice == "select" and self.static(lambda d: d >= 2) and rank > 1:
            k = draw(st.sampled_from(self.static(lambda d: d >= 2)))
            self.cur = self.b.op(Op.SELECT, [v], dim=k, index=draw(st.integers(-shape[k], shape[k] - 1)))

    def pointwise(self) -> None:
        draw, v = self.draw, self.cur
        kind = draw(st.sampled_from(["unary", "binary", "where", "cast"]))
        if kind == "unary":
            self.cur = self.b.op(draw(st.sampled_from(UNARY)), [v])
        elif kind == "cast":
            self.cur = self.b.op(Op.CAST, [v], dtype=draw(st.sampled_from([DType.F64, DType.F32])))
        else:
            same = [p for p in self.pool if p.type.shape == v.type.shape and p is not v]
            if same and draw(st.booleans()):
                other = draw(st.sampled_from(same))
            else:  # a fresh input broadcast against the current value
                shape = [1 if draw(st.booleans()) else d for d in v.type.shape]
                other = self.input(shape[draw(st.integers(0, len(shape))):])
            if kind == "binary":
                self.cur = self.b.op(draw(st.sampled_from(BINARY)), [v, other])
            else:
                self.cur = self.b.op(Op.WHERE, [self.b.op(Op.GT, [v, other]), v, other])
        self.pool.append(self.cur)


def _reduction(body: Body, draw: Draw) -> list[Value]:
    b, v = body.b, body.cur
    rank = v.type.rank
    dims = tuple(sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1))))
    kind = draw(st.sampled_from(["sum", "amax", "amin", "mean", "var", "softmax", "log_softmax",
                                 "layer_norm", "rms_norm", "argmax"]))
    keep = draw(st.booleans())
    if kind in ("softmax", "log_softmax"):
        dims = (draw(st.integers(0, rank - 1)),)
        out = b.op(Op.SOFTMAX if kind == "softmax" else Op.LOG_SOFTMAX, [v], dim=dims[0])
    elif kind in ("layer_norm", "rms_norm"):
        k = draw(st.integers(1, rank))
        dims, ns = tuple(range(rank - k, rank)), v.type.shape[rank - k:]
        w = body.input(list(ns), v.type.dtype)  # the reference's torch norms refuse mixed dtypes
        if kind == "layer_norm":
            out = b.op(Op.LAYER_NORM, [v, w], normalized_shape=ns, eps=1e-5, has_weight=True, has_bias=False)
        else:
            out = b.op(Op.RMS_NORM, [v, w], normalized_shape=ns, eps=None, has_weight=True)
    elif kind == "argmax":  # on an input only: random values have no ties
        v = b.inputs[0]
        dim = draw(st.one_of(st.none(), st.integers(0, v.type.rank - 1)))
        dims = tuple(range(v.type.rank)) if dim is None else (dim,)
        return [b.op(Op.ARGMAX, [v], dim=dim, keepdim=keep)]
    elif kind == "var":
        out = b.op(Op.VAR, [v], dims=dims, correction=draw(st.integers(0, 1)), keepdim=keep)
    elif kind == "sum":
        out = b.op(Op.SUM, [v], dims=dims, keepdim=keep, dtype=None)
    else:
        out = b.op(Op[kind.upper()], [v], dims=dims, keepdim=keep)
    if draw(st.booleans()):  # the result through trivial reshapes, then maybe pointwise math
        body.cur = out
        for _ in range(draw(st.integers(1, 2))):
            body.cur = body.trivial(body.cur)
        if draw(st.booleans()):
            body.pointwise()
        out = body.cur
    outs = [out]
    if draw(st.booleans()):  # a second reduction over the same domain, and its broadcast use
        s = b.op(Op.SUM, [v], dims=dims, keepdim=True, dtype=None)
        outs += [s, b.op(Op.MUL, [v, s])]
    return outs


@st.composite
def bodies(draw: Draw, kind: str) -> tuple[Graph, dict[sympy.Symbol, int]]:
    symbolic = draw(st.booleans())
    shape: list[Dim] = [draw(st.sampled_from([1, 2, 3, 4, 6])) for _ in range(draw(st.integers(1, 3)))]
    if symbolic:
        shape[0] = S0
    body = Body(draw, shape)
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            body.view()
        else:
            body.pointwise()
    if kind == "reduction":
        outs = _reduction(body, draw)
    else:
        same = [p for p in body.pool if p.type.shape == body.cur.type.shape and p is not body.cur]
        outs = [body.cur] + draw(st.lists(st.sampled_from(same), max_size=1) if same else st.just([]))
    env = {S0: draw(st.integers(1, 4))} if symbolic else {}
    return body.b.build(outs), env


@st.composite
def matmul_bodies(draw: Draw) -> tuple[Graph, dict[sympy.Symbol, int]]:
    """A matmul or addmm and an epilogue of pointwise steps and trivial reshapes; besides the
    last value, an earlier one of the epilogue may be an output too."""
    symbolic = draw(st.booleans())
    m: Dim = S0 if symbolic else draw(st.sampled_from([1, 2, 3]))
    k, n = draw(st.sampled_from([1, 2, 5])), draw(st.sampled_from([1, 3, 4]))
    body = Body(draw, [m, k])
    w = body.input([k, n])
    if draw(st.booleans()):
        body.cur = body.b.op(Op.MATMUL, [body.cur, w])
    else:
        beta, alpha = draw(st.sampled_from([0, 1, 0.5])), draw(st.sampled_from([1, 2]))
        body.cur = body.b.op(Op.ADDMM, [body.input([n]), body.cur, w], beta=beta, alpha=alpha)
    body.pool = [body.cur]
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            body.cur = body.trivial(body.cur)
            body.pool.append(body.cur)
        else:
            body.pointwise()
    earlier = [p for p in body.pool if p is not body.cur]
    outs = [body.cur] + draw(st.lists(st.sampled_from(earlier), max_size=1) if earlier else st.just([]))
    env = {S0: draw(st.integers(1, 4))} if symbolic else {}
    return body.b.build(outs), env


def _check(graph: Graph, env: dict[sympy.Symbol, int], kind: str) -> None:
    outer = GraphBuilder()
    node = add_kernel(outer, kind, "k", [outer.input(f"x{i}", v.type) for i, v in enumerate(graph.inputs)], graph)
    note(str(graph))
    kernel = lower(node)
    note(format_kernel(kernel))
    gen = torch.Generator().manual_seed(0)
    xs = []
    for v in graph.inputs:
        shape = [d if isinstance(d, int) else int(d.subs(env)) for d in v.type.shape]
        xs.append(torch.rand(shape, generator=gen, dtype=v.type.dtype.to_torch()) * 4 - 2)
    want = ReferenceProgram(graph)(*xs)
    got = run_kernel(kernel, xs, env)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4, equal_nan=True)


@examples(40)
@given(case=bodies("pointwise"))
def test_pointwise_and_view_bodies_lower_to_kernels_that_agree_with_the_reference(case):
    _check(*case, "pointwise")


@examples(40)
@given(case=bodies("reduction"))
def test_reduction_bodies_lower_to_kernels_that_agree_with_the_reference(case):
    _check(*case, "reduction")


@examples(40)
@given(case=matmul_bodies())
def test_matmul_bodies_with_trivial_reshapes_lower_to_kernels_that_agree_with_the_reference(case):
    _check(*case, "matmul")
