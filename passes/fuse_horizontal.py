"""Horizontal fusion: sibling linear layers that read one input become one wider layer.

    %q = linear(%x, %wq, %bq) : f32[4, 16]
    %k = linear(%x, %wk, %bk) : f32[4, 16]
  ->
    %w = constant() {name="wq.hcat"} : f32[32, 8]       # cat([wq, wk]), and the biases likewise
    %b = constant() {name="bq.hcat"} : f32[32]
    %qk = linear(%x, %w, %b) : f32[4, 32]
    %q = slice(%qk) {dim=1, start=0, end=16, step=1} : f32[4, 16]
    %k = slice(%qk) {dim=1, start=16, end=32, step=1} : f32[4, 16]

The same for addmm as torch.compile hands it over (BERT's Q, K and V), whose weight is a
permute of a constant: the constants are concatenated along the axis the permute carries to
the output width, and one permute stays, so the weight keeps the layout it had.

    %wq_t = permute(%wq) {dims=[1, 0]} : f32[8, 16]
    %q = addmm(%bq, %x, %wq_t) {beta=1, alpha=1} : f32[4, 16]
    %wk_t = permute(%wk) {dims=[1, 0]} : f32[8, 16]
    %k = addmm(%bk, %x, %wk_t) {beta=1, alpha=1} : f32[4, 16]
  ->
    %w = constant() {name="wq.hcat"} : f32[32, 8]
    %w_t = permute(%w) {dims=[1, 0]} : f32[8, 32]
    %b = constant() {name="bq.hcat"} : f32[32]
    %qk = addmm(%b, %x, %w_t) {beta=1, alpha=1} : f32[4, 32]
    %q = slice(%qk) {dim=1, start=0, end=16, step=1} : f32[4, 16]
    %k = slice(%qk) {dim=1, start=16, end=32, step=1} : f32[4, 16]

[Note: horizontal siblings]
Siblings read one input value and are LINEAR (weight (n, k), optional bias (n,)), MATMUL with
a rank-2 weight (k, n), or ADDMM (bias (n,), 2-d input, weight (k, n)). Each weight is a
constant seen through a chain of permutes, the same chain for every sibling; biases are
constants. Linear layers with and without a bias merge (a zero bias for the latter), and so do
addmm and 2-d matmul (the merged node is an addmm; beta is folded into the bias, alpha must
agree). The slices are views: vertical fusion absorbs them into their consumers as index
arithmetic. Done only when the roofline predicts the wide layer faster than the siblings apart
(the input is read once, and one kernel launch replaces several). The old constants go when
nothing else uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from effc.costmodel import predict_node
from effc.costmodel.roofline import Target
from effc.ir import Graph, GraphBuilder, Node, Op, TensorType, Value
from effc.ir.rewrite import Rewriter
from effc.ir.types import normalize_axis


def _const(v: Value) -> Node | None:
    return v.node if v.node is not None and v.node.op is Op.CONSTANT else None


@dataclass(frozen=True)
class Sibling:
    """One candidate: ``weight`` seen through ``chain`` (permutes, innermost first) is the
    node's weight operand; ``axis`` is the constant's axis that becomes the output width."""

    node: Node
    weight: Node
    chain: tuple[Node, ...]
    axis: int
    bias: Node | None
    width: int


def _weight(v: Value) -> tuple[Node, tuple[Node, ...]] | None:
    """The constant under ``v`` and the permutes from it to ``v``; None when ``v`` is not one."""
    chain: list[Node] = []
    while v.node is not None and v.node.op is Op.PERMUTE:
        chain.append(v.node)
        v = v.node.inputs[0]
    c = _const(v)
    return None if c is None else (c, tuple(reversed(chain)))


def _dims(p: Node) -> tuple[int, ...]:
    rank = p.inputs[0].type.rank
    return tuple(normalize_axis(d, rank) for d in p.attrs["dims"])


def _candidate(n: Node, x: Value) -> tuple[tuple[Any, ...], Sibling] | None:
    """What siblings must share to be concatenated, and ``n`` as one; None when it is none."""
    if n.op not in (Op.LINEAR, Op.MATMUL, Op.ADDMM):
        return None
    xi, wi, bi = {Op.LINEAR: (0, 1, 2), Op.MATMUL: (0, 1, None), Op.ADDMM: (1, 2, 0)}[n.op]
    if n.inputs[xi] is not x or (n.op is Op.MATMUL and len(n.inputs) != 2):
        return None
    found = _weight(n.inputs[wi])
    if found is None or n.inputs[wi].type.rank != 2 or x.type.rank < 1:
        return None
    w = n.inputs[wi].type
    out = 0 if n.op is Op.LINEAR else 1  # the weight's axis that is the output width
    width, k = w.shape[out], w.shape[1 - out]
    if not isinstance(width, int):
        return None
    has_bias = bi is not None and bi < len(n.inputs)
    bias = _const(n.inputs[bi]) if has_bias else None  # type: ignore[index]
    if has_bias and (bias is None or bias.output.type.shape != (width,)):
        return None  # a bias that is not one row (or not constant) cannot be concatenated
    axis = out
    for p in reversed(found[1]):
        axis = _dims(p)[axis]
    family = "linear" if n.op is Op.LINEAR else "mm"
    alpha = n.attrs["alpha"] if n.op is Op.ADDMM else 1
    key = (family, w.dtype, k, tuple(_dims(p) for p in found[1]), alpha)
    return key, Sibling(n, found[0], found[1], axis, bias, width)


def sibling_sets(graph: Graph) -> list[list[Sibling]]:
    out: list[list[Sibling]] = []
    for x, us in graph.users().items():
        sets: dict[tuple[Any, ...], list[Sibling]] = {}
        for n in dict.fromkeys(us):
            found = _candidate(n, x)
            if found is not None:
                sets.setdefault(found[0], []).append(found[1])
        out.extend(s for s in sets.values() if len(s) > 1)
    return out


def _merged_op(sibs: list[Sibling]) -> Op:
    ops = {s.node.op for s in sibs}
    return Op.ADDMM if Op.ADDMM in ops else next(iter(ops))


def _attrs(sibs: list[Sibling], op: Op) -> dict[str, Any]:
    if op is not Op.ADDMM:
        return dict(sibs[0].node.attrs)
    alpha = next(s.node.attrs["alpha"] for s in sibs if s.node.op is Op.ADDMM)
    return {"beta": 1, "alpha": alpha}


def _bias(graph: Graph, sibs: list[Sibling]) -> torch.Tensor | None:
    """The concatenated bias: zeros for siblings without one, beta folded in; None if no
    sibling has one."""
    if all(s.bias is None for s in sibs):
        return None
    dtype = next(graph.constant(s.bias).dtype for s in sibs if s.bias is not None)
    parts = []
    for s in sibs:
        beta = s.node.attrs["beta"] if s.node.op is Op.ADDMM else 1
        if s.bias is None or beta == 0:  # torch's addmm ignores the bias when beta is 0
            parts.append(torch.zeros(s.width, dtype=dtype))
        else:
            b = graph.constant(s.bias)
            parts.append(b if beta == 1 else b * beta)
    return torch.cat(parts)


def _predict_wide(sibs: list[Sibling], env: Mapping[Any, int], target: Target | None) -> Any:
    """The roofline price of the wide layer (built in a scratch graph)."""
    first, op = sibs[0].node, _merged_op(sibs)
    width = sum(s.width for s in sibs)
    b = GraphBuilder()
    x = b.input("x", first.inputs[1 if first.op is Op.ADDMM else 0].type)
    w = first.inputs[2 if first.op is Op.ADDMM else 1].type
    shape = (width, w.shape[1]) if op is Op.LINEAR else (w.shape[0], width)
    ins = [x, b.input("w", TensorType(w.dtype, shape))]
    if any(s.bias is not None for s in sibs):
        bias = b.input("b", TensorType(w.dtype, (width,)))
        ins = [bias, *ins] if op is Op.ADDMM else [*ins, bias]
    return predict_node(b.node(op, ins, _attrs(sibs, op)), env, target)


def _describe(sibs: list[Sibling]) -> str:
    ops = "/".join(str(op) for op in dict.fromkeys(s.node.op for s in sibs))
    x = sibs[0].node.inputs[1 if sibs[0].node.op is Op.ADDMM else 0]
    return f"{len(sibs)} x {ops} on one input {x.type}"


def _emit(rw: Rewriter, graph: Graph, sibs: list[Sibling]) -> None:
    """The wide layer, its weight and bias constants, and a slice standing for each sibling."""
    op, first = _merged_op(sibs), sibs[0]
    wide = torch.cat([graph.constant(s.weight) for s in sibs], dim=first.axis)
    w = rw.b.constant(wide, f"{first.weight.attrs['name']}.hcat")
    for p in first.chain:
        w = rw.b.op(Op.PERMUTE, [w], dims=list(_dims(p)))
    x = rw[first.node.inputs[1 if first.node.op is Op.ADDMM else 0]]
    ins = [x, w]
    bias = _bias(graph, sibs)
    if bias is not None:
        name = next(s.bias.attrs["name"] for s in sibs if s.bias is not None)
        b = rw.b.constant(bias, f"{name}.hcat")
        ins = [b, *ins] if op is Op.ADDMM else [*ins, b]
    y = rw.b.node(op, ins, _attrs(sibs, op)).output
    start, dim = 0, y.type.rank - 1
    for s in sibs:
        end = start + s.width
        rw.replace(s.node.outputs[0], rw.b.op(Op.SLICE, [y], dim=dim, start=start, end=end, step=1))
        start = end


def fuse_siblings(graph: Graph, env: Mapping[Any, int], target: Target | None = None
                  ) -> tuple[Graph, list[str], list[str]]:
    """``graph`` with each paying sibling set made one wide layer; notes; rejections."""
    notes: list[str] = []
    rejected: list[str] = []
    plans: dict[Node, list[Sibling]] = {}
    for sibs in sibling_sets(graph):
        apart = [predict_node(s.node, env, target) for s in sibs]
        wide = _predict_wide(sibs, env, target)
        what = _describe(sibs)
        if wide is None or any(p is None for p in apart):
            rejected.append(f"horizontal {what}: sizes unknown to the cost model")
            continue
        t_apart = sum(p.seconds for p in apart)  # type: ignore[union-attr]
        if wide.seconds >= t_apart:
            rejected.append(f"horizontal {what}: predicted slower "
                            f"({wide.seconds * 1e6:.1f} us vs {t_apart * 1e6:.1f} us)")
            continue
        plans[sibs[0].node] = sibs
        width = sum(s.width for s in sibs)
        notes.append(f"horizontal {what} -> one {_merged_op(sibs)} of width {width}, "
                     f"{t_apart * 1e6:.1f} us -> {wide.seconds * 1e6:.1f} us")
    if not plans:
        return graph, notes, rejected
    merged = {s.node for sibs in plans.values() for s in sibs}
    rw = Rewriter(graph)
    for node in graph.nodes:
        if node in plans:
            _emit(rw, graph, plans[node])
        elif node not in merged:
            rw.copy(node)
    return rw.finish_pruned(), notes, rejected
