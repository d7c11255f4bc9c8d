"""The graph as a networkx dataflow graph, and small analyses built on it.

[Note: one edge per use] ``to_networkx`` returns a ``networkx.MultiDiGraph`` (a subclass of
``DiGraph``): a node may use one producer several times (``mul(%0, %0)``, or ``cat`` of both
halves of a ``split``), and each use is its own edge, keyed by the operand position. Vertices
are the IR ``Node`` objects themselves plus the graph's input ``Value`` objects, so results
map straight back onto the IR without a lookup table.
"""

from __future__ import annotations

import networkx as nx

from typing import Iterable

from .graph import Graph, Node, Value


def to_networkx(graph: Graph) -> nx.MultiDiGraph:
    """A dataflow graph: one vertex per IR node and per graph input, one edge per use.

    Vertex attributes: ``node`` (the IR Node, or None for a graph input), ``op`` (the op name,
    or ``"input"``), ``position`` (index in ``graph.nodes``; -1 for inputs) and, for inputs,
    ``value``. Edge ``(producer, user, key=i)`` has ``value`` (the Value used) and ``index``
    (``i``, its operand position in the user). A producer that is not part of ``graph`` still
    gets a vertex, without attributes, so that malformed graphs can be inspected.
    """
    g = nx.MultiDiGraph()
    for v in graph.inputs:
        g.add_node(v, node=None, op="input", position=-1, value=v)
    for i, n in enumerate(graph.nodes):
        g.add_node(n, node=n, op=n.op.value, position=i)
    for n in graph.nodes:
        for i, v in enumerate(n.inputs):
            g.add_edge(v if v.node is None else v.node, n, key=i, value=v, index=i)
    return g


def topological_check(graph: Graph) -> bool:
    """True when every use comes after its definition in ``graph.nodes`` (so no cycles either)."""
    if len(set(graph.nodes)) != len(graph.nodes):
        return False  # a node listed twice defines its outputs twice
    g = to_networkx(graph)
    pos = g.nodes(data="position")
    for u, w in g.edges():
        if pos[u] is None or pos[w] is None or pos[u] >= pos[w]:
            return False
    return True


def live_nodes(roots: Iterable[Value]) -> set[Node]:
    """The IR nodes the values ``roots`` depend on (a plain walk up the use-def chains)."""
    live: set[Node] = set()
    stack = [v.node for v in roots if v.node is not None]
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        stack.extend(v.node for v in n.inputs if v.node is not None and v.node not in live)
    return live


def reachable_from_outputs(graph: Graph) -> set[Node]:
    """The IR nodes some graph output depends on; every other node is dead code."""
    return live_nodes(graph.outputs)
