"""Fusion: group the graph's nodes into kernels; the cost model decides each merge.

    %0 = constant() {name="w"} : f32[16, 8]
    %1 = linear(%x, %0) : f32[4, 16]
    %2 = gelu(%1) {approximate="none"} : f32[4, 16]
    %3 = add(%2, %r) : f32[4, 16]
    return %3
  ->
    %0 = constant() {name="w"} : f32[16, 8]
    %1 = kernel(%x, %0, %r) {kind="matmul", name="k0", params={}} : f32[4, 16]
      graph(%a0: f32[4, 8], %a1: f32[16, 8], %a2: f32[4, 16]) {
        %0 = linear(%a0, %a1) : f32[4, 16]
        %1 = gelu(%0) {approximate="none"} : f32[4, 16]
        %2 = add(%1, %a2) : f32[4, 16]
        return %2
      }
    return %1

After it, every top-level node but constants is a kernel (ir/kernel_node.py), of a kind that
[Note: kernel groups] allows; kernels already there (patched stages) stay as they are.

[Note: fusion]
0. Splits (``split_to_slices``): a split whose outputs only fusable nodes read becomes one
   slice per used output. A slice is a view, so it folds into its consumers' index arithmetic
   and reads the split input in place; no kernel copies the parts out. A split that a graph
   output, an op or extern node, or symbolic sizes keep stays a kernel of its own, and
   ``rejected`` says why.
1. Horizontal (passes/fuse_horizontal.py): sibling linear layers on one input with constant
   weights become one wide layer and slices, where the roofline predicts a gain.
2. Vertical: every node starts as its own group. Walking the nodes in order, each node's
   group tries to absorb the group of each producer. A merge must
   (a) form a kind of [Note: kernel groups] (passes/fuse_groups.py says which, or why not);
   (b) keep the graph of groups acyclic: no path from the producer to the consumer through
       a third group, which would have to run both before and after the merged kernel (and
       before the kernels are emitted, the graph of groups is rebuilt from the node edges and
       its condensation must have one component per group: ``Fuser.check_acyclic``);
   (c) not duplicate work: a producer whose values are used elsewhere too stays whole inside
       the merged kernel, which writes those values as extra outputs. Only a free producer
       (pointwise nodes reading nothing: ``full``, ``arange``) is copied into the consumer
       and recomputed there; it stays for its other users, and goes when none is left;
   (d) be predicted faster by the roofline (compiler/costmodel/group_cost.py) than the two
       groups apart: one kernel overhead and a write + read of the values passed between
       them are saved, a value still needed outside is still written.
   Accepted kernels are listed in ``notes`` with their predicted saving; each distinct
   rejected pair in ``rejected`` with its reason.
3. Kernels are emitted in a topological order of the groups (ties: the first node's
   position), named k0, k1, ...; every constant stays a top-level node, ahead of them.
"""

from __future__ import annotations

from typing import Any, Mapping

import networkx as nx

from effc.costmodel import predict_node
from effc.costmodel.group_cost import external_inputs, predict_group
from effc.costmodel.roofline import Target, node_bytes
from effc.costmodel.traffic import traffic
from effc.ir import Graph, GraphBuilder, Node, Op, Value
from effc.ir.kernel_node import add_kernel, copy_node, extract_body
from effc.ir.rewrite import Rewriter
from effc.ir.types import normalize_axis
from effc.errors import CompileError
from effc.options import Options

from .fuse_groups import Reject, classify, role, solo_kind
from .fuse_horizontal import fuse_siblings
from .manager import PassResult

NAME = "fuse"


class Group:
    """Nodes fused into one kernel. ``home``: the nodes whose values it writes for others;
    the rest of ``nodes`` are private copies of free producers."""

    __slots__ = ("nodes", "home", "kind", "solo")

    def __init__(self, node: Node, kind: str, solo: bool) -> None:
        self.nodes = {node}
        self.home = {node}
        self.kind = kind
        self.solo = solo  # an op, extern or existing kernel: never merged


class Fuser:
    def __init__(self, graph: Graph, env: Mapping[Any, int], target: Target | None, gpu: bool = False) -> None:
        self.graph, self.env, self.target, self.gpu = graph, env, target, gpu
        self.users = graph.users()
        self.graph_outputs = set(graph.outputs)
        self.pos = {n: i for i, n in enumerate(graph.nodes)}
        self.home: dict[Node, Group] = {}
        self.dag = nx.DiGraph()
        self.rejected: dict[str, None] = {}
        for n in graph.nodes:
            if n.op is Op.CONSTANT:
                continue
            kind = "existing" if n.op is Op.KERNEL else solo_kind(n)
            g = Group(n, kind, kind in ("existing", "op", "extern"))
            self.home[n] = g
            self.dag.add_node(g)
        for g in list(self.dag.nodes):
            for p in self.producers(g):
                self.dag.add_edge(p, g)

    # -- views of a group -----------------------------------------------------------------

    def ordered(self, nodes: set[Node]) -> list[Node]:
        return sorted(nodes, key=self.pos.__getitem__)

    def producers(self, g: Group) -> set[Group]:
        return {self.home[v.node] for n in g.nodes for v in n.inputs
                if v.node is not None and v.node not in g.nodes and v.node.op is not Op.CONSTANT}

    def exported(self, nodes: set[Node], home: set[Node]) -> list[Value]:
        """Values of ``home`` used outside ``nodes`` (by a group without its own copy) or
        returned by the graph."""
        return [v for n in self.ordered(home) for v in n.outputs
                if v in self.graph_outputs or any(u not in nodes and n not in self.home[u].nodes
                                                  for u in self.users.get(v, ()))]

    def outputs(self, nodes: set[Node], home: set[Node]) -> list[Value]:
        """What the kernel writes: its exported values, or (dead code) its last node's."""
        return self.exported(nodes, home) or list(self.ordered(home)[-1].outputs)

    def predict(self, nodes: set[Node], home: set[Node]) -> Any:
        return predict_group(self.ordered(nodes), self.outputs(nodes, home), self.env, self.target)

    def describe(self, g: Group) -> str:
        ops = [str(n.op) for n in self.ordered(g.nodes)]
        return ops[0] if len(ops) == 1 else f"{g.kind}[{', '.join(ops)}]"

    # -- merging ----------------------------------------------------------------------------

    def run(self) -> None:
        for node in self.graph.nodes:
            if node not in self.home:
                continue
            for v in node.inputs:
                p = self.home.get(v.node) if v.node is not None else None
                c = self.home[node]
                if p is not None and p is not c and p in self.dag and v.node not in c.nodes:
                    self.try_merge(p, c)

    def reject(self, p: Group, c: Group, reason: str) -> None:
        self.rejected.setdefault(f"{self.describe(p)} + {self.describe(c)}: {reason}")

    def try_merge(self, p: Group, c: Group) -> None:
        if p.solo or c.solo:
            solo = p if p.solo else c
            why = ("is an existing kernel, kept as it is" if solo.kind == "existing"
                   else f"runs as a kernel of its own ({solo.kind} kind)")
            self.reject(p, c, f"{self.describe(solo)} {why}")
            return
        nodes = p.nodes | c.nodes
        needed_elsewhere = bool(self.exported(nodes, p.home))
        free = p.kind == "pointwise" and not external_inputs(self.ordered(p.nodes))
        copy = needed_elsewhere and free
        home = c.home if copy else p.home | c.home
        outs = self.outputs(nodes, home)
        kind = classify(self.ordered(nodes), outs, self.gpu)
        if isinstance(kind, Reject):
            self.reject(p, c, kind.reason)
            return
        if not copy:
            for s in self.dag.successors(p):
                if s is not c and nx.has_path(self.dag, s, c):
                    self.reject(p, c, f"would create a cycle through {self.describe(s)}")
                    return
        merged = self.predict(nodes, home)
        parts = [self.predict(c.nodes, c.home)] + ([] if copy else [self.predict(p.nodes, p.home)])
        if merged is None or any(x is None for x in parts):
            self.reject(p, c, "sizes unknown to the cost model")
            return
        apart = sum(x.seconds for x in parts)
        if merged.seconds >= apart:
            verdict = "slower" if merged.seconds > apart else "no faster"
            self.reject(p, c, f"predicted {verdict} ({merged.seconds * 1e6:.1f} us vs "
                              f"{apart * 1e6:.1f} us apart)")
            return
        c.nodes, c.home, c.kind = nodes, home, kind
        if not copy:
            for n in p.home:
                self.home[n] = c
            nx.contracted_nodes(self.dag, c, p, self_loops=False, copy=False)
        self.drop_copied(c)

    def drop_copied(self, c: Group) -> None:
        """``c`` reads nothing from the free groups it holds copies of; a free group nobody
        else reads any more is gone."""
        for q in {self.home[n] for n in c.nodes - c.home}:
            if q in self.dag:
                if self.dag.has_edge(q, c):
                    self.dag.remove_edge(q, c)
                if not self.exported(q.nodes, q.home):
                    self.dag.remove_node(q)

    # -- the fused graph --------------------------------------------------------------------

    def check_acyclic(self) -> None:
        """(b) once more, from scratch: the graph of groups rebuilt from the node edges must
        be its own condensation (every strongly connected component one group)."""
        owners: dict[Node, list[Group]] = {}
        for grp in self.dag:
            for n in grp.nodes:
                owners.setdefault(n, []).append(grp)
        groups = nx.DiGraph()
        groups.add_nodes_from(self.dag)
        for grp in self.dag:
            for n in grp.nodes:
                for v in n.inputs:
                    src = owners.get(v.node) if v.node is not None else None
                    if src and len(src) == 1 and src[0] is not grp:   # a recomputed free node reads nothing
                        groups.add_edge(src[0], grp)
        cond = nx.condensation(groups)
        if cond.number_of_nodes() != groups.number_of_nodes():
            cycle = max(cond.graph["mapping"].values(), key=list(cond.graph["mapping"].values()).count)
            members = [self.describe(grp) for grp, c in cond.graph["mapping"].items() if c == cycle]
            raise CompileError(f"fusion formed a cycle of kernels: {', '.join(members)}")

    def build(self) -> tuple[Graph, list[str]]:
        self.check_acyclic()
        g, notes = self.graph, []
        b = GraphBuilder()
        b.reserve(g.constants)
        mapping: dict[Value, Value] = {v: b.input(v.name or f"in{i}", v.type)
                                       for i, v in enumerate(g.inputs)}
        for n in g.nodes:
            if n.op is Op.CONSTANT:
                mapping[n.output] = b.adopt_constant(n.attrs["name"], g.constant(n))
        order = nx.lexicographical_topological_sort(
            self.dag, key=lambda grp: min(self.pos[n] for n in grp.home))
        count = 0
        for grp in order:
            if grp.kind == "existing":
                (node,) = grp.nodes
                new = copy_node(b, node, [mapping[v] for v in node.inputs])
                mapping.update(zip(node.outputs, new.outputs))
                continue
            nodes, outs = self.ordered(grp.nodes), self.outputs(grp.nodes, grp.home)
            body, outer = extract_body(nodes, outs)
            name = f"k{count}"
            count += 1
            k = add_kernel(b, grp.kind, name, [mapping[v] for v in outer], body)
            mapping.update(zip(outs, k.outputs))
            if len(nodes) > 1:
                notes.append(self.note(name, grp, nodes, outs))
        return b.build([mapping[v] for v in g.outputs]), notes

    def note(self, name: str, grp: Group, nodes: list[Node], outs: list[Value]) -> str:
        what = f"{name} = {grp.kind}[{', '.join(str(n.op) for n in nodes)}]"
        fused = predict_group(nodes, outs, self.env, self.target)
        apart = [predict_node(n, self.env, self.target) for n in nodes]
        moved = [node_bytes(n, self.env) for n in nodes]
        if fused is None or any(p is None for p in apart) or any(m is None for m in moved):
            return what
        saved = sum(m for m in moved if m is not None) - fused.features["bytes"]
        t = sum(p.seconds for p in apart if p is not None)
        return f"{what} saves {_fmt_bytes(saved)}, {t * 1e6:.1f} us -> {fused.seconds * 1e6:.1f} us"


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def split_to_slices(graph: Graph) -> tuple[Graph, list[str]]:
    """``graph`` with each split that only fusable nodes read replaced by slices, one per used
    output ([Note: fusion], step 0); and why the other splits stay:

        %1, %2 = split(%0) {dim=1, sizes=[4, 4]} : f32[2, 4], f32[2, 4]
      ->
        %1 = slice(%0) {dim=1, start=0, end=4, step=1} : f32[2, 4]
        %2 = slice(%0) {dim=1, start=4, end=8, step=1} : f32[2, 4]
    """
    users, outs = graph.users(), set(graph.outputs)
    stays: list[str] = []
    go: set[Node] = set()
    for n in graph.nodes:
        if n.op is Op.SPLIT:
            why = _split_stays(n, users, outs)
            if why is None:
                go.add(n)
            else:
                stays.append(f"split stays a kernel: {why}")
    if not go:
        return graph, stays
    rw = Rewriter(graph)
    for n in graph.nodes:
        if n not in go:
            rw.copy(n)
            continue
        dim = normalize_axis(n.attrs["dim"], n.inputs[0].type.rank)
        start = 0
        for v, size in zip(n.outputs, n.attrs["sizes"]):
            if users.get(v):
                attrs = {"dim": dim, "start": start, "end": start + size, "step": 1}
                rw.replace(v, rw.b.node(Op.SLICE, rw.map(n.inputs), attrs).output)
            start += size
    return rw.finish(), stays


def _split_stays(n: Node, users: Mapping[Value, list[Node]], outs: set[Value]) -> str | None:
    """Why split ``n`` stays a kernel, or None when its outputs can be slices."""
    if not all(isinstance(s, int) for s in n.attrs["sizes"]):
        return f"symbolic sizes {list(n.attrs['sizes'])}"
    for i, v in enumerate(n.outputs):
        if v in outs:
            return f"its output {i} is a graph output"
        for u in users.get(v, ()):
            if u.op is Op.KERNEL or role(u) in ("op", "extern"):
                return f"{u.op} reads its output {i} and runs as a kernel of its own"
    return None


def run(graph: Graph, options: Options, target: Target | None = None) -> PassResult:
    if all(n.op in (Op.CONSTANT, Op.KERNEL) for n in graph.nodes):
        return PassResult(graph, False)
    env = options.hint_env(graph.symbols())
    sliced, split_rejected = split_to_slices(graph)
    wide, notes, rejected = fuse_siblings(sliced, env, target)
    rejected = split_rejected + rejected
    fuser = Fuser(wide, env, target, gpu=options.target == "triton")
    fuser.run()
    fused, kernel_notes = fuser.build()
    total = sum(1 for n in graph.nodes if n.op is not Op.CONSTANT)
    made = sum(1 for n in fused.nodes if n.op is Op.KERNEL)
    # what it all saves, by the cost model: every node of the input a kernel of its own, against
    # the fused kernels (layout nodes that only rename a buffer move nothing in either)
    before, after = traffic(graph, env, target), traffic(fused, env, target)
    summary = (f"{total} nodes -> {made} kernel{'' if made == 1 else 's'}; bytes moved "
               f"{_fmt_bytes(before.bytes)} -> {_fmt_bytes(after.bytes)}, predicted "
               f"{before.seconds * 1e6:.1f} us -> {after.seconds * 1e6:.1f} us")
    if env:
        summary += " (priced at " + ", ".join(f"{s}={v}" for s, v in sorted(env.items(), key=str)) + ")"
    return PassResult(fused, True, tuple([summary, *notes, *kernel_notes]),
                      tuple(rejected) + tuple(fuser.rejected),
                      data={"nodes": total, "unfused": before, "fused": after})
