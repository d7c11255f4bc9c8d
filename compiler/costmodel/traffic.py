"""Whole-graph totals from the cost model: bytes moved and predicted seconds, node by node.

Run on a fused graph, each kernel node counts once (its inputs read and outputs written once,
from its kernel IR); run on the same graph with the kernels inlined, every node counts as a
kernel of its own, which is what fusion saves against. Nodes that only rename a contiguous
buffer (reshape, squeeze, unsqueeze, ``view`` kernels) move nothing in either case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from effc.ir import Graph, Node, Op

from .roofline import Target, predict_node

ALIASES = (Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE)


@dataclass(frozen=True)
class Traffic:
    kernels: int            # nodes that run code
    bytes: int              # bytes read and written, in total
    weight_bytes: int       # of which reads of constants (weights), the same fused or not
    seconds: float          # predicted, in total
    unknown: int            # kernels the cost model could not price (sizes or op unknown)


def is_alias(node: Node) -> bool:
    return node.op in ALIASES or (node.op is Op.KERNEL and node.attrs["kind"] == "view")


def traffic(graph: Graph, env: Mapping[Any, int], target: Target | None = None) -> Traffic:
    kernels = moved = weights = unknown = 0
    seconds = 0.0
    for node in graph.nodes:
        if node.op is Op.CONSTANT or is_alias(node):
            continue
        kernels += 1
        p = predict_node(node, env, target)
        if p is None:
            unknown += 1
            continue
        f = p.features
        moved += f["bytes"] if "bytes" in f else f["bytes_read"] + f["bytes_written"]
        weights += sum(v.type.numel() * v.type.dtype.itemsize for v in dict.fromkeys(node.inputs)
                       if v.node is not None and v.node.op is Op.CONSTANT)
        seconds += p.seconds
    return Traffic(kernels, moved, weights, seconds, unknown)
