"""Memory planning: reuse, in-place updates, views, symbolic offsets, and the no-overlap property
checked directly on the evaluated plan."""

from __future__ import annotations

import itertools

import pytest
import sympy
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from effc.ir import DType, Graph, GraphBuilder, Op, TensorType, size_symbol
from effc.ir.kernel_node import add_kernel, extract_body
from effc.options import Options
from effc.passes import plan_memory
from effc.passes.arena import Item, first_fit, greedy_by_size, symbolic_offsets
from effc.passes.plan_memory import ALIGN, MemoryPlan, overlapping, plan

from tests.strategies import examples, graphs, sizes
from .golden import parse

s0, s1 = size_symbol("s0"), size_symbol("s1")
F32 = DType.F32


def _check(p: MemoryPlan, env: dict) -> None:
    """The plan's invariants at ``env``: no live pair overlaps, aligned, within the arena."""
    assert overlapping(p, env) == []
    ev = p.evaluate(env)
    for off, size in zip(ev["offsets"], p.sizes(env)):
        assert off % ALIGN == 0 and size % ALIGN == 0
        assert off + size <= ev["arena"]
    assert p.lower_bound(env) <= ev["arena"] <= p.naive_bytes(env)
    assert int(p.arena.subs(env)) == ev["arena"], "the formula and the lambdified function agree"
    assert [int(sympy.sympify(b.offset).subs(env)) for b in p.buffers] == ev["offsets"]


def test_chain_reuses_buffers() -> None:
    g = parse("""
    graph(%x: f32[16, 16]) {
      %0 = constant() {name="w"} : f32[16, 16]
      %1 = matmul(%x, %0) : f32[16, 16]
      %2 = matmul(%1, %0) : f32[16, 16]
      %3 = matmul(%2, %0) : f32[16, 16]
      %4 = matmul(%3, %0) : f32[16, 16]
      return %4
    }""")
    p = plan(g, {})
    assert len(p.buffers) == 4 and p.naive_bytes({}) == 4 * 1024
    assert p.evaluate({})["arena"] == 2 * 1024 == p.lower_bound({})
    assert p.buffers[-1].end == len(g.nodes), "graph outputs live to the end"
    _check(p, {})


def test_relu_after_add_runs_in_place() -> None:
    g = parse("""
    graph(%x: f32[8, 4], %y: f32[8, 4]) {
      %0 = add(%x, %y) : f32[8, 4]
      %1 = relu(%0) : f32[8, 4]
      %2 = sum(%1) {dims=[1], keepdim=false, dtype=none} : f32[8]
      return %2
    }""")
    p = plan(g, {})
    first = p.buffers[0]
    assert first.value is g.nodes[0].output
    assert first.inplace == (g.nodes[1].output,)
    assert (first.start, first.end) == (0, 2)
    assert p.naive_bytes({}) == 128 + 128 + 64 and p.evaluate({})["arena"] == 128 + 64


@pytest.mark.parametrize("text, why", [
    ("""graph(%x: f32[8, 4], %y: f32[8, 4]) {
      %0 = add(%x, %y) : f32[8, 4]
      %1 = relu(%0) : f32[8, 4]
      %2 = add(%1, %0) : f32[8, 4]
      return %2
    }""", "the input is used later"),
    ("""graph(%x: f32[8, 4], %y: f32[8, 4]) {
      %0 = add(%x, %y) : f32[8, 4]
      %1 = relu(%0) : f32[8, 4]
      return %1, %0
    }""", "the input is a graph output"),
    ("""graph(%x: f32[8, 4]) {
      %0 = exp(%x) : f32[8, 4]
      %1 = relu(%x) : f32[8, 4]
      return %1, %0
    }""", "the input is a graph input"),
    ("""graph(%x: f32[8, 1], %y: f32[8, 4]) {
      %0 = exp(%x) : f32[8, 1]
      %1 = add(%0, %y) : f32[8, 4]
      return %1
    }""", "the input is broadcast"),
    ("""graph(%x: f32[8, 4]) {
      %0 = exp(%x) : f32[8, 4]
      %1 = sum(%0) {dims=[1], keepdim=true, dtype=none} : f32[8, 1]
      return %1
    }""", "not pointwise"),
    ("""graph(%x: f32[8, 4]) {
      %0 = exp(%x) : f32[8, 4]
      %1 = cast(%0) {dtype=f64} : f64[8, 4]
      return %1
    }""", "a different size"),
])
def test_no_in_place(text: str, why: str) -> None:
    g = parse(text)
    p = plan(g, {})
    second = g.nodes[1].output
    assert all(second not in b.inplace for b in p.buffers), why
    assert p.buffer_of(second).value is second


def test_views_share_their_input_storage() -> None:
    g = parse("""
    graph(%x: f32[8, 4]) {
      %0 = exp(%x) : f32[8, 4]
      %1 = reshape(%0) {shape=[32]} : f32[32]
      %2 = unsqueeze(%1) {dim=0} : f32[1, 32]
      %3 = sum(%2) {dims=[1], keepdim=false, dtype=none} : f32[1]
      %4 = reshape(%x) {shape=[32]} : f32[32]
      %5 = matmul(%4, %1) : f32[]
      return %3, %5
    }""")
    p = plan(g, {})
    exp = p.buffer_of(g.nodes[0].output)
    assert exp is not None and exp.views == (g.nodes[1].output, g.nodes[2].output)
    assert exp.end == 5, "the storage lives until its last view is last used"
    assert p.buffer_of(g.nodes[4].output) is None, "a view of a graph input is not in the arena"
    _check(p, {})


def _kernelized(permute: bool) -> Graph:
    """exp -> kernel(add(a0, a1) -> relu) over a dying intermediate; optionally permuted."""
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (4, 4)))
    y = b.input("y", TensorType(F32, (4, 4)))
    inner = GraphBuilder()
    a0 = inner.input("a0", TensorType(F32, (4, 4)))
    a1 = inner.input("a1", TensorType(F32, (4, 4)))
    t = inner.op(Op.PERMUTE, [a0], dims=(1, 0)) if permute else a0
    added = inner.node(Op.ADD, [t, a1], {})
    relu = inner.node(Op.RELU, [added.output], {})
    body, outer = extract_body(list(inner.nodes), [relu.output])
    e = b.op(Op.EXP, [x])
    k = add_kernel(b, "pointwise", "k0", [e, y], body)
    view = b.node(Op.KERNEL, [k.output], {"kind": "view", "name": "k1", "params": {},
                                         "body": _reshape_body()})
    return b.build([b.op(Op.NEG, [view.output])])


def _reshape_body() -> Graph:
    inner = GraphBuilder()
    a = inner.input("a0", TensorType(F32, (4, 4)))
    return inner.build([inner.op(Op.RESHAPE, [a], shape=(16,))])


@pytest.mark.parametrize("permute", [False, True])
def test_pointwise_kernel_in_place_unless_it_moves_elements(permute: bool) -> None:
    g = _kernelized(permute)
    p = plan(g, {})
    exp, kernel, view, neg = g.nodes
    buf = p.buffer_of(exp.output)
    assert buf is not None
    assert (kernel.output in buf.inplace) is not permute
    assert neg.output in p.buffer_of(kernel.output).inplace, "the view dies at neg" 
    owner = p.buffer_of(kernel.output)
    assert owner is not None and view.output in owner.views
    _check(p, {})


def _two_symbols() -> Graph:
    """Buffers sized by s0 and s1 independently, so their order at the hint is no guide."""
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (s0, 8)))
    y = b.input("y", TensorType(F32, (s1, 8)))
    w = b.constant(torch.randn(8, 8), "w")
    a = b.op(Op.MATMUL, [x, w])            # s0 x 8
    c = b.op(Op.MATMUL, [y, w])            # s1 x 8
    d = b.op(Op.MATMUL, [a, b.op(Op.PERMUTE, [c], dims=(1, 0))])   # s0 x s1
    e = b.op(Op.SUM, [d], dims=(1,), keepdim=True, dtype=None)   # s0 x 1
    f = b.op(Op.MUL, [a, e])
    h = b.op(Op.MATMUL, [b.op(Op.PERMUTE, [c], dims=(1, 0)), c])  # 8 x 8
    return b.build([f, h])


@pytest.mark.parametrize("hint", [{s0: 2, s1: 64}, {s0: 64, s1: 2}, {s0: 7, s1: 7}])
def test_symbolic_plan_holds_for_every_size(hint: dict) -> None:
    g = _two_symbols()
    p = plan(g, hint)
    assert p.arena.free_symbols == {s0, s1}
    for v0, v1 in itertools.product((1, 2, 3, 17, 64, 300), repeat=2):
        _check(p, {s0: v0, s1: v1})
    assert p.evaluate(hint)["arena"] == p.candidates[p.strategy]


def test_placement_at_the_hint_does_not_overlap() -> None:
    items = [Item(0, 2, 64), Item(1, 3, 128), Item(2, 2, 64), Item(3, 5, 256), Item(4, 5, 64)]
    for strategy in (greedy_by_size, first_fit):
        offs = strategy(items)
        for i, j in itertools.combinations(range(len(items)), 2):
            a, b = items[i], items[j]
            if a.start <= b.end and b.start <= a.end:
                assert offs[i] + a.size <= offs[j] or offs[j] + b.size <= offs[i]
        sym, _ = symbolic_offsets(items, offs, [sympy.Integer(it.size) for it in items])
        assert all(int(s) <= o for s, o in zip(sym, offs)), "the formula only compacts"


def test_run_reports_without_changing_the_graph() -> None:
    g = _two_symbols()
    res = plan_memory.run(g, Options(size_hints={"s0": 32, "s1": 16}))
    assert res.graph is g and not res.modified
    assert "naive" in res.notes[0] and "lower bound" in res.notes[0] and "s0=32" in res.notes[0]
    assert res.notes[1].startswith("arena = ")


def test_summary_compares_with_eager() -> None:
    p = plan(_two_symbols(), {s0: 4, s1: 4})
    line = p.summary({s0: 4, s1: 4}, eager_bytes=4096)
    assert "eager PyTorch 4.0 KiB" in line


@examples(40)
@given(data=st.data(), case=graphs(max_nodes=12))
def test_live_buffers_never_overlap(data: st.DataObject, case) -> None:
    g = case.graph
    hint = data.draw(sizes(case), label="hint")
    p = plan(g, hint)
    note(str(p.summary()))
    assert p.candidates[p.strategy] == min(p.candidates.values())
    assert p.evaluate(hint)["arena"] == p.candidates[p.strategy]
    for _ in range(3):
        env = data.draw(sizes(case, avoid=hint), label="sizes")
        _check(p, env)
    # every intermediate is planned, unless it is a view of something outside the arena
    outside = set(g.inputs) | {n.output for n in g.nodes if n.op is Op.CONSTANT}
    for n in g.nodes:
        for v in n.outputs:
            if p.buffer_of(v) is None:
                assert n.op is Op.CONSTANT or (n.op in plan_memory.VIEW_OPS and n.inputs[0] in outside)
                outside.add(v)
