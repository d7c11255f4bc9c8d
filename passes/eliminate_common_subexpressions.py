"""Common subexpression elimination: a pure node that repeats an earlier one is replaced by it.

    %0 = exp(%x) : f32[4]
    %1 = exp(%x) : f32[4]
    %2 = add(%0, %1) : f32[4]
    return %2
  ->
    %0 = exp(%x) : f32[4]
    %1 = add(%0, %0) : f32[4]
    return %1

Two nodes are the same computation when they share the op, the (already merged) input values
and the attributes, compared through ``attrs.freeze`` (floats by their bits, so 0.0 and -0.0
stay apart). Every op but ``extern`` is pure (``ops.PURE``); an extern may be random (dropout)
and is never merged. Constant nodes with the same name are one constant. For ops whose
operands commute exactly in IEEE arithmetic (add, mul, comparisons for equality, logical and
bitwise ops), the order of the two inputs does not matter.
"""

from __future__ import annotations

from typing import Hashable

from effc.ir import Graph, Node, Op, Value
from effc.ir.attrs import freeze
from effc.ir.ops import PURE
from effc.ir.rewrite import Rewriter
from effc.options import Options

from .manager import PassResult

NAME = "eliminate_common_subexpressions"

# Not maximum/minimum: which zero they return for (0.0, -0.0) may depend on operand order.
COMMUTATIVE = frozenset({Op.ADD, Op.MUL, Op.EQ, Op.NE, Op.LOGICAL_AND, Op.LOGICAL_OR,
                         Op.LOGICAL_XOR, Op.BITWISE_AND, Op.BITWISE_OR, Op.BITWISE_XOR})


def _key(node: Node, ins: list[Value]) -> Hashable:
    if node.op is Op.CONSTANT:
        return (Op.CONSTANT, node.attrs["name"])
    # Sorting by id gives one order for one multiset of inputs; which order does not matter.
    operands = tuple(sorted(ins, key=id)) if node.op in COMMUTATIVE else tuple(ins)
    return (node.op, operands, freeze(node.attrs))


def run(graph: Graph, options: Options) -> PassResult:
    rw = Rewriter(graph)
    seen: dict[Hashable, Node] = {}
    notes: list[str] = []
    for node in graph.nodes:
        if node.op not in PURE:
            rw.copy(node)
            continue
        ins = rw.map(node.inputs)
        key = _key(node, ins)
        first = seen.get(key)
        if first is None:
            seen[key] = rw.copy(node, ins)
            continue
        for old, new in zip(node.outputs, first.outputs):
            rw.replace(old, new)
        what = f'constant "{node.attrs["name"]}"' if node.op is Op.CONSTANT else str(node.op)
        notes.append(f"merged {what} : {', '.join(str(v.type) for v in node.outputs)} "
                     f"into an identical earlier node")
    if not notes:
        return PassResult(graph, False)
    return PassResult(rw.finish(), True, tuple(notes))
