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
arithmetic, never copies. A "trivial reshape" is a RESHAPE, SQUEEZE or UNSQUEEZE that only
inserts or removes size-1 dims: its input and output shapes are equal once every (static)
1 is dropped, symbolic dims compared with ``dims_equal``. It keeps the element order, and
shapes "equal up to size-1 dims" index the same element when their non-1 dims take the same
values in order and their 1 dims take 0 (``align_index`` in kernel_views.py).

- ``pointwise``: pointwise and view nodes. Every body output has the same shape, which is the
  iteration domain; each node is computed at the index its consumers ask for (a cheap
  pointwise node reached through two different views is computed twice, never stored).
- ``reduction``: pointwise and view nodes plus reducing nodes (REDUCE family, SOFTMAX,
  LOG_SOFTMAX, LAYER_NORM, RMS_NORM) that all share one reduction domain: the same input shape
  F and the same reduced dims R (a norm reduces its trailing normalized dims; softmax its dim).
  A value computed from a reduction result passes only through pointwise nodes and trivial
  reshapes, and has shape F or F with R removed, up to size-1 dims (its level: full or
  outer); a reducing node reads such a value only of shape F exactly. A reduction's result
  is used only at its own outer index: broadcasting within one level keeps it there (the
  non-1 dims stay in order), and an outer value broadcast into a full one must land on F's
  kept dims, in order (so [1, s, 1] or [s, 1] against F = [1, s, d] reducing d is fine,
  [1, s] is not); any other view that moves it is refused. Every body output has shape F
  (computed inside the loop over R) or F with R removed or kept as size 1 (computed once per
  outer index), each up to size-1 dims: e.g. layer norm on [1, s, d] reshaped to [s, d].
- ``matmul``: one MATMUL, ADDMM or LINEAR node; chains of view nodes between kernel inputs and
  its operands (a transposed or reshaped operand is read through index arithmetic); and an
  epilogue of pointwise nodes and trivial reshapes applied to its result, every one of the
  matmul's output shape up to size-1 dims, whose other operands come from kernel inputs
  through pointwise and view nodes (bias, residual, scale). The domain is the matmul's output
  shape; every body output has that shape up to size-1 dims, and is stored at the index
  ``align_index`` maps the domain index to (e.g. addmm -> [1, s, n] -> gelu -> [s, n]).
- ``conv``: one CONVOLUTION node reading kernel inputs directly or through trivial reshapes,
  and an epilogue as for matmul; every body output has the convolution's output shape up to
  size-1 dims.
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
