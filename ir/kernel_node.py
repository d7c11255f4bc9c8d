"""Kernel nodes: a fused group of IR nodes held as one node whose ``body`` is their subgraph.

    %4 = kernel(%x, %b) {kind="pointwise", name="k0"} : f32[8, 64]
        graph(%a0: f32[8, 64], %a1: f32[64]) {
          %0 = add(%a0, %a1) : f32[8, 64]
          %1 = relu(%0) : f32[8, 64]
          return %1
        }

The body never holds constants: a weight the group reads is one of the kernel's inputs, so
the outer graph keeps one constant table and the memory planner sees every buffer.

[Note: kernel groups]
What a kernel's body may hold, by ``kind``. The fusion pass (passes/fuse.py) only forms these
groups, and the kernel-IR lowering (ir/kernel_lower.py) lowers exactly these, so the two agree
through this note. "Pointwise nodes" are the UNARY, BINARY, COMPARE, TERNARY and CAST families,
FULL and ARANGE, and BATCH_NORM (inference: a per-channel affine map). "View nodes" are RESHAPE,
PERMUTE, EXPAND, SQUEEZE, UNSQUEEZE, SLICE and SELECT: inside a kernel they become index
arithmetic, never copies.

- ``pointwise``: pointwise and view nodes. Every body output has the same shape, which is the
  iteration domain; each node is computed at the index its consumers ask for (a cheap
  pointwise node reached through two different views is computed twice, never stored).
- ``reduction``: pointwise and view nodes plus reducing nodes (REDUCE family, SOFTMAX,
  LOG_SOFTMAX, LAYER_NORM, RMS_NORM) that all share one reduction domain: the same input shape
  F and the same reduced dims R (a norm reduces its trailing normalized dims; softmax its dim).
  Every body output has shape F (computed inside the loop over R) or F with R removed or kept
  as size 1 (computed once per outer index). A reduction's result is used only at its own
  outer index (broadcast back over R is fine; a view that moves it elsewhere is not).
- ``matmul``: one MATMUL, ADDMM or LINEAR node; chains of view nodes between kernel inputs and
  its operands (a transposed or reshaped operand is read through index arithmetic); and an
  epilogue of pointwise nodes applied to its result, whose other operands come from kernel
  inputs through pointwise and view nodes (bias, residual, scale). Every body output has the
  matmul's output shape.
- ``conv``: one CONVOLUTION node reading kernel inputs directly, and an epilogue as for matmul;
  every body output has the convolution's output shape.
- ``view``: one RESHAPE, SQUEEZE or UNSQUEEZE node: buffers are contiguous, so its output
  aliases its input and no code runs.
- ``op``: any other single node (pooling, gather, cat, pad, scan, group norm, attention, a
  lone standalone node of a kind above that stayed alone is still given its own kind).
- ``extern``: one EXTERN node (runs the torch op).
- ``patched``: a stage of a CNN run tile by tile (passes/schedule_patches.py); ``params``
  holds the tile grid. Its body is a subgraph of convolution, pooling, pointwise and view
  nodes.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from .graph import Graph, GraphBuilder, Node, Value
from .ops import Op
from .rewrite import Rewriter


def copy_node(b: GraphBuilder, node: Node, inputs: Sequence[Value]) -> Node:
    """Rebuild ``node`` in ``b`` over ``inputs`` (types are inferred again, except extern's)."""
    if node.op is Op.CONSTANT:
        raise ValueError("constants are copied with GraphBuilder.adopt_constant")
    types = [v.type for v in node.outputs] if node.op is Op.EXTERN else None
    return b.node(node.op, inputs, node.attrs, types)


def extract_body(nodes: Sequence[Node], outputs: Sequence[Value]) -> tuple[Graph, list[Value]]:
    """The subgraph of ``nodes`` (in order) computing ``outputs``; and the outer values its
    inputs stand for, in order of first use."""
    members = set(nodes)
    b = GraphBuilder()
    mapping: dict[Value, Value] = {}
    outer: list[Value] = []
    for node in nodes:
        if node.op is Op.CONSTANT:
            raise ValueError("a kernel body holds no constants; pass them as inputs")
        ins = []
        for v in node.inputs:
            if v not in mapping:
                if v.node in members:
                    raise ValueError(f"{node.op} uses a value of the group before it is made")
                mapping[v] = b.input(f"a{len(outer)}", v.type)
                outer.append(v)
            ins.append(mapping[v])
        new = copy_node(b, node, ins)
        mapping.update(zip(node.outputs, new.outputs))
    return b.build([mapping[v] for v in outputs]), outer


def add_kernel(b: GraphBuilder, kind: str, name: str, inputs: Sequence[Value], body: Graph,
               params: dict | None = None) -> Node:
    return b.node(Op.KERNEL, inputs, {"kind": kind, "name": name, "params": params or {}, "body": body})


def kernels(graph: Graph) -> Iterable[Node]:
    return (n for n in graph.nodes if n.op is Op.KERNEL)


def inline_kernels(graph: Graph, which: Callable[[Node], bool] | None = None) -> Graph:
    """``graph`` with every kernel node (or those ``which`` picks) replaced by its body's nodes:
    undoes fusion."""
    rw = Rewriter(graph)
    for node in graph.nodes:
        if node.op is Op.KERNEL and (which is None or which(node)):
            for old, new in zip(node.outputs, _inline(rw.b, node.attrs["body"], rw.map(node.inputs))):
                rw.replace(old, new)
        else:
            rw.copy(node)
    return rw.finish()


def _inline(b: GraphBuilder, body: Graph, ins: Sequence[Value]) -> list[Value]:
    inner: dict[Value, Value] = dict(zip(body.inputs, ins))
    for node in body.nodes:
        args = [inner[v] for v in node.inputs]
        outs = _inline(b, node.attrs["body"], args) if node.op is Op.KERNEL else copy_node(b, node, args).outputs
        inner.update(zip(node.outputs, outs))
    return [inner[v] for v in body.outputs]
