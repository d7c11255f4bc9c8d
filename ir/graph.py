"""Values, nodes and graphs, and the builder every frontend and pass uses to make them.

A graph is SSA: each value is produced once, by a node or as a graph input, and nodes are kept
in topological order. Graphs are treated as immutable; a pass builds a new one.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

import sympy
import torch

from . import attrs as attr_mod
from .dtypes import DType
from .ops import Op
from .shape_rules import infer
from .types import ShapeError, TensorType


class Value:
    """An SSA value: produced by ``node`` (output ``index``), or a graph input when node is None."""

    __slots__ = ("type", "node", "index", "name")

    def __init__(self, type: TensorType, node: "Node | None" = None, index: int = 0,
                 name: str | None = None) -> None:
        self.type = type
        self.node = node
        self.index = index
        self.name = name

    def __repr__(self) -> str:
        return f"Value({self.name or hex(id(self))}: {self.type})"


class Node:
    __slots__ = ("op", "inputs", "attrs", "outputs")

    def __init__(self, op: Op, inputs: Sequence[Value], attrs: Mapping[str, Any],
                 out_types: Sequence[TensorType]) -> None:
        self.op = op
        self.inputs = tuple(inputs)
        self.attrs = dict(attrs)
        self.outputs = tuple(Value(t, self, i) for i, t in enumerate(out_types))

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise ValueError(f"{self.op} has {len(self.outputs)} outputs")
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"Node({self.op}, {len(self.inputs)} inputs)"


class Graph:
    def __init__(self, inputs: Sequence[Value], nodes: Sequence[Node], outputs: Sequence[Value],
                 constants: Mapping[str, torch.Tensor] | None = None) -> None:
        self.inputs = tuple(inputs)
        self.nodes = tuple(nodes)
        self.outputs = tuple(outputs)
        self.constants = dict(constants or {})

    def __str__(self) -> str:
        from .printer import print_graph
        return print_graph(self)

    def users(self) -> dict[Value, list[Node]]:
        out: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v, []).append(n)
        return out

    def symbols(self) -> set[sympy.Symbol]:
        """Symbols that size the graph's inputs (bound at call time from input shapes)."""
        out: set[sympy.Symbol] = set()
        for v in self.inputs:
            out |= v.type.symbols
        return out

    def constant(self, node: Node) -> torch.Tensor:
        return self.constants[node.attrs["name"]]

    def count(self, op: Op) -> int:
        return sum(1 for n in self.nodes if n.op is op)


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.]")


def sanitize_name(name: str) -> str:
    """Make a model-provided name safe for IR text and generated code: [A-Za-z0-9_.] only."""
    s = _NAME_BAD.sub("_", name)
    if not s or not (s[0].isalpha() or s[0] == "_"):
        s = "_" + s
    return s


class GraphBuilder:
    """Builds a graph node by node; each node's types come from its op's rule."""

    def __init__(self) -> None:
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.constants: dict[str, torch.Tensor] = {}
        self._names: set[str] = set()
        self._reserved: set[str] = set()

    def reserve(self, names: Iterable[str]) -> None:
        """Keep generated names clear of ``names`` (constants a copy will adopt later)."""
        self._reserved |= set(names)

    def _unique(self, hint: str) -> str:
        base = sanitize_name(hint)
        name, i = base, 1
        while name in self._names or name in self._reserved:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def input(self, name: str, type: TensorType) -> Value:
        v = Value(type, None, 0, self._unique(name))
        self.inputs.append(v)
        return v

    def constant(self, tensor: torch.Tensor, name: str = "c") -> Value:
        """A graph constant holding ``tensor`` itself (no copy), under a fresh name."""
        return self._add_constant(self._unique(name), tensor)

    def scalar(self, value: bool | int | float, dtype: DType) -> Value:
        """A rank-0 tensor holding a python scalar, as a ``full`` node."""
        return self.op(Op.FULL, [], shape=(), value=value, dtype=dtype)

    def node(self, op: Op, inputs: Sequence[Value], attrs: Mapping[str, Any],
             out_types: Sequence[TensorType] | None = None) -> Node:
        order = {k: i for i, k in enumerate(op.attr_names)}
        attrs = {k: attr_mod.normalize(attrs[k]) for k in sorted(attrs, key=lambda k: order.get(k, 99))}
        if op is Op.CONSTANT:
            raise ValueError("use GraphBuilder.constant to add constants")
        if op is Op.EXTERN:
            if out_types is None:
                raise ShapeError("extern nodes need explicit output types")
            types = tuple(out_types)
        else:
            types = infer(op, [v.type for v in inputs], attrs)
        node = Node(op, inputs, attrs, types)
        self.nodes.append(node)
        return node

    def op(self, op: Op, inputs: Sequence[Value], **attrs: Any) -> Value:
        """Add a single-output node and return its value."""
        return self.node(op, inputs, attrs).output

    def adopt_constant(self, name: str, tensor: torch.Tensor) -> Value:
        """Add a constant under exactly ``name`` (used when copying graphs)."""
        if name in self._names:
            raise ValueError(f"duplicate constant name {name!r}")
        self._names.add(name)
        return self._add_constant(name, tensor)

    def _add_constant(self, name: str, tensor: torch.Tensor) -> Value:
        self.constants[name] = tensor
        t = TensorType(DType.from_torch(tensor.dtype), tuple(tensor.shape))
        node = Node(Op.CONSTANT, (), {"name": name}, (t,))
        self.nodes.append(node)
        return node.output

    def build(self, outputs: Iterable[Value]) -> Graph:
        return Graph(self.inputs, self.nodes, list(outputs), self.constants)


def used_constants(nodes: Iterable[Node], constants: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n.attrs["name"]: constants[n.attrs["name"]] for n in nodes if n.op is Op.CONSTANT}
