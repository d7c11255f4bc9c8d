"""The scalar op table of the Triton generator: one triton.language expression per pointwise op
of the kernel IR, the same ops as c_scalar.SCALAR and meaning what the reference backend
computes (torch eager).

    scalar_expr("maximum", ["v0", "v1"], [F32, F32], F32, {}, helpers)
        -> "tl.where((v0 > v1) | (v0 != v0), v0, v1)"

Operands arrive in the op's computation dtype (lowering inserts the casts); f16/bf16 values
are held in float32 (triton_abi.temp_dtype) and rounded by a cast to f16/bf16 or a store.
Python scalars in the expressions are weakly typed, so ``0`` next to an int8 tensor stays
int8 and ``0.5`` next to a float64 one is float64. Functions triton.language lacks are the
helpers of triton_math.py ([Note: Triton math without libdevice]); a rule records the
helpers it uses in ``helpers``. NaN and integer edge cases are those of c_scalar.py.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from effc.ir import DType

from .triton_abi import literal, tl_dtype

Rule = Callable[[Sequence[str], Sequence[DType], DType, dict, set], str]


def _f64(d: DType) -> bool:
    return d is DType.F64


def _flag(d: DType) -> str:
    return "True" if _f64(d) else "False"


def _helper1(name: str) -> Rule:
    """A float helper of one operand (``effc_tanh(x, F64)``)."""
    def rule(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
        h.add(name)
        return f"effc_{name}({a[0]}, {_flag(o)})"
    return rule


def _core1(fn: str) -> Rule:
    return lambda a, t, o, at, h: f"tl.{fn}({a[0]})"


def _div_f(x: str, y: str, o: DType) -> str:
    """IEEE division: float32's ``/`` is approximate on a GPU."""
    return f"({x} / {y})" if _f64(o) else f"tl.math.div_rn({x}, {y})"


def _sqrt(x: str, o: DType) -> str:
    return f"tl.sqrt({x})" if _f64(o) else f"tl.math.sqrt_rn({x})"


def _arith(op: str) -> Rule:
    """+ - *: integers wrap as torch's; bool + is or, bool * is and."""
    def rule(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
        if o is DType.BOOL and op in "+*":
            return f"({a[0]} {'|' if op == '+' else '&'} {a[1]})"
        return f"({a[0]} {op} {a[1]})"
    return rule


def _neg(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    return f"(-{a[0]})" if o.is_float else f"(0 - {a[0]})"


def _abs(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    if o is DType.BOOL or o is DType.U8:
        return a[0]
    return f"tl.abs({a[0]})"


def _float_only(fn: Callable[[str], str]) -> Rule:
    """floor/ceil/round/trunc: identity on integers."""
    return lambda a, t, o, at, h: fn(a[0]) if o.is_float else a[0]


def _round(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    if not o.is_float:
        return a[0]
    h.add("round")
    return f"effc_round({a[0]})"


def _sign(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    if o is DType.BOOL:
        return a[0]
    ty = tl_dtype(o)
    return f"(({a[0]} > 0).to({ty}) - ({a[0]} < 0).to({ty}))"


def _div(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    mode = at.get("rounding_mode")
    x, y = a
    if o.is_float:
        if mode is None:
            return _div_f(x, y, o)
        if mode == "trunc":
            q = _div_f(x, y, o)
            return f"tl.where({q} < 0, tl.ceil({q}), tl.floor({q}))"
        h.add("floordiv_f")
        return f"effc_floordiv_f({x}, {y}, {_flag(o)})"
    name = "truncdiv_i" if mode in (None, "trunc") else "floordiv_i"
    h.add(name)
    return f"effc_{name}({x}, {y})"


def small_integer(value: object) -> int | None:
    """A constant's value when it is a small integer (a power's exponent worth unrolling)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() \
            and abs(value) <= 16:
        return int(value)
    return None


def known_integer(op: str, args: Sequence[str], dtype: DType, integers: dict[str, int]) -> int | None:
    """The small integer a computed temporary holds when ``integers`` knows its operand: a
    cast of one to a float type (exact: every small integer is a float of every width)."""
    if op == "cast" and dtype.is_float and args and args[0] in integers:
        return integers[args[0]]
    return None


def power_product(op: str, args: Sequence[str], names: Sequence[str], dtype: DType,
                  integers: dict[str, int]) -> str | None:
    """``x * x`` or ``x * x * x`` for pow by a known 2 or 3 [Note: small integer powers]."""
    if op != "pow" or not dtype.is_float or integers.get(args[1]) not in (2, 3):
        return None
    return " * ".join([names[0]] * integers[args[1]])


def _pow(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    name = "pow_f" if o.is_float else "ipow"
    h.add(name)
    return f"effc_pow_f({a[0]}, {a[1]}, {_flag(o)})" if o.is_float else f"effc_ipow({a[0]}, {a[1]})"


def _extreme(cmp: str) -> Rule:
    """maximum/minimum: NaN in either operand gives NaN, as torch."""
    def rule(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
        x, y = a
        if o is DType.BOOL:
            return f"({x} {'|' if cmp == '>' else '&'} {y})"
        if o.is_float:
            return f"tl.where(({x} {cmp} {y}) | ({x} != {x}), {x}, {y})"
        return f"tl.where({x} {cmp} {y}, {x}, {y})"
    return rule


def _binary_helper(fname: str, iname: str) -> Rule:
    def rule(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
        if o.is_float:
            h.add(fname)
            return f"effc_{fname}({a[0]}, {a[1]}, {_flag(o)})"
        h.add(iname)
        return f"effc_{iname}({a[0]}, {a[1]})"
    return rule


def _clamp_expr(x: str, lo: str | None, hi: str | None) -> str:
    """min(max(x, lo), hi) with NaN kept (comparisons with NaN are false)."""
    if lo is not None:
        x = f"tl.where({x} < {lo}, {lo}, {x})"
    if hi is not None:
        x = f"tl.where({x} > {hi}, {hi}, {x})"
    return x


def _clamp(lo_key: str, hi_key: str) -> Rule:
    def rule(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
        lo, hi = at.get(lo_key), at.get(hi_key)
        return _clamp_expr(a[0], None if lo is None else literal(lo, o), None if hi is None else literal(hi, o))
    return rule


def cast_expr(x: str, src: DType, dst: DType) -> str:
    """A temporary of ``src`` as one of ``dst`` (both as held: f16/bf16 in float32, rounded)."""
    if dst is src:
        return x
    if dst is DType.BOOL:
        return f"({x} != 0)"
    if dst in (DType.F16, DType.BF16):
        return f"{x}.to({tl_dtype(dst)}).to(tl.float32)"
    if src.is_float and not dst.is_float and dst is not DType.I64:  # through int64, as torch on x86
        return f"{x}.to(tl.int64).to({tl_dtype(dst)})"
    return f"{x}.to({tl_dtype(dst)})"


def _cast(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    src = DType.F32 if t[0] in (DType.F16, DType.BF16) else t[0]
    return cast_expr(a[0], src, o)


def _f(o: DType, v: float) -> str:
    return literal(v, o)


def _gelu(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    x, f = a[0], (lambda v: _f(o, v))
    if at.get("approximate", "none") == "tanh":
        h.add("tanh")
        inner = f"{f(math.sqrt(2 / math.pi))} * ({x} + {f(0.044715)} * {x} * {x} * {x})"
        return f"({f(0.5)} * {x} * ({f(1)} + effc_tanh({inner}, {_flag(o)})))"
    return f"({x} * {f(0.5)} * ({f(1)} + tl.erf({x} * {f(math.sqrt(0.5))})))"


def _hardsigmoid_expr(x: str, o: DType) -> str:
    return _div_f(_clamp_expr(f"({x} + {_f(o, 3)})", _f(o, 0), _f(o, 6)), _f(o, 6), o)


def _softplus(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    x, beta, thr = a[0], _f(o, at["beta"]), _f(o, at["threshold"])
    h.add("log1p")
    return (f"tl.where(({x} * {beta}) > {thr}, {x}, "
            f"{_div_f(f'effc_log1p(tl.exp({x} * {beta}), {_flag(o)})', beta, o)})")


def _elu(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    x = a[0]
    neg, pos, inp = _f(o, at["alpha"] * at["scale"]), _f(o, at["scale"]), _f(o, at["input_scale"])
    return f"tl.where({x} <= 0, (tl.exp({x} * {inp}) - {_f(o, 1)}) * {neg}, {x} * {pos})"


def _bitwise_not(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    return f"({a[0]} == 0)" if o is DType.BOOL else f"(~{a[0]})"


def _binop(op: str) -> Rule:
    return lambda a, t, o, at, h: f"({a[0]} {op} {a[1]})"


def _logical(op: str) -> Rule:
    return lambda a, t, o, at, h: f"(({a[0]} != 0) {op} ({a[1]} != 0))"


def _isinf(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    if t[0].is_float:
        return f"(({a[0]} == EFFC_INF) | ({a[0]} == -EFFC_INF))"
    return f"({a[0]} != {a[0]})"


def _where(a: Sequence[str], t: Sequence[DType], o: DType, at: dict, h: set) -> str:
    c = a[0] if t[0] is DType.BOOL else f"({a[0]} != 0)"
    return f"tl.where({c}, {a[1]}, {a[2]})"


def _log_const(c: float) -> Rule:
    return lambda a, t, o, at, h: f"(tl.log({a[0]}) * {_f(o, c)})"


SCALAR: dict[str, Rule] = {
    "add": _arith("+"), "sub": _arith("-"), "mul": _arith("*"), "div": _div, "pow": _pow,
    "neg": _neg, "abs": _abs, "sign": _sign,
    "relu": lambda a, t, o, at, h: f"tl.where({a[0]} < 0, {literal(0, o)}, {a[0]})",
    "floor": _float_only(lambda x: f"tl.floor({x})"), "ceil": _float_only(lambda x: f"tl.ceil({x})"),
    "round": _round, "trunc": _float_only(lambda x: f"tl.where({x} < 0, tl.ceil({x}), tl.floor({x}))"),
    "bitwise_not": _bitwise_not,
    "exp": _core1("exp"), "exp2": _core1("exp2"), "expm1": _helper1("expm1"),
    "log": _core1("log"), "log2": _core1("log2"), "log10": _log_const(1 / math.log(10)),
    "log1p": _helper1("log1p"),
    "sqrt": lambda a, t, o, at, h: _sqrt(a[0], o),
    "rsqrt": lambda a, t, o, at, h: _div_f(_f(o, 1), _sqrt(a[0], o), o),
    "reciprocal": lambda a, t, o, at, h: _div_f(_f(o, 1), a[0], o),
    "sin": _core1("sin"), "cos": _core1("cos"),
    "tan": lambda a, t, o, at, h: _div_f(f"tl.sin({a[0]})", f"tl.cos({a[0]})", o),
    **{n: _helper1(n) for n in ("asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh",
                                "erfinv")},
    "erf": _core1("erf"),
    "sigmoid": lambda a, t, o, at, h: f"({_f(o, 1)} / ({_f(o, 1)} + tl.exp(-{a[0]})))",
    "silu": lambda a, t, o, at, h: f"({a[0]} / ({_f(o, 1)} + tl.exp(-{a[0]})))",
    "gelu": _gelu,
    "hardsigmoid": lambda a, t, o, at, h: _hardsigmoid_expr(a[0], o),
    "hardswish": lambda a, t, o, at, h: f"({a[0]} * {_hardsigmoid_expr(a[0], o)})",
    "softplus": _softplus, "elu": _elu,
    "leaky_relu": lambda a, t, o, at, h: f"tl.where({a[0]} > 0, {a[0]}, {a[0]} * {_f(o, at['negative_slope'])})",
    "hardtanh": _clamp("min_val", "max_val"), "clamp": _clamp("min", "max"),
    "logical_not": lambda a, t, o, at, h: f"({a[0]} == 0)",
    "isnan": lambda a, t, o, at, h: f"({a[0]} != {a[0]})", "isinf": _isinf,
    "maximum": _extreme(">"), "minimum": _extreme("<"),
    "fmod": _binary_helper("fmod_f", "fmod_i"), "remainder": _binary_helper("remainder_f", "mod_i"),
    "atan2": lambda a, t, o, at, h: (h.add("atan2"), f"effc_atan2({a[0]}, {a[1]}, {_flag(o)})")[1],
    "bitwise_and": _binop("&"), "bitwise_or": _binop("|"), "bitwise_xor": _binop("^"),
    "eq": _binop("=="), "ne": _binop("!="), "lt": _binop("<"), "le": _binop("<="), "gt": _binop(">"),
    "ge": _binop(">="), "logical_and": _logical("&"), "logical_or": _logical("|"),
    "logical_xor": _logical("!="),
    "where": _where,
    "cast": _cast,
}


def scalar_expr(op: str, args: Sequence[str], arg_dtypes: Sequence[DType], out: DType, attrs: dict,
                helpers: set) -> str:
    """The Triton expression of pointwise ``op`` on temporaries ``args``; KeyError for an op
    the table lacks. Helpers it calls are added to ``helpers``."""
    return SCALAR[op](args, arg_dtypes, out, attrs, helpers)
