"""Copying a graph node by node: the scaffolding of every pass.

A pass walks the source graph, and for each node either copies it (``copy``) or builds
something else and records what replaces the old values (``replace``). The source graph is
never modified, so "run before and after the pass and compare" is always possible.
"""

from __future__ import annotations

from typing import Sequence

from .graph import Graph, GraphBuilder, Node, Value
from .ops import Op


class Rewriter:
    def __init__(self, graph: Graph) -> None:
        self.src = graph
        self.b = GraphBuilder()
        self.b.reserve(graph.constants)
        self.vmap: dict[Value, Value] = {}
        for v in graph.inputs:
            self.vmap[v] = self.b.input(v.name or "in", v.type)

    def __getitem__(self, v: Value) -> Value:
        return self.vmap[v]

    def map(self, values: Sequence[Value]) -> list[Value]:
        return [self.vmap[v] for v in values]

    def replace(self, old: Value, new: Value) -> None:
        self.vmap[old] = new

    def copy(self, node: Node, inputs: Sequence[Value] | None = None) -> Node:
        """Copy ``node`` onto (mapped or given) inputs; types are re-inferred by the op rule."""
        if node.op is Op.CONSTANT:
            name = node.attrs["name"]
            if name in self.b.constants:
                new = next(n for n in self.b.nodes if n.op is Op.CONSTANT and n.attrs["name"] == name)
            else:
                new = self.b.adopt_constant(name, self.src.constants[name]).node  # type: ignore[assignment]
        else:
            ins = self.map(node.inputs) if inputs is None else list(inputs)
            types = [v.type for v in node.outputs] if node.op is Op.EXTERN else None
            new = self.b.node(node.op, ins, node.attrs, types)
        assert new is not None
        for old, v in zip(node.outputs, new.outputs):
            self.vmap[old] = v
        return new

    def finish(self, outputs: Sequence[Value] | None = None) -> Graph:
        outs = self.map(self.src.outputs) if outputs is None else list(outputs)
        return self.b.build(outs)

    def finish_pruned(self) -> Graph:
        """``finish()`` less the nodes this rewrite left without users.

        Nodes already dead in the source stay, with whatever they use: removing those is
        eliminate_dead_code's job, and its note.
        """
        from .analysis import live_nodes
        out = self.finish()
        live_before = live_nodes(self.src.outputs)
        roots = list(out.outputs) + [self.vmap[v] for n in self.src.nodes if n not in live_before
                                     for v in n.outputs if v in self.vmap]
        keep = live_nodes(roots)
        if len(keep) == len(out.nodes):
            return out
        prune = Rewriter(out)
        for n in out.nodes:
            if n in keep:
                prune.copy(n)
        return prune.finish()
