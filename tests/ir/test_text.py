"""IR text: print -> parse -> print is the identity, and malformed text fails with a clear error."""

from __future__ import annotations

import builtins
import math
from typing import Any

import pytest
import sympy
import sympy.parsing.sympy_parser
import torch

from effc.ir import (DType, Graph, GraphBuilder, InputRef, Op, TensorType, TorchObj, print_graph,
                     size_symbol)
from effc.ir.parser import ParseError, parse_graph, parse_size, parse_type

s0, s1 = size_symbol("s0"), size_symbol("s1")


def roundtrip(g: Graph) -> Graph:
    text = print_graph(g)
    g2 = parse_graph(text, g.constants)
    assert print_graph(g2) == text
    return g2


def attribute_zoo() -> Graph:
    """An extern and a few ops whose attributes use every value kind the printer writes."""
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (s0, 8)))
    idx = b.input("tok.ids_0", TensorType(DType.I64, (s0,)))
    args = (InputRef(0), None, True, False, -3, 2**63 - 1, 2.0, 1e-05, -0.5, float("inf"),
            float("-inf"), float("nan"), 1.5e300, "plain", 'quo"te\\back\nline', "ünï✓",
            DType.BF16, DType.BOOL, 64 * s0, sympy.floor(s0 / 2) + 1, sympy.Mod(s0, 4),
            sympy.Max(2, s0), sympy.ceiling(s0 / 3), (), ((1, 2), [3, (4,)]),
            TorchObj("torch.contiguous_format"))
    kwargs = {"input": InputRef(1), "empty": {}, "nested": {"a b": [InputRef(0), "x"], "": None},
              "memory_format": TorchObj("torch.channels_last")}
    e = b.node(Op.EXTERN, [x, idx], {"target": "aten::my_op.default", "args": args, "kwargs": kwargs},
               [TensorType(DType.F32, (s0, 8)), TensorType(DType.I64, (sympy.Max(2, s0),))]).outputs
    h = b.op(Op.HARDTANH, [e[0]], min_val=-1.0, max_val=6.0)
    c = b.op(Op.CLAMP, [h], min=None, max=3)
    d = b.op(Op.DIV, [c, b.scalar(2.0, DType.F32)], rounding_mode="floor")
    s = b.op(Op.SUM, [d], dims=(-1,), keepdim=True, dtype=DType.F64)
    full = b.op(Op.FULL, [], shape=(s0, 1), value=-math.inf, dtype=DType.F64)
    return b.build([b.op(Op.ADD, [s, full]), e[1]])


def convnet() -> Graph:
    """Symbolic spatial sizes through conv, pool, split, cat, slice and reshape; constants."""
    b = GraphBuilder()
    x = b.input("images", TensorType(DType.F32, (s0, 3, s1, s1)))
    w = b.constant(torch.randn(8, 3, 3, 3), "conv.weight")
    bias = b.constant(torch.randn(8), "conv.bias")
    y = b.op(Op.CONVOLUTION, [x, w, bias], stride=(2, 2), padding=(1, 1), dilation=(1, 1),
             groups=1, transposed=False, output_padding=(0, 0))
    y = b.op(Op.RELU, [y])
    y = b.op(Op.MAX_POOL, [y], kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1),
             ceil_mode=True)
    halves = b.node(Op.SPLIT, [y], {"dim": 1, "sizes": (3, 5)}).outputs
    y = b.op(Op.CAT, [halves[1], halves[0]], dim=1)
    y = b.op(Op.SLICE, [y], dim=2, start=1, end=2**63 - 1, step=2)
    y = b.op(Op.RESHAPE, [y], shape=(s0, -1))
    y = b.op(Op.SOFTMAX, [y], dim=-1)
    return b.build([y, halves[0]])


def transformer_block() -> Graph:
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.BF16, (2, s0, 64)))
    w = b.constant(torch.randn(192, 64, dtype=torch.bfloat16), "qkv")
    qkv = b.op(Op.LINEAR, [x, w])
    q, k, v = b.node(Op.SPLIT, [qkv], {"dim": -1, "sizes": (64, 64, 64)}).outputs
    heads = [b.op(Op.PERMUTE, [b.op(Op.RESHAPE, [t], shape=(2, s0, 4, 16))], dims=(0, 2, 1, 3))
             for t in (q, k, v)]
    a = b.op(Op.SDPA, heads, scale=None, is_causal=True, enable_gqa=False)
    a = b.op(Op.RESHAPE, [b.op(Op.PERMUTE, [a], dims=(0, 2, 1, 3))], shape=(2, s0, 64))
    n = b.op(Op.LAYER_NORM, [b.op(Op.ADD, [x, a])], normalized_shape=(64,), eps=1e-05,
             has_weight=False, has_bias=False)
    g = b.op(Op.GELU, [n], approximate="none")
    return b.build([b.op(Op.CAST, [g], dtype=DType.F32)])


@pytest.mark.parametrize("make", [attribute_zoo, convnet, transformer_block])
def test_roundtrip(make: Any) -> None:
    g = make()
    g2 = roundtrip(g)
    assert [n.op for n in g2.nodes] == [n.op for n in g.nodes]
    assert all(a.type.same_as(b.type) for a, b in zip(g2.outputs, g.outputs))


def test_roundtrip_keeps_attribute_values() -> None:
    g = attribute_zoo()
    ext = parse_graph(print_graph(g)).nodes[0]  # no constants needed: the zoo has none
    assert ext.attrs["target"] == g.nodes[0].attrs["target"]
    want, got = g.nodes[0].attrs["args"], ext.attrs["args"]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        if isinstance(b, float) and math.isnan(b):
            assert isinstance(a, float) and math.isnan(a)
        else:
            assert a == b and type(a) is type(b)
    assert ext.attrs["kwargs"] == g.nodes[0].attrs["kwargs"]


def test_constants_are_the_given_tensors() -> None:
    g = convnet()
    g2 = parse_graph(print_graph(g), g.constants)
    assert set(g2.constants) == {"conv.weight", "conv.bias"}
    assert all(g2.constants[k] is g.constants[k] for k in g2.constants)


def test_fill_makes_missing_constants() -> None:
    g = convnet()
    made: list[TensorType] = []

    def fill(t: TensorType) -> torch.Tensor:
        made.append(t)
        return torch.zeros(t.shape, dtype=t.dtype.to_torch())  # type: ignore[arg-type]
    g2 = parse_graph(print_graph(g), {"conv.bias": g.constants["conv.bias"]}, fill=fill)
    assert made == [TensorType(DType.F32, (8, 3, 3, 3))]
    assert g2.constants["conv.bias"] is g.constants["conv.bias"]
    assert print_graph(g2) == print_graph(g)


def test_golden_text() -> None:
    text = """\
graph(%x: f32[s0, 64], %w: f32[64, 64]) {
  %0 = matmul(%x, %w) : f32[s0, 64]
  %1 = gelu(%0) {approximate="none"} : f32[s0, 64]
  %2, %3 = split(%1) {dim=1, sizes=[16, 48]} : f32[s0, 16], f32[s0, 48]
  %4 = reshape(%3) {shape=[-1]} : f32[48*s0]
  return %4, %2, %x
}
"""
    g = parse_graph(text)
    assert print_graph(g) == text
    assert g.inputs[0].type.shape[0] == s0  # the one symbol constructor: integer and positive
    assert g.outputs[2] is g.inputs[0]


def test_empty_graph() -> None:
    g = GraphBuilder().build([])
    assert parse_graph(print_graph(g)).nodes == ()
    assert roundtrip(g).outputs == ()


@pytest.mark.parametrize("text,want", [
    ("64*s0", 64 * s0),
    ("floor(s0/2) + 1", sympy.floor(s0 / 2) + 1),
    ("Max(2, s0)", sympy.Max(2, s0)),
    ("Min(s0, s1, 8)", sympy.Min(s0, s1, 8)),
    ("Mod(s0, 4)", sympy.Mod(s0, 4)),
    ("ceiling(s0/3)", sympy.ceiling(s0 / 3)),
    ("-(s0 - 1)*2 + s1**2", 2 - 2 * s0 + s1**2),
    ("2**3*s0", 8 * s0),
    ("(s0+s1)/2 - 1/2", (s0 + s1 - 1) / 2),
    ("7", 7),
])
def test_parse_size(text: str, want: Any) -> None:
    got = parse_size(text)
    assert got == want
    assert type(got) is int if isinstance(want, int) else isinstance(got, sympy.Expr)


def test_parse_type() -> None:
    assert parse_type("bf16[s0, 4*s1]") == TensorType(DType.BF16, (s0, 4 * s1))
    assert parse_type("bool[]") == TensorType(DType.BOOL, ())


GOOD = """\
graph(%x: f32[4, 8]) {
  %0 = relu(%x) : f32[4, 8]
  return %0
}
"""


@pytest.mark.parametrize("old,new,words,line", [
    ("relu(%x)", "frobnicate(%x)", "unknown op 'frobnicate'", 2),
    ("relu(%x)", "relu(%y)", "%y is not defined", 2),
    (": f32[4, 8]\n  return", ": f32[4, 9]\n  return", "relu infers f32[4, 8] for %0, the text says f32[4, 9]", 2),
    (": f32[4, 8]\n  return", ": i64[4, 8]\n  return", "the text says i64", 2),
    (": f32[4, 8]\n  return", ": q7[4, 8]\n  return", "expected a dtype", 2),
    ("relu(%x)", "relu(%x) {inplace=true}", "unexpected ['inplace']", 2),
    ("  %0 = relu(%x) : f32[4, 8]\n", "  %0 = relu(%x) : f32[4, 8]\n  %0 = neg(%0) : f32[4, 8]\n",
     "%0 is defined twice", 3),
    ("%0 = relu", "%a = relu", "node outputs are numbered", 2),
    ("%0 = relu", "%0, %1 = relu", "2 results but 1 types", 2),
    ("return %0", "return %0 %0", "unexpected '%0'", 3),
    ("return %0", "return %9", "%9 is not defined", 3),
    ("  return %0\n", "", "missing 'return'", 3),
    ("}\n", "", "missing closing '}'", 3),
    ("}\n", "}\nmore\n", "text after the closing", 5),
    ("graph(", "grph(", "expected 'graph'", 1),
    ("%x: f32[4, 8]", "%x: f32[4, 8], %x: f32[2]", "%x is defined twice", 1),
    ("%x: f32[4, 8]", "%0: f32[4, 8]", "not an identifier", 1),
    ("f32[4, 8]) {", "f32[4, -8]) {", "negative dimension", 1),
    ("f32[4, 8]) {", "f32[4, 8/3]) {", "not an integer", 1),
    ("f32[4, 8]) {", "f32[4, 8 & 1]) {", "unexpected character '&'", 1),
    ("relu(%x)", "relu(%<undefined>)", "unexpected character '%'", 2),
])
def test_parse_errors(old: str, new: str, words: str, line: int) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new)
    with pytest.raises(ParseError) as err:
        parse_graph(text)
    msg = str(err.value)
    assert msg.startswith(f"line {line}:"), msg
    assert words in msg
    shown = text.splitlines()[line - 1].strip()
    assert shown in msg  # the message shows the offending line


@pytest.mark.parametrize("attr,words", [
    ("approximate=tanh(1)", "unknown function 'tanh'"),
    ('approximate="none", approximate="none"', "expected a new attribute name"),
    ('approximate="bad\\q"', "bad string literal"),
    ("approximate=[1, 2", "expected ','"),
    ("approximate=[1, 2,", "expected a size expression, found '}'"),
    ("approximate={1: 2}", "dict keys are strings"),
    ("approximate=1/2", "neither an integer nor a size expression"),
    ("approximate=os.system", "found 'os.system'"),
])
def test_attribute_errors(attr: str, words: str) -> None:
    text = GOOD.replace("relu(%x)", "gelu(%x) {" + attr + "}")
    with pytest.raises(ParseError, match="line 2") as err:
        parse_graph(text)
    assert words in str(err.value)


def test_constant_errors() -> None:
    text = GOOD.replace("relu(%x) : f32[4, 8]", 'constant() {name="w"} : f32[4, 8]')
    with pytest.raises(ParseError, match="no tensor given for constant 'w'"):
        parse_graph(text)
    with pytest.raises(ParseError, match=r"constant 'w' is f32\[8, 4\], the text says f32\[4, 8\]"):
        parse_graph(text, {"w": torch.zeros(8, 4)})
    with pytest.raises(ParseError, match="is f64"):
        parse_graph(text, {"w": torch.zeros(4, 8, dtype=torch.float64)})
    with pytest.raises(ParseError, match="is f64"):
        parse_graph(text, fill=lambda t: torch.zeros(4, 8, dtype=torch.float64))
    assert parse_graph(text, {"w": torch.zeros(4, 8)}).constants["w"].shape == (4, 8)


def test_rule_errors_become_parse_errors() -> None:
    text = GOOD.replace("relu(%x) : f32[4, 8]", "matmul(%x, %x) : f32[4, 8]")
    with pytest.raises(ParseError, match="line 2: matmul: matmul contraction mismatch"):
        parse_graph(text)


@pytest.mark.parametrize("evil", [
    "__import__('os').system('touch {marker}')",
    '__import__("os").system("touch {marker}")',
    "exec(1)",
    "s0.__class__",
    "lambda: 1",
])
def test_code_in_text_is_rejected_not_run(evil: str, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Any) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the parser must never evaluate text")
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    # sympify(str) goes through parse_expr, which evals; sympify of sympy objects does not.
    monkeypatch.setattr(sympy.parsing.sympy_parser, "parse_expr", forbidden)
    marker = tmp_path / "pwned"
    evil = evil.format(marker=marker)
    for text in (GOOD.replace("f32[4, 8]) {", f"f32[4, {evil}]) {{"),
                 GOOD.replace("relu(%x)", "gelu(%x) {approximate=" + evil + "}")):
        with pytest.raises(ParseError):
            parse_graph(text)
    with pytest.raises(ParseError):
        parse_size(evil)
    assert not marker.exists()


def test_hostile_sizes_are_bounded() -> None:
    with pytest.raises(ParseError, match="exponent"):
        parse_size("2**10**9")
    with pytest.raises(ParseError, match="too large"):
        parse_size("((99999999999**64)**64)**64")
    with pytest.raises(ParseError, match="nested too deeply"):
        parse_size("(" * 10_000 + "1" + ")" * 10_000)
    with pytest.raises(ParseError, match="too long"):
        parse_size("9" * 5000)
    with pytest.raises(ParseError, match="division by zero"):
        parse_size("s0/0")
    with pytest.raises(ParseError, match="Mod by zero"):
        parse_size("Mod(s0, 0)")
    with pytest.raises(ParseError, match="floor takes 1 arguments"):
        parse_size("floor(s0, 2)")
    deep = GOOD.replace("relu(%x)", "gelu(%x) {approximate=" + "[" * 1000 + "]" * 1000 + "}")
    with pytest.raises(ParseError, match="nested too deeply"):
        parse_graph(deep)
