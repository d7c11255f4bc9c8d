"""Batch-norm folding: an inference batch norm after a convolution or linear layer becomes
part of that layer's weight and bias.

    %0 = constant() {name="w"} : f32[6, 5]
    %1 = constant() {name="b"} : f32[6]
    %2 = linear(%x, %0, %1) : f32[4, 6]
    %3 = constant() {name="mean"} : f32[6]
    %4 = constant() {name="var"} : f32[6]
    %5 = batch_norm(%2, %3, %4) {eps=1e-05, has_weight=false, has_bias=false} : f32[4, 6]
    return %5
  ->
    %0 = constant() {name="w.bn"} : f32[6, 5]
    %1 = constant() {name="b.bn"} : f32[6]
    %2 = linear(%x, %0, %1) : f32[4, 6]
    return %2

[Note: batch-norm folding]
batch_norm(y) = (y - mean) * s + beta with s = gamma / sqrt(var + eps), per channel (axis 1).
When y = W x + b is linear in x with one output channel per row of W, that is
(W * s) x + ((b - mean) * s + beta): scale each output channel's weights by s and fold the
rest into the bias. Where the output channel lives in the weight:
- convolution: axis 0 of W; transposed convolution: W is (Cin, Cout/groups, ...), so channel
  g*(Cout/groups) + j of group g is W[g*Cin/groups:(g+1)*Cin/groups, j].
- linear(x, W, b): axis 0 of W; addmm(b, x, Wt) and matmul(x, Wt): axis 1 of Wt. These need a
  rank-2 activation, where the batch norm's channel axis 1 is the feature axis. A matmul has
  no bias, so it becomes addmm(b', x, Wt').
The folded tensors are computed in float64 and cast back to the weight's dtype, so folding
rounds once, where the unfolded graph rounds after the layer and again in the batch norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effc.ir import Graph, Node, Op, Value
from effc.ir.rewrite import Rewriter
from effc.options import Options

from .manager import PassResult

NAME = "fold_batchnorm"

LAYERS = (Op.CONVOLUTION, Op.LINEAR, Op.ADDMM, Op.MATMUL)


@dataclass(frozen=True)
class Plan:
    layer: Node
    x: Value                  # the layer's activation input
    weight: Node              # constant node
    bias: Node | None         # constant node
    scale: torch.Tensor       # s, float64, one per channel
    shift: torch.Tensor       # beta - mean * s, float64


def _const(v: Value) -> Node | None:
    return v.node if v.node is not None and v.node.op is Op.CONSTANT else None


def _plan(graph: Graph, bn: Node, users: dict[Value, list[Node]]) -> Plan | str | None:
    """What folding ``bn`` into its producer takes, a reason it cannot, or None (no pattern)."""
    y = bn.inputs[0]
    layer = y.node
    if layer is None or layer.op not in LAYERS:
        return None
    if len(users.get(y, [])) != 1 or y in graph.outputs:
        return f"the {layer.op} output has other users, which need it without the batch norm"
    b_in: Value | None
    if layer.op is Op.ADDMM:
        b_in, x, w_in = layer.inputs
    else:
        x, w_in = layer.inputs[0], layer.inputs[1]
        b_in = layer.inputs[2] if len(layer.inputs) > 2 else None
    params = list(bn.inputs[1:])
    names = ["mean", "var"] + (["gamma"] if bn.attrs["has_weight"] else []) + (
        ["beta"] if bn.attrs["has_bias"] else [])
    for name, v in [("weight", w_in), ("bias", b_in), *zip(names, params)]:
        if v is not None and _const(v) is None:
            return f"the {name} is not a constant"
    dtypes = {v.type.dtype for v in [y, w_in, b_in, *params] if v is not None}
    if len(dtypes) != 1:
        return f"dtypes differ: {sorted(map(str, dtypes))}"
    if layer.op is not Op.CONVOLUTION and y.type.rank != 2:
        return (f"the batch norm's channel axis 1 of {y.type} is not the {layer.op} output-feature "
                f"axis (the last)")
    if layer.op is Op.MATMUL and w_in.type.rank != 2:
        return "the matmul weight is not a matrix"
    channels = y.type.shape[1]
    if not isinstance(channels, int) or any(
            p.type.rank != 1 or p.type.shape[0] != channels for p in params):
        return f"batch-norm parameters are not one per channel of {y.type}"
    t = {n: graph.constant(v.node).double() for n, v in zip(names, params) if v.node is not None}
    gamma = t.get("gamma", torch.ones_like(t["mean"]))
    beta = t.get("beta", torch.zeros_like(t["mean"]))
    scale = gamma / torch.sqrt(t["var"] + bn.attrs["eps"])
    weight, bias = _const(w_in), _const(b_in) if b_in is not None else None
    assert weight is not None
    return Plan(layer, x, weight, bias, scale, beta - t["mean"] * scale)


def _fold(graph: Graph, p: Plan) -> tuple[torch.Tensor, torch.Tensor]:
    """The new weight and bias: W * s on the output-channel axis; b * s + shift."""
    w = graph.constant(p.weight)
    w64, s = w.double(), p.scale
    op, attrs = p.layer.op, p.layer.attrs
    if op is Op.CONVOLUTION and attrs["transposed"]:
        g = attrs["groups"]
        grouped = w64.reshape(g, w.shape[0] // g, w.shape[1], *w.shape[2:])
        view = [g, 1, w.shape[1]] + [1] * (w.dim() - 2)
        new_w = (grouped * s.reshape(view)).reshape(w.shape)
    elif op in (Op.CONVOLUTION, Op.LINEAR):
        new_w = w64 * s.reshape([-1] + [1] * (w.dim() - 1))
    else:  # addmm / matmul: Wt is (in, out)
        new_w = w64 * s.reshape(1, -1)
    b64 = torch.zeros_like(s)
    if p.bias is not None:
        b64 = graph.constant(p.bias).double()
        if op is Op.ADDMM:
            beta = attrs["beta"]
            b64 = b64 * beta if beta != 0 else torch.zeros_like(b64)  # addmm ignores b when beta=0
    new_b = b64 * s + p.shift
    return new_w.to(w.dtype), new_b.to(w.dtype)


def run(graph: Graph, options: Options) -> PassResult:
    users = graph.users()
    plans: dict[Node, Plan] = {}
    rejected: list[str] = []
    for node in graph.nodes:
        if node.op is Op.BATCH_NORM:
            found = _plan(graph, node, users)
            if isinstance(found, str):
                assert node.inputs[0].node is not None
                rejected.append(f"batch_norm after {node.inputs[0].node.op} : "
                                f"{node.output.type}: {found}")
            elif found is not None:
                plans[node] = found
    if not plans:
        return PassResult(graph, False, (), tuple(rejected))
    folded_layers = {p.layer for p in plans.values()}
    rw = Rewriter(graph)
    notes: list[str] = []
    for node in graph.nodes:
        if node in folded_layers:
            continue  # rebuilt at its batch norm, its only user
        plan = plans.get(node)
        if plan is None:
            rw.copy(node)
            continue
        new_w, new_b = _fold(graph, plan)
        wname = plan.weight.attrs["name"]
        bname = plan.bias.attrs["name"] if plan.bias is not None else f"{wname}.bias"
        w = rw.b.constant(new_w, f"{wname}.bn")
        b = rw.b.constant(new_b, f"{bname}.bn")
        x, layer = rw[plan.x], plan.layer
        if layer.op is Op.ADDMM:
            out = rw.b.op(Op.ADDMM, [b, x, w], beta=1.0, alpha=layer.attrs["alpha"])
        elif layer.op is Op.MATMUL:
            out = rw.b.op(Op.ADDMM, [b, x, w], beta=1.0, alpha=1.0)
        else:
            out = rw.b.node(layer.op, [x, w, b], layer.attrs).output
        rw.replace(node.output, out)
        notes.append(f"folded batch_norm : {node.output.type} into {layer.op} weight {wname}")
    return PassResult(rw.finish_pruned(), True, tuple(notes), tuple(rejected))
