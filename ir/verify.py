"""The IR verifier: checks the invariants every pass must keep.

``verify(graph)`` checks that the graph is SSA in topological order (each use after its one
definition), that every node carries exactly its op's attributes, that every recorded type is
what the op's rule infers, that constants and externs are well formed, and that every size
symbol is bound by a graph input's shape. It raises at the first problem, naming the node and
showing the IR text around it, e.g.

    node %2 (add): input %<undefined> is used before it is defined
       graph(%x: f32[4]) {
         %0 = relu(%x) : f32[4]
         %1 = neg(%0) : f32[4]
    >>   %2 = add(%0, %<undefined>) : f32[4]
         return %2
       }
"""

from __future__ import annotations

from typing import Any, NoReturn

import sympy

from .attrs import InputRef, normalize, symbols_in
from .dtypes import DType
from .graph import Graph, Node, Value
from .ops import Op
from .printer import print_graph
from .shape_rules import infer
from .types import ShapeError, TensorType

_CONTEXT = 3  # lines of IR shown on each side of the offending one


class VerificationError(Exception):
    """The graph breaks an IR invariant; the message names the node and shows the IR near it."""


KERNEL_KINDS = ("pointwise", "reduction", "matmul", "conv", "view", "op", "extern", "patched")


def verify(graph: Graph) -> None:
    """Raise VerificationError if ``graph`` breaks an IR invariant; return None otherwise."""
    _Verifier(graph).run()


class _Verifier:
    def __init__(self, graph: Graph, bound: set[sympy.Symbol] | None = None) -> None:
        self.graph = graph
        self.defined: set[Value] = set()
        self.position = {n: i for i, n in enumerate(graph.nodes)}
        self.bound = graph.symbols() | (bound or set())
        self.text: list[str] | None = None

    def run(self) -> None:
        g = self.graph
        for v in g.inputs:
            if v.node is not None:
                self.fail(None, f"graph input {v!r} is produced by a node")
            if v in self.defined:
                self.fail(None, f"graph input %{v.name} is listed twice")
            self.defined.add(v)
        for i, node in enumerate(g.nodes):
            if self.position[node] != i:
                self.fail(i, "the same node object appears twice in the graph")
            self.check_node(i, node)
        for v in g.outputs:
            if v not in self.defined:
                self.fail(len(g.nodes), f"graph output {v!r} is not defined in the graph")

    def check_node(self, i: int, node: Node) -> None:
        for j, v in enumerate(node.inputs):
            if v in self.defined:
                continue
            if v.node is not None and self.position.get(v.node, -1) > i:
                self.fail(i, f"input {j} is used before it is defined (node order)")
            self.fail(i, f"input {j} ({v!r}) is not defined in this graph")
        for j, v in enumerate(node.outputs):
            if v.node is not node or v.index != j:
                self.fail(i, f"output {j} does not point back at its node")
        missing = [a for a in node.op.attr_names if a not in node.attrs]
        extra = [a for a in node.attrs if a not in node.op.attr_names]
        if missing or extra:
            self.fail(i, f"missing attributes {missing}, unexpected {extra}")
        for k, val in node.attrs.items():
            try:
                normalize(val)
            except TypeError as err:
                self.fail(i, f"attribute {k}: {err}")
        if node.op is Op.CONSTANT:
            self.check_constant(i, node)
        elif node.op is Op.EXTERN:
            self.check_extern(i, node)
        else:
            self.check_types(i, node)
        if node.op is Op.KERNEL:
            self.check_kernel(i, node)
        free: set[sympy.Symbol] = set()
        for v in node.outputs:
            free |= v.type.symbols
        for val in node.attrs.values():
            free |= symbols_in(val)
        if free - self.bound:
            names = ", ".join(sorted(map(str, free - self.bound)))
            self.fail(i, f"size symbols {names} are not bound by the graph inputs' shapes")
        self.defined.update(node.outputs)

    def check_types(self, i: int, node: Node) -> None:
        try:
            inferred = infer(node.op, [v.type for v in node.inputs], node.attrs)
        except (ShapeError, TypeError, ValueError, KeyError, IndexError) as err:
            self.fail(i, f"the shape rule rejects the node: {err}")
        if len(inferred) != len(node.outputs):
            self.fail(i, f"records {len(node.outputs)} outputs, the rule infers {len(inferred)}")
        for j, (v, t) in enumerate(zip(node.outputs, inferred)):
            if not v.type.same_as(t):
                self.fail(i, f"output {j} is recorded as {v.type}, the rule infers {t}")

    def check_constant(self, i: int, node: Node) -> None:
        name = node.attrs["name"]
        if node.inputs or len(node.outputs) != 1:
            self.fail(i, "a constant has no inputs and one output")
        if not isinstance(name, str) or name not in self.graph.constants:
            self.fail(i, f"constant {name!r} is not in the graph's constant table")
        tensor = self.graph.constants[name]
        try:
            actual = TensorType(DType.from_torch(tensor.dtype), tuple(tensor.shape))
        except TypeError as err:
            self.fail(i, f"constant {name!r}: {err}")
        if not actual.same_as(node.output.type):
            self.fail(i, f"constant {name!r} holds {actual}, the node records {node.output.type}")

    def check_extern(self, i: int, node: Node) -> None:
        if not isinstance(node.attrs["target"], str):
            self.fail(i, f"extern target must be a string, got {node.attrs['target']!r}")
        for ref in _input_refs((node.attrs["args"], node.attrs["kwargs"])):
            if not 0 <= ref.index < len(node.inputs):
                self.fail(i, f"${ref.index} refers past the node's {len(node.inputs)} inputs")

    def check_kernel(self, i: int, node: Node) -> None:
        if node.attrs["kind"] not in KERNEL_KINDS:
            self.fail(i, f"kernel kind {node.attrs['kind']!r} is not one of {', '.join(KERNEL_KINDS)}")
        try:
            _Verifier(node.attrs["body"], self.bound).run()
        except VerificationError as err:
            self.fail(i, f"in the body of kernel {node.attrs['name']}: {err}")

    def fail(self, index: int | None, msg: str) -> NoReturn:
        """Raise with the IR text around node ``index`` (len(nodes) means the return line)."""
        if self.text is None:
            try:
                self.text = print_graph(self.graph).splitlines()
            except Exception:  # a node the printer cannot show: report without context
                self.text = []
        if index is None or not self.text:
            raise VerificationError(msg + ("\n" + "\n".join(self.text) if self.text else ""))
        # lines indented exactly two spaces are the nodes and the return (bodies nest deeper)
        rows = [r for r, t in enumerate(self.text) if t.startswith("  ") and t[2:3] != " "]
        row = rows[index] if index < len(rows) else len(self.text) - 1
        label = "return" if index == len(self.graph.nodes) else self._label(index)
        lo, hi = max(0, row - _CONTEXT), min(len(self.text), row + _CONTEXT + 1)
        shown = [(">> " if r == row else "   ") + self.text[r] for r in range(lo, hi)]
        raise VerificationError(f"{label}: {msg}\n" + "\n".join(shown))

    def _label(self, index: int) -> str:
        node = self.graph.nodes[index]
        rows = [t for t in self.text or [] if t.startswith("  ") and t[2:3] != " "]
        lhs = rows[index].split(" = ", 1)[0].strip() if index < len(rows) else "?"
        return f"node {lhs} ({node.op}, #{index})"


def _input_refs(value: Any) -> list[InputRef]:
    if isinstance(value, InputRef):
        return [value]
    if isinstance(value, (tuple, list)):
        return [r for v in value for r in _input_refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _input_refs(v)]
    return []
