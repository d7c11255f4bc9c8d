"""Running graphs inside their memory plan: outputs must match the reference backend, which
they would not if the plan put two live buffers on the same bytes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from effc.backends.reference import ReferenceProgram
from effc.backends.reference.arena import ArenaProgram
from effc.ir import DType, Family, Graph, GraphBuilder, Node, Op, TensorType, Value, size_symbol, verify
from effc.ir.kernel_node import add_kernel, extract_body
from effc.passes.plan_memory import VIEW_OPS, plan
from effc.tolerance import assert_equivalent

from tests.strategies import examples, graphs, sizes

s0 = size_symbol("s0")
POINTWISE = (Family.UNARY, Family.BINARY, Family.COMPARE, Family.TERNARY, Family.CAST)


def _kind(node: Node) -> str:
    if node.op in VIEW_OPS:
        return "view"
    if node.op.family in POINTWISE:
        return "pointwise"
    return "extern" if node.op is Op.EXTERN else "op"


def kernelize(graph: Graph) -> Graph:
    """``graph`` with every node in a kernel node; a pointwise node whose only user is the next
    pointwise node of the same shape shares that node's kernel."""
    users = graph.users()
    b = GraphBuilder()
    b.reserve(graph.constants)
    m: dict[Value, Value] = {v: b.input(v.name or "x", v.type) for v in graph.inputs}
    nodes = list(graph.nodes)
    i = 0
    while i < len(nodes):
        n = nodes[i]
        if n.op is Op.CONSTANT:
            m[n.output] = b.adopt_constant(n.attrs["name"], graph.constant(n))
            i += 1
            continue
        group = [n]
        if i + 1 < len(nodes) and _kind(n) == "pointwise" == _kind(nodes[i + 1]):
            nxt = nodes[i + 1]
            if (users.get(n.output) == [nxt] * len(users.get(n.output, [])) and users.get(n.output)
                    and n.output not in graph.outputs and n.output.type.same_as(nxt.output.type)):
                group.append(nxt)
        outs = list(group[-1].outputs)
        body, outer = extract_body(group, outs)
        kn = add_kernel(b, _kind(group[-1]) if len(group) == 1 else "pointwise", f"k{i}",
                        [m[v] for v in outer], body)
        m.update(zip(outs, kn.outputs))
        i += len(group)
    return b.build([m[v] for v in graph.outputs])


def _same(g: Graph, inputs: list[torch.Tensor], hint: dict) -> None:
    p = plan(g, hint)
    note(p.summary())
    actual = ArenaProgram(g, p)(*inputs)
    expected = ReferenceProgram(g)(*inputs)
    reference = ReferenceProgram(g, upcast=True)(*inputs)
    assert_equivalent(actual, expected, reference, str(g))


@examples(30)
@given(data=st.data(), case=graphs(max_nodes=12))
def test_arena_matches_reference(data: st.DataObject, case) -> None:
    hint = data.draw(sizes(case), label="hint")
    env = data.draw(sizes(case, avoid=hint), label="sizes")
    _same(case.graph, case.inputs(env, seed=1), hint)


@examples(25)
@given(data=st.data(), case=graphs(max_nodes=12))
def test_arena_matches_reference_on_kernel_graphs(data: st.DataObject, case) -> None:
    g = kernelize(case.graph)
    verify(g)
    note(str(g))
    hint = data.draw(sizes(case), label="hint")
    env = data.draw(sizes(case, avoid=hint), label="sizes")
    _same(g, case.inputs(env, seed=2), hint)


def test_in_place_and_views_run_in_the_arena() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (s0, 8)))
    y = b.input("y", TensorType(DType.F32, (s0, 8)))
    a = b.op(Op.EXP, [x])
    r = b.op(Op.RELU, [b.op(Op.ADD, [a, y])])
    v = b.op(Op.RESHAPE, [r], shape=(-1,))
    g = b.build([b.op(Op.NEG, [v]), b.op(Op.SUM, [a], dims=(), keepdim=False, dtype=None)])
    p = plan(g, {s0: 4})
    assert sum(len(buf.inplace) for buf in p.buffers) >= 1
    for n in (1, 3, 9):
        xs, ys = torch.randn(n, 8), torch.randn(n, 8)
        neg, total = ArenaProgram(g, p)(xs, ys)
        assert torch.equal(neg, -(xs.exp() + ys).relu().reshape(-1))
        torch.testing.assert_close(total, xs.exp().sum())


def test_a_wrong_plan_corrupts_the_outputs() -> None:
    """The check has teeth: put every buffer at offset 0 and the outputs change."""
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (16,)))
    w = b.constant(torch.randn(16, 16), "w")
    h = b.op(Op.MATMUL, [x, w])
    g = b.build([b.op(Op.ADD, [b.op(Op.MATMUL, [h, w]), h])])
    p = plan(g, {})
    everything_at_zero = [*([0] * len(p.buffers)), max(int(buf.size) for buf in p.buffers)]
    broken = dataclasses.replace(p, _evaluate=lambda: everything_at_zero)
    xs = torch.randn(16)
    (good,) = ArenaProgram(g, p)(xs)
    (bad,) = ArenaProgram(g, broken)(xs)
    torch.testing.assert_close(good, (xs @ g.constants["w"]) @ g.constants["w"] + xs @ g.constants["w"])
    assert not torch.allclose(bad, good)


def test_plan_for_another_graph_is_refused() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (4,)))
    g = b.build([b.op(Op.EXP, [x])])
    with pytest.raises(ValueError, match="another graph"):
        ArenaProgram(g, plan(Graph(g.inputs, g.nodes, g.outputs), {}))
