"""The networkx view of a graph and the analyses built on it."""

from __future__ import annotations

import networkx as nx
import torch

from effc.ir import DType, Graph, GraphBuilder, Node, Op, TensorType, size_symbol
from effc.ir.analysis import reachable_from_outputs, to_networkx, topological_check

s0 = size_symbol("s0")


def sample() -> tuple[Graph, dict[str, Node]]:
    """mul(x, x) uses one value twice; cat(split) uses two outputs of one node; ``dead`` is unused."""
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (s0, 4)))
    y = b.input("unused", TensorType(DType.F32, (2,)))
    w = b.constant(torch.ones(4), "w")
    sq = b.op(Op.MUL, [x, x])
    split = b.node(Op.SPLIT, [sq], {"dim": 1, "sizes": (2, 2)})
    cat = b.op(Op.CAT, [split.outputs[1], split.outputs[0]], dim=1)
    out = b.op(Op.ADD, [cat, w])
    dead = b.op(Op.NEG, [y])
    g = b.build([out, split.outputs[0]])
    names = {"w": w.node, "mul": sq.node, "split": split, "cat": cat.node, "add": out.node,
             "dead": dead.node}
    return g, names  # type: ignore[return-value]


def test_vertices_and_edges() -> None:
    g, n = sample()
    d = to_networkx(g)
    assert isinstance(d, nx.DiGraph)
    assert d.number_of_nodes() == len(g.nodes) + len(g.inputs)
    assert d.number_of_edges() == sum(len(node.inputs) for node in g.nodes)
    x = g.inputs[0]
    assert d.nodes[x]["op"] == "input" and d.nodes[x]["node"] is None and d.nodes[x]["value"] is x
    assert d.nodes[n["mul"]]["op"] == "mul" and d.nodes[n["mul"]]["node"] is n["mul"]
    assert d.nodes[n["cat"]]["position"] == g.nodes.index(n["cat"])
    # one edge per use, keyed by operand position
    assert {k: e["value"] for k, e in d[x][n["mul"]].items()} == {0: x, 1: x}
    uses = d[n["split"]][n["cat"]]
    assert {k: (e["index"], e["value"]) for k, e in uses.items()} == {
        0: (0, n["split"].outputs[1]), 1: (1, n["split"].outputs[0])}
    assert set(d.predecessors(n["add"])) == {n["cat"], n["w"]}


def test_topological_check() -> None:
    g, n = sample()
    assert topological_check(g)
    assert nx.is_directed_acyclic_graph(to_networkx(g))
    nodes = list(g.nodes)
    i, j = nodes.index(n["mul"]), nodes.index(n["split"])
    nodes[i], nodes[j] = nodes[j], nodes[i]
    assert not topological_check(Graph(g.inputs, nodes, g.outputs, g.constants))
    assert not topological_check(Graph(g.inputs, list(g.nodes) + [n["dead"]], g.outputs, g.constants))
    # a use of a value that is not a graph input
    assert not topological_check(Graph(g.inputs[:1], g.nodes, g.outputs, g.constants))


def test_reachable_from_outputs() -> None:
    g, n = sample()
    live = reachable_from_outputs(g)
    assert live == {n[k] for k in ("w", "mul", "split", "cat", "add")}
    assert n["dead"] not in live
    only_split = Graph(g.inputs, g.nodes, [n["split"].outputs[0]], g.constants)
    assert reachable_from_outputs(only_split) == {n["mul"], n["split"]}
    assert reachable_from_outputs(Graph(g.inputs, g.nodes, [g.inputs[0]], g.constants)) == set()
