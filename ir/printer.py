"""Stable text for graphs: one node per line, the golden format of tests and dumps.

    graph(%x: f32[s0, 64], %w: f32[64, 64]) {
      %0 = matmul(%x, %w) : f32[s0, 64]
      %1 = gelu(%0) {approximate="none"} : f32[s0, 64]
      return %1
    }

Attribute values: ``none``, ``true``/``false``, integers, floats (always with ``.``, ``e``,
``inf`` or ``nan``), JSON strings, dtype names (``f32``), size expressions (``64*s0``),
lists ``[..]``, dicts ``{"key": value}``, ``$i`` for an extern's i-th input and dotted
``torch.*`` names for torch singletons. ``parser.parse_graph`` reads this back.
"""

from __future__ import annotations

import json
import math
from typing import Any

import sympy

from .attrs import InputRef, TorchObj
from .dtypes import DType
from .graph import Graph, Value
from .types import dim_str


def format_attr(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        r = repr(v)
        return r if any(c in r for c in ".e") else r + ".0"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=True)
    if isinstance(v, DType):
        return v.value
    if isinstance(v, InputRef):
        return f"${v.index}"
    if isinstance(v, TorchObj):
        return v.name
    if isinstance(v, tuple):
        return "[" + ", ".join(format_attr(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {format_attr(x)}" for k, x in v.items()) + "}"
    if isinstance(v, sympy.Basic):
        return dim_str(v)  # type: ignore[arg-type]
    raise TypeError(f"cannot print attribute {v!r}")


class Namer:
    """Names values for printing: inputs keep their names, node outputs are numbered."""

    def __init__(self, graph: Graph) -> None:
        self.names: dict[Value, str] = {v: v.name or f"in{i}" for i, v in enumerate(graph.inputs)}
        self.next = 0

    def define(self, v: Value) -> str:
        name = str(self.next)
        self.next += 1
        self.names[v] = name
        return "%" + name

    def __getitem__(self, v: Value) -> str:
        try:
            return "%" + self.names[v]
        except KeyError:
            return "%<undefined>"


def print_graph(graph: Graph) -> str:
    return "\n".join(_lines(graph, "")) + "\n"


def _lines(graph: Graph, indent: str) -> list[str]:
    """A kernel node's body follows its line, indented two more spaces than the node."""
    namer = Namer(graph)
    ins = ", ".join(f"{namer[v]}: {v.type}" for v in graph.inputs)
    lines = [f"{indent}graph({ins}) {{"]
    for node in graph.nodes:
        lhs = ", ".join(namer.define(v) for v in node.outputs)
        args = ", ".join(namer[v] for v in node.inputs)
        shown = [k for k in node.attrs if k != "body"]
        attrs = ""
        if shown:
            attrs = " {" + ", ".join(f"{k}={format_attr(node.attrs[k])}" for k in shown) + "}"
        types = ", ".join(str(v.type) for v in node.outputs)
        lines.append(f"{indent}  {lhs} = {node.op.value}({args}){attrs} : {types}")
        if "body" in node.attrs:
            lines.extend(_lines(node.attrs["body"], indent + "    "))
    lines.append(f"{indent}  return " + ", ".join(namer[v] for v in graph.outputs))
    lines.append(f"{indent}}}")
    return lines
