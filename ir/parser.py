"""Reads the text that ``printer.print_graph`` writes back into a graph.

    graph(%x: f32[s0, 64]) {
      %0 = constant() {name="w"} : f32[64, 64]
      %1 = matmul(%x, %0) : f32[s0, 64]
      return %1
    }

Nodes are rebuilt through ``GraphBuilder``, so every type is inferred again by the op's rule and
then checked against the type the text records. The text may come from a file a user handed us,
so nothing in it is ever passed to ``eval`` or ``sympify``: size expressions go through the small
recursive-descent parser below, which builds sympy objects directly. [Note: no eval]
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping, NoReturn

import sympy
import torch

from .attrs import InputRef, TorchObj
from .dtypes import DType
from .graph import Graph, GraphBuilder, Value
from .ops import Op
from .types import Dim, ShapeError, TensorType, as_dim, size_symbol


class ParseError(ValueError):
    """Malformed IR text; the message names the line and shows it."""


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<float>\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
  | (?P<int>\d+)
  | (?P<value>%[A-Za-z0-9_.]+)
  | (?P<ref>\$\d+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>\*\*|[-+*/()\[\]{},:=])
""", re.VERBOSE)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DTYPES = {d.value: d for d in DType}
_FUNCS: dict[str, Callable[..., Any]] = {
    "floor": sympy.floor, "ceiling": sympy.ceiling, "Max": sympy.Max, "Min": sympy.Min,
    "Mod": sympy.Mod,
}
_FUNC_ARITY = {"floor": (1, 1), "ceiling": (1, 1), "Max": (1, 99), "Min": (1, 99), "Mod": (2, 2)}
_EXPR_OPS = {"+", "-", "*", "/", "**"}
# Bounds that keep hostile text from costing unbounded time or stack: nesting of brackets and
# parentheses, and exponents (2**10**9 would otherwise compute a billion-bit integer).
_MAX_DEPTH = 64
_MAX_EXPONENT = 64


class _Line:
    """The tokens of one line and a cursor over them; errors point at the current token."""

    def __init__(self, lineno: int, text: str) -> None:
        self.lineno, self.text = lineno, text
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                self.fail(f"unexpected character {text[pos]!r}", pos)
            if m.lastgroup != "ws":
                self.toks.append((m.lastgroup or "", m.group(), pos))
            pos = m.end()
        self.i = 0

    def fail(self, msg: str, col: int | None = None) -> NoReturn:
        if col is None:
            col = self.toks[self.i][2] if self.i < len(self.toks) else len(self.text)
        caret = f"\n    {' ' * col}^" if col else ""  # column 0 means the whole line
        raise ParseError(f"line {self.lineno}: {msg}\n    {self.text}{caret}")

    def fail_prev(self, msg: str) -> NoReturn:
        """Fail pointing at the token just consumed."""
        self.i -= 1
        self.fail(msg)

    def peek(self, ahead: int = 0) -> tuple[str, str]:
        j = self.i + ahead
        return self.toks[j][:2] if j < len(self.toks) else ("end", "")

    def next(self) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "end":
            self.fail("unexpected end of line")
        self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        if self.peek() == ("punct", text) or self.peek() == ("name", text):
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            self.fail(f"expected {text!r}, found {self.peek()[1] or 'end of line'!r}")

    def expect_end(self) -> None:
        if self.peek()[0] != "end":
            self.fail(f"unexpected {self.peek()[1]!r}")

    def comma_list(self, close: str, item: Callable[[], Any]) -> list[Any]:
        """``item, item, ...`` up to and including ``close``."""
        out: list[Any] = []
        if self.accept(close):
            return out
        while True:
            out.append(item())
            if self.accept(close):
                return out
            self.expect(",")

    # -- size expressions: sum := product (('+'|'-') product)*,
    #    product := ('-'|'+')* unary (('*'|'/') unary)*, unary := '-' unary | power,
    #    power := atom ('**' unary)?, atom := int | name | call | '(' sum ')'

    def expr(self, depth: int = 0) -> sympy.Expr:
        if depth > _MAX_DEPTH:
            self.fail("expression nested too deeply")
        out = self._product(depth)
        while self.peek() in (("punct", "+"), ("punct", "-")):
            sign = self.next()[1]
            rhs = self._product(depth)
            out = out + rhs if sign == "+" else out - rhs
        return out

    def _product(self, depth: int) -> sympy.Expr:
        # One Mul of all the factors, the way sympy holds a printed term: multiplying pairwise
        # would distribute a number over a sum (-(s0-1)*x -> (1-s0)*x) and print differently.
        factors: list[sympy.Expr] = []
        while self.peek() in (("punct", "-"), ("punct", "+")):
            if self.next()[1] == "-":
                factors.append(sympy.Integer(-1))
        factors.append(self._unary(depth))
        while self.peek() in (("punct", "*"), ("punct", "/")):
            op = self.next()[1]
            rhs = self._unary(depth)
            if op == "/" and rhs == 0:
                self.fail("division by zero")
            factors.append(rhs if op == "*" else sympy.Pow(rhs, -1))
        return sympy.Mul(*factors)

    def _unary(self, depth: int) -> sympy.Expr:
        if self.accept("-"):
            return -self._unary(depth + 1)
        if self.accept("+"):
            return self._unary(depth + 1)
        base = self._atom(depth)
        if not self.accept("**"):
            return base
        exp = self._unary(depth + 1)
        if not (exp.is_Integer and abs(int(exp)) <= _MAX_EXPONENT):
            self.fail(f"exponent {exp} is not a small integer")
        if base == 0 and exp < 0:
            self.fail("division by zero")
        if base.is_Integer and int(base).bit_length() * abs(int(exp)) > 4096:
            self.fail("integer power too large")  # (10**40)**64**64... would never finish
        return base ** exp

    def _atom(self, depth: int) -> sympy.Expr:
        kind, text = self.next()
        if kind == "int":
            if len(text) > 40:  # no size needs more; keeps int() and sympy arithmetic cheap
                self.fail_prev("integer literal too long")
            return sympy.Integer(int(text))
        if kind == "punct" and text == "(":
            out = self.expr(depth + 1)
            self.expect(")")
            return out
        if kind == "name" and text in _FUNCS:
            self.expect("(")
            args = self.comma_list(")", lambda: self.expr(depth + 1))
            lo, hi = _FUNC_ARITY[text]
            if not lo <= len(args) <= hi:
                self.fail_prev(f"{text} takes {lo if lo == hi else f'{lo} or more'} arguments")
            if text == "Mod" and args[1] == 0:
                self.fail("Mod by zero")
            return _FUNCS[text](*args)
        if kind == "name" and self.peek() == ("punct", "("):
            self.fail_prev(f"unknown function {text!r} (size expressions use {', '.join(_FUNCS)})")
        if kind == "name" and _SYMBOL.fullmatch(text):
            return size_symbol(text)
        self.fail_prev(f"expected a size expression, found {text!r}")

    def dim(self) -> Dim:
        e = self.expr()
        try:
            return as_dim(e)
        except ShapeError as err:
            self.fail(str(err))

    def type(self) -> TensorType:
        kind, name = self.next()
        if kind != "name" or name not in _DTYPES:
            self.fail_prev(f"expected a dtype, found {name!r}")
        self.expect("[")
        shape = self.comma_list("]", self.dim)
        try:
            return TensorType(_DTYPES[name], tuple(shape))
        except ShapeError as err:
            self.fail(str(err))

    # -- attribute values, in the forms ``printer.format_attr`` writes

    def attr(self, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            self.fail("attribute nested too deeply")
        kind, text = self.peek()
        nxt = self.peek(1)
        if kind == "punct" and text == "-" and (nxt[0] == "float" or nxt == ("name", "inf")):
            self.i += 2
            return -float(nxt[1])
        if kind in ("string", "float", "ref"):
            self.i += 1
            if kind == "string":
                return self._json_string(text)
            return float(text) if kind == "float" else InputRef(int(text[1:]))
        if kind == "punct" and text in ("[", "{"):
            self.i += 1
            if text == "[":
                return tuple(self.comma_list("]", lambda: self.attr(depth + 1)))
            return dict(self.comma_list("}", lambda: self._dict_item(depth + 1)))
        if kind == "name" and not (nxt[0] == "punct" and nxt[1] in _EXPR_OPS | {"("}):
            keyword = {"none": None, "true": True, "false": False,
                       "inf": float("inf"), "nan": float("nan")}
            if text in keyword or text in _DTYPES or text.startswith("torch."):
                self.i += 1
                if text.startswith("torch."):
                    return TorchObj(text)
                return keyword[text] if text in keyword else _DTYPES[text]
        start = self.i
        e = self.expr()
        if e.is_number and not e.is_Integer:
            self.i = start
            self.fail(f"attribute {e} is neither an integer nor a size expression")
        return int(e) if e.is_Integer else e

    def _json_string(self, text: str) -> str:
        try:
            s = json.loads(text)
        except ValueError as err:
            self.fail_prev(f"bad string literal: {err}")
        assert isinstance(s, str)
        return s

    def _dict_item(self, depth: int) -> tuple[str, Any]:
        kind, text = self.next()
        if kind != "string":
            self.fail_prev(f"dict keys are strings, found {text!r}")
        key = self._json_string(text)
        self.expect(":")
        return key, self.attr(depth)

    def value_name(self) -> str:
        kind, text = self.next()
        if kind != "value":
            self.fail_prev(f"expected a value such as %0 or %x, found {text!r}")
        return text[1:]


def parse_type(text: str) -> TensorType:
    """Parse one tensor type, e.g. ``f32[s0, 64]``."""
    line = _Line(1, text)
    t = line.type()
    line.expect_end()
    return t


def parse_size(text: str) -> Dim:
    """Parse one size expression, e.g. ``floor(s0/2)+1``, without evaluating the text."""
    line = _Line(1, text)
    d = line.dim()
    line.expect_end()
    return d


class _GraphParser:
    def __init__(self, constants: Mapping[str, torch.Tensor] | None,
                 fill: Callable[[TensorType], torch.Tensor] | None) -> None:
        self.constants = constants or {}
        self.fill = fill
        self.b = GraphBuilder()
        self.values: dict[str, Value] = {}

    def define(self, line: _Line, name: str, v: Value) -> None:
        if name in self.values:
            line.fail(f"%{name} is defined twice")
        self.values[name] = v

    def use(self, line: _Line) -> Value:
        name = line.value_name()
        if name not in self.values:
            line.fail_prev(f"%{name} is not defined")
        return self.values[name]

    def header(self, line: _Line) -> None:
        line.expect("graph")
        line.expect("(")

        def param() -> None:
            name = line.value_name()
            if not _IDENT.fullmatch(name):
                line.fail_prev(f"input name %{name} is not an identifier")
            line.expect(":")
            v = self.b.input(name, line.type())
            if v.name != name:  # the builder renamed a duplicate
                line.fail(f"%{name} is defined twice")
            self.define(line, name, v)

        line.comma_list(")", param)
        line.expect("{")
        line.expect_end()

    def node(self, line: _Line, body: Graph | None = None) -> None:
        names = [line.value_name()]
        while line.accept(","):
            names.append(line.value_name())
        for n in names:
            if not n.isdigit():
                line.fail(f"node outputs are numbered (%0, %1, ...), not %{n}")
        line.expect("=")
        kind, opname = line.next()
        try:
            op = Op(opname)
        except ValueError:
            line.fail_prev(f"unknown op {opname!r}")
        line.expect("(")
        inputs = line.comma_list(")", lambda: self.use(line))
        attrs: dict[str, Any] = {}
        if line.accept("{"):
            def item() -> None:
                kind, key = line.next()
                if kind != "name" or key in attrs:
                    line.fail_prev(f"expected a new attribute name, found {key!r}")
                line.expect("=")
                attrs[key] = line.attr()
            line.comma_list("}", item)
        line.expect(":")
        types = [line.type()]
        while line.accept(","):
            types.append(line.type())
        line.expect_end()
        if (body is not None) != (op is Op.KERNEL):
            line.fail("a kernel node, and only a kernel node, is followed by its body", 0)
        if body is not None:
            if "body" in attrs:
                line.fail("a kernel's body is written below it, not as an attribute", 0)
            attrs["body"] = body
        if len(types) != len(names):
            line.fail(f"{len(names)} results but {len(types)} types", 0)
        missing = [a for a in op.attr_names if a not in attrs]
        extra = [a for a in attrs if a not in op.attr_names]
        if missing or extra:
            line.fail(f"{op}: missing attributes {missing}, unexpected {extra}", 0)
        outputs = self.build(line, op, inputs, attrs, types)
        for name, v, t in zip(names, outputs, types):
            if not v.type.same_as(t):
                line.fail(f"{op} infers {v.type} for %{name}, the text says {t}", 0)
            self.define(line, name, v)

    def build(self, line: _Line, op: Op, inputs: list[Value], attrs: dict[str, Any],
              types: list[TensorType]) -> tuple[Value, ...]:
        if op is Op.CONSTANT:
            return (self.constant(line, inputs, attrs, types),)
        try:
            node = self.b.node(op, inputs, attrs, types if op is Op.EXTERN else None)
        except (ShapeError, TypeError, ValueError, KeyError, IndexError) as err:
            line.fail(f"{op}: {err}", 0)
        if len(node.outputs) != len(types):
            line.fail(f"{op} has {len(node.outputs)} results, the text names {len(types)}", 0)
        return node.outputs

    def constant(self, line: _Line, inputs: list[Value], attrs: dict[str, Any],
                 types: list[TensorType]) -> Value:
        name = attrs.get("name")
        if inputs or set(attrs) != {"name"} or not isinstance(name, str) or len(types) != 1:
            line.fail('a constant is written %N = constant() {name="..."} : type', 0)
        if name in self.constants:
            tensor = self.constants[name]
        elif self.fill is not None:
            if not types[0].is_static:
                line.fail(f"constant {name!r} has a symbolic type {types[0]}", 0)
            tensor = self.fill(types[0])
        else:
            line.fail(f"no tensor given for constant {name!r}", 0)
        try:
            actual = TensorType(DType.from_torch(tensor.dtype), tuple(tensor.shape))
        except TypeError as err:
            line.fail(f"constant {name!r}: {err}", 0)
        if not actual.same_as(types[0]):
            line.fail(f"constant {name!r} is {actual}, the text says {types[0]}", 0)
        try:
            return self.b.adopt_constant(name, tensor)
        except ValueError as err:
            line.fail(str(err), 0)


def parse_graph(text: str, constants: Mapping[str, torch.Tensor] | None = None, *,
                fill: Callable[[TensorType], torch.Tensor] | None = None) -> Graph:
    """The graph ``text`` describes; the inverse of ``print_graph``.

    A ``constant`` node's tensor is ``constants[name]`` itself (not a copy); names missing from
    ``constants`` are made by ``fill(type)`` when given, else they are an error. A ``kernel``
    node's body is the block of lines indented below it.
    """
    lines = [_Line(i + 1, s) for i, s in enumerate(text.splitlines()) if s.strip()]
    if not lines:
        raise ParseError("line 1: empty text, expected 'graph(...) {'")
    graph, end = _parse_block(lines, 0, constants, fill, depth=0)
    if end < len(lines):
        lines[end].fail("text after the closing '}'", 0)
    return graph


def _indent(line: _Line) -> int:
    return len(line.text) - len(line.text.lstrip())


def _parse_block(lines: list[_Line], start: int, constants: Mapping[str, torch.Tensor] | None,
                 fill: Callable[[TensorType], torch.Tensor] | None, depth: int) -> tuple[Graph, int]:
    """Parse the graph whose header is ``lines[start]``; return it and the index past its '}'."""
    if depth > _MAX_DEPTH:
        lines[start].fail("kernel bodies nested too deeply", 0)
    p = _GraphParser(constants, fill)
    p.header(lines[start])
    base = _indent(lines[start])
    i = start + 1
    while i < len(lines) and lines[i].peek() != ("name", "return"):
        line = lines[i]
        if _indent(line) <= base:
            line.fail("missing 'return' line", 0)
        i += 1
        body = None
        if i < len(lines) and _indent(lines[i]) > _indent(line) and lines[i].peek() == ("name", "graph"):
            body, i = _parse_block(lines, i, None, None, depth + 1)
        p.node(line, body)
    if i >= len(lines):
        lines[-1].fail("missing 'return' line", 0)
    line = lines[i]
    line.expect("return")
    outs = [p.use(line)] if line.peek()[0] != "end" else []
    while line.accept(","):
        outs.append(p.use(line))
    line.expect_end()
    if i + 1 >= len(lines):
        line.fail("missing closing '}' after the 'return' line", 0)
    lines[i + 1].expect("}")
    lines[i + 1].expect_end()
    return p.b.build(outs), i + 2
