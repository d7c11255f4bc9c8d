"""Patch-based scheduling under a memory budget: stage discovery, receptive fields, the budget.

Also home of the CNN builders shared with tests/backends/test_patched.py: ``cnn_stages`` (a
hypothesis strategy of small random CNN stages) and ``mobilenet_v2`` (a small MobileNetV2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from effc.backends.reference import ReferenceProgram
from effc.errors import MemoryBudgetError
from effc.ir import DType, Graph, GraphBuilder, Op, TensorType, Value, verify
from effc.passes import receptive_field as rf
from effc.passes import schedule_patches as sp
from effc.tolerance import assert_equivalent

F32 = DType.F32


# ---- builders -------------------------------------------------------------------------------

class Net:
    """A GraphBuilder with seeded CNN layers."""

    def __init__(self, seed: int = 0) -> None:
        self.b = GraphBuilder()
        self.gen = torch.Generator().manual_seed(seed)

    def const(self, *shape: int, positive: bool = False) -> Value:
        t = torch.randn(list(shape), generator=self.gen)
        return self.b.constant(t.abs() + 0.5 if positive else t, "p")

    def conv(self, x: Value, cout: int, k: int, s: int = 1, p: int = 0, d: int = 1, g: int = 1,
             bias: bool = True) -> Value:
        cin = int(x.type.shape[1])
        w = self.const(cout, cin // g, k, k)
        ins = [x, w] + ([self.const(cout)] if bias else [])
        return self.b.op(Op.CONVOLUTION, ins, stride=(s, s), padding=(p, p), dilation=(d, d),
                         groups=g, transposed=False, output_padding=(0, 0))

    def bn(self, x: Value) -> Value:
        c = int(x.type.shape[1])
        return self.b.op(Op.BATCH_NORM, [x, self.const(c), self.const(c, positive=True), self.const(c),
                                         self.const(c)], eps=1e-5, has_weight=True, has_bias=True)

    def relu6(self, x: Value) -> Value:
        return self.b.op(Op.CLAMP, [x], min=0.0, max=6.0)


def mobilenet_v2(size: int = 96, batch: int = 1, width: int = 16) -> Graph:
    """A small MobileNetV2: 3x3 stride-2 stem, inverted residual blocks (expansion 6: 1x1 conv,
    relu6, depthwise 3x3, relu6, 1x1 projection, residual add), global pooling, classifier."""
    n = Net(1)
    x = n.b.input("x", TensorType(F32, (batch, 3, size, size)))
    h = n.relu6(n.bn(n.conv(x, width, 3, 2, 1, bias=False)))
    cin = width
    for t, c, s in ((1, 8, 1), (6, 12, 2), (6, 12, 1), (6, 16, 2), (6, 16, 1), (6, 24, 2), (6, 24, 1)):
        e = h
        if t != 1:
            e = n.relu6(n.conv(h, cin * t, 1))
        e = n.relu6(n.conv(e, cin * t, 3, s, 1, g=cin * t))
        e = n.conv(e, c, 1)
        h = n.b.op(Op.ADD, [e, h]) if s == 1 and c == cin else e
        cin = c
    pooled = n.b.op(Op.MEAN, [h], dims=(2, 3), keepdim=False)
    return n.b.build([n.b.op(Op.LINEAR, [pooled, n.const(10, cin), n.const(10)])])


@dataclass
class StageCase:
    graph: Graph
    stage: sp.Stage     # the whole graph but its last node... or all of it: the longest stage
    note: str

    def __repr__(self) -> str:
        return f"StageCase({self.note})\n{self.graph}"


@st.composite
def cnn_stages(draw: Any, max_layers: int = 4) -> StageCase:
    """A random small CNN stage: convolutions (k 1/3/5, stride, padding, dilation, groups,
    depthwise), pointwise nodes with per-channel operands, batch norm, max/avg pooling and
    residual adds; the whole graph is one stage."""
    n = Net(draw(st.integers(0, 2**16)))
    batch, cin = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    x = n.b.input("x", TensorType(F32, (batch, cin, draw(st.integers(5, 13)), draw(st.integers(5, 13)))))
    h, kinds = x, []
    for _ in range(draw(st.integers(1, max_layers))):
        c, hh, ww = (int(d) for d in h.type.shape[1:])
        kind = draw(st.sampled_from(["conv", "conv", "dw", "pointwise", "bn", "max", "avg", "res"]))
        if kind in ("conv", "dw"):
            k, s, d = draw(st.sampled_from([1, 3, 5])), draw(st.integers(1, 2)), draw(st.integers(1, 2))
            p = draw(st.integers(0, d * (k - 1) // 2 + 1))
            if min(hh, ww) + 2 * p - d * (k - 1) < 1:
                k, d = 1, 1
            if kind == "dw":
                g, cout = c, c * draw(st.integers(1, 2))
            else:
                g = draw(st.sampled_from([g for g in (1, 2, c) if c % g == 0]))
                cout = g * draw(st.integers(1, 3))
            h = n.conv(h, cout, k, s, p, d, g, bias=draw(st.booleans()))
            kinds.append(f"{kind}(k{k} s{s} p{p} d{d} g{g})")
        elif kind == "pointwise":
            op = draw(st.sampled_from(["relu6", "mul", "add", "sigmoid"]))
            if op == "relu6":
                h = n.relu6(h)
            elif op == "sigmoid":
                h = n.b.op(Op.SIGMOID, [h])
            else:
                h = n.b.op(Op.MUL if op == "mul" else Op.ADD, [h, n.const(c, 1, 1)])
            kinds.append(op)
        elif kind == "bn":
            h, _ = n.bn(h), kinds.append("bn")
        elif kind in ("max", "avg"):
            k, s = draw(st.integers(2, 3)), draw(st.integers(1, 2))
            p, ceil = draw(st.integers(0, k // 2)), draw(st.booleans())
            if min(hh, ww) + 2 * p < k:
                continue
            if kind == "max":
                d = draw(st.integers(1, 2)) if min(hh, ww) + 2 * p >= 2 * k else 1
                h = n.b.op(Op.MAX_POOL, [h], kernel=(k, k), stride=(s, s), padding=(p, p),
                           dilation=(d, d), ceil_mode=ceil)
                kinds.append(f"maxpool(k{k} s{s} p{p} d{d} ceil={ceil})")
            else:
                inc, div = draw(st.booleans()), draw(st.sampled_from([None, None, 3]))
                h = n.b.op(Op.AVG_POOL, [h], kernel=(k, k), stride=(s, s), padding=(p, p), ceil_mode=ceil,
                           count_include_pad=inc, divisor_override=div)
                kinds.append(f"avgpool(k{k} s{s} p{p} ceil={ceil} include_pad={inc} div={div})")
        else:
            d = draw(st.integers(1, 2))
            y = n.relu6(n.conv(h, c, 3, 1, d, d))
            h = n.b.op(Op.ADD, [n.conv(y, c, 1), h])
            kinds.append(f"residual(d{d})")
    if h is x:
        h = n.relu6(h)
    g = n.b.build([h])
    stages, _ = sp.find_stages(g)
    assume(stages)
    longest = max(stages, key=lambda s: len(s.nodes))
    return StageCase(g, longest, ", ".join(kinds))


def live_peak(graph: Graph) -> int:
    """Activation bytes held at once running ``graph`` node by node, freeing each value after
    its last use; a patched node also holds its tile working set. Constants are not counted."""
    last = {v: i for i, n in enumerate(graph.nodes) for v in n.inputs}
    outs = set(graph.outputs)
    size = {v: int(v.type.numel()) * v.type.dtype.itemsize for v in graph.inputs}
    live = {v: size[v] for v in graph.inputs}
    peak = sum(live.values())
    for i, n in enumerate(graph.nodes):
        if n.op is Op.CONSTANT:
            continue
        for v in n.outputs:
            live[v] = int(v.type.numel()) * v.type.dtype.itemsize
        extra = sp.scratch_bytes(n, {}) if n.op is Op.KERNEL and n.attrs["kind"] == "patched" else 0
        peak = max(peak, sum(live.values()) + extra)
        for v in [v for v in live if v not in outs and last.get(v, -1) <= i]:
            del live[v]
    return peak


def assert_same(before: Graph, after: Graph, *inputs: torch.Tensor) -> None:
    """In float64 the patched graph matches to rounding; in float32 within the tolerance policy."""
    reference = ReferenceProgram(before, upcast=True)(*inputs)
    for a, b in zip(ReferenceProgram(after, upcast=True)(*inputs), reference):
        assert a.dtype == b.dtype == torch.float64 and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max()))
    expected = ReferenceProgram(before)(*inputs)
    actual = ReferenceProgram(after)(*inputs)
    assert [t.dtype for t in actual] == [t.dtype for t in expected]
    assert_equivalent(actual, expected, reference, f"before:\n{before}after:\n{after}")


def _inputs(g: Graph, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn([int(d) for d in v.type.shape], generator=gen) for v in g.inputs]


# ---- receptive fields -----------------------------------------------------------------------

def _brute_force_needs(stage: sp.Stage, tile: rf.Region) -> dict[Value, tuple[set[int], set[int]]]:
    """Index sets each value is read at, found by enumerating every window tap."""
    spatial = {stage.source} | {n.output for n in stage.nodes}
    need: dict[Value, tuple[set[int], set[int]]] = {
        stage.output: (set(range(*tile[0])), set(range(*tile[1])))}
    for n in reversed(stage.nodes):
        if n.output not in need:
            continue
        rows, cols = need[n.output]
        for v in n.inputs:
            if v not in spatial:
                continue
            if n.op in rf.WINDOW_OPS and v is n.inputs[0]:
                r, c = ({o * w.stride - w.padding + w.dilation * j for o in outs for j in range(w.kernel)}
                        & set(range(size))
                        for outs, w, size in zip((rows, cols), rf.windows(n), rf.spatial_hw(v)))
            else:
                r, c = rows, cols
            old = need.get(v, (set(), set()))
            need[v] = (old[0] | r, old[1] | c)
    return need


def test_window_range_formula() -> None:
    # conv 3x3, stride 2, padding 1, dilation 2: outputs [2, 5) read 2*2-1 .. 4*2-1+2*2+1
    w = rf.Window(3, 2, 1, 2)
    assert w.needs((2, 5)) == (3, 12)
    assert rf.clip((-2, 12), 10) == ((0, 10), 2, 2)
    assert rf.clip((-3, -1), 10) == ((0, 0), 2, 0)  # all padding: nothing real is read
    assert rf.clip((11, 13), 10) == ((10, 10), 0, 2)
    # the exact reads: output 0 of a 2-tap window dilated by 2 with padding 1 reads rows -1
    # (padding) and 1, not 0
    assert rf.Window(2, 1, 1, 2).reads((0, 1), 5) == (1, 2)
    assert rf.Window(1, 2, 1, 1).reads((0, 1), 5) == (0, 0)      # all padding
    assert rf.Window(3, 2, 1, 2).reads((2, 5), 10) == (3, 10)
    assert rf.hull((0, 0), (3, 4)) == (3, 4) and rf.hull((1, 2), (5, 9)) == (1, 9)


def test_regions_of_the_docstring_example() -> None:
    n = Net()
    x = n.b.input("x", TensorType(F32, (1, 2, 32, 32)))
    c1 = n.conv(x, 3, 3, 2, 1)
    r = n.b.op(Op.RELU, [c1])
    c3 = n.conv(r, 3, 3, 1, 1)
    g = n.b.build([c3])
    (stage,) = [s for s in sp.find_stages(g)[0] if s.output is c3]
    got = rf.stage_regions(stage.nodes, {x, c1, r, c3}, c3, ((0, 8), (4, 6)))
    assert got == {c3: ((0, 8), (4, 6)), r: ((0, 9), (3, 7)), c1: ((0, 9), (3, 7)), x: ((0, 18), (5, 14))}


@settings(max_examples=30)
@given(cnn_stages(), st.data())
def test_regions_match_brute_force(case: StageCase, data: Any) -> None:
    h, w = rf.spatial_hw(case.stage.output)
    r0 = data.draw(st.integers(0, h - 1))
    c0 = data.draw(st.integers(0, w - 1))
    tile = ((r0, data.draw(st.integers(r0 + 1, h))), (c0, data.draw(st.integers(c0 + 1, w))))
    spatial = {case.stage.source} | {n.output for n in case.stage.nodes}
    got = rf.stage_regions(case.stage.nodes, spatial, case.stage.output, tile)
    want = _brute_force_needs(case.stage, tile)
    assert set(got) == set(want)
    for v, (rows, cols) in want.items():
        (r0, r1), (c0, c1) = got[v]
        if rows and cols:
            assert got[v] == ((min(rows), max(rows) + 1), (min(cols), max(cols) + 1)), case.note
        else:  # every tap falls in padding: the value is not computed
            assert r0 >= r1 or c0 >= c1, case.note


# ---- stages and patching --------------------------------------------------------------------

def test_stage_ends_only_where_no_intermediate_escapes() -> None:
    g = mobilenet_v2(32)
    stages, stops = sp.find_stages(g)
    assert stops and "mean" in stops[0]
    ends = [s.output.node.op for s in stages]
    # a residual block's input feeds its add: no stage ends inside a residual block
    for s in stages:
        inner = {n.output for n in s.nodes} - {s.output}
        for n in g.nodes:
            if n not in s.nodes:
                assert not inner & set(n.inputs)
    assert Op.ADD in ends and Op.CLAMP in ends
    # 3 = the stem's conv, bn, clamp: the first valid end after the conv is the clamp (bn
    # and conv outputs are fine ends too, they have one user each)
    assert [len(s.nodes) for s in stages][:3] == [1, 2, 3]


@settings(max_examples=25)
@given(cnn_stages(), st.integers(1, 4), st.integers(1, 4))
def test_patched_stage_equals_layer_by_layer(case: StageCase, th: int, tw: int) -> None:
    h, w = rf.spatial_hw(case.stage.output)
    g = sp.patch_stage(case.graph, case.stage, rf.even_bounds(h, th), rf.even_bounds(w, tw))
    verify(g)
    (k,) = [n for n in g.nodes if n.op is Op.KERNEL]
    assert len(k.attrs["body"].nodes) == len(case.stage.nodes)
    assert len(g.nodes) == len(case.graph.nodes) - len(case.stage.nodes) + 1
    assert_same(case.graph, g, *_inputs(case.graph))


def test_mobilenet_stage_patched_text_and_numbers() -> None:
    g = mobilenet_v2(32)
    stages, _ = sp.find_stages(g)
    stage = stages[5]
    p = sp.patch_stage(g, stage, (0, 5, 16), (0, 8, 11, 16))
    verify(p)
    text = str(p)
    assert 'kind="patched"' in text and '"rows": [0, 5, 16], "cols": [0, 8, 11, 16]' in text
    (k,) = [n for n in p.nodes if n.op is Op.KERNEL]
    assert len(k.attrs["body"].nodes) == len(stage.nodes)
    assert_same(g, p, *_inputs(g))


def test_flops_and_scratch_of_a_known_stage() -> None:
    # one 3x3 same conv on 8x8, 2x1 tiles: each tile computes 4 rows of the output; the input
    # is read in place, the output written in place, so a one-node stage has no scratch
    n = Net()
    x = n.b.input("x", TensorType(F32, (1, 2, 8, 8)))
    y = n.conv(x, 4, 3, 1, 1, bias=False)
    z = n.conv(n.relu6(y), 4, 3, 1, 1, bias=False)
    g = n.b.build([z])
    stages, _ = sp.find_stages(g)
    p = sp.patch_stage(g, stages[-1], (0, 4, 8), (0, 8))
    (k,) = [m for m in p.nodes if m.op is Op.KERNEL]
    tiled, full = sp.tile_flops(k, {})
    per_row = 2 * 4 * 2 * 9 * 8 + 4 * 8 + 2 * 4 * 4 * 9 * 8   # conv, clamp, conv per output row
    assert full == 8 * per_row
    # the first conv and the clamp are computed on 5 rows per tile (one row of halo)
    assert tiled == full + 2 * (2 * 4 * 2 * 9 * 8 + 4 * 8)
    # y for a 5-row tile, which relu6 overwrites in place: 4 ch x 5 x 8 x 4 bytes
    assert sp.scratch_bytes(k, {}) == 4 * 5 * 8 * 4


# ---- the budget -----------------------------------------------------------------------------

def test_fits_already_returns_the_same_graph() -> None:
    g = mobilenet_v2(32)
    out, notes, rejected = sp.schedule(g, 10**9, {}, live_peak)
    assert out is g and "fits" in notes[0] and not rejected


def test_mobilenet_under_budget_cuts_the_peak() -> None:
    g = mobilenet_v2(96)
    base = live_peak(g)
    budget = base // 3
    out, notes, rejected = sp.schedule(g, budget, {}, live_peak, add_scratch=False)
    verify(out)
    assert out is not g and live_peak(out) <= budget
    assert "patched stage" in notes[0] and "recomputes" in notes[0]
    assert any("over the budget" in r for r in rejected)
    assert_same(g, out, *_inputs(g))
    # with the scratch added on top of a planner that ignores it, the result is still in budget
    out2, _, _ = sp.schedule(g, budget, {}, live_peak, add_scratch=True)
    assert live_peak(out2) <= budget


def test_mobilenet_smallest_peak() -> None:
    """The figure the issue asks for: layer-by-layer peak over the smallest patched peak."""
    g = mobilenet_v2(96)
    base = live_peak(g)
    cands, _ = sp.candidates(g, {}, live_peak, add_scratch=False)
    best = min(cands, key=lambda c: c.peak)
    assert best.peak * 3 < base, (base, best.peak, best.label)
    with pytest.raises(MemoryBudgetError) as err:
        sp.schedule(g, best.peak - 1, {}, live_peak, add_scratch=False)
    msg = str(err.value)
    assert sp.format_bytes(best.peak) in msg and "smallest peak" in msg and best.label in msg
    assert sp.format_bytes(best.peak - 1) in msg


def test_impossible_budget_names_the_smallest_peak() -> None:
    g = mobilenet_v2(32)
    with pytest.raises(MemoryBudgetError, match=r"memory budget of 1\.0 KiB.*smallest peak found is \d"):
        sp.schedule(g, 1024, {}, live_peak)


def test_no_stage_error() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (4, 1000)))
    g = b.build([b.op(Op.RELU, [x])])
    with pytest.raises(MemoryBudgetError, match="no stage can run patch by patch"):
        sp.schedule(g, 100, {}, live_peak)


@settings(max_examples=15)
@given(cnn_stages(max_layers=5), st.floats(0.3, 0.95))
def test_schedule_respects_the_budget(case: StageCase, frac: float) -> None:
    base = live_peak(case.graph)
    budget = max(1, int(base * frac))
    try:
        out, notes, _ = sp.schedule(case.graph, budget, {}, live_peak, add_scratch=False)
    except MemoryBudgetError as e:
        cands, _ = sp.candidates(case.graph, {}, live_peak, add_scratch=False)
        assert all(c.peak > budget for c in cands)
        assert sp.format_bytes(min([c.peak for c in cands] + [base])) in str(e)
        return
    verify(out)
    assert live_peak(out) <= budget
    assert_same(case.graph, out, *_inputs(case.graph))
