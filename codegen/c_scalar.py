"""The scalar op table of the C generator: one C expression per pointwise op of the kernel IR.

    scalar_expr("maximum", ["t0", "t1"], [F32, F32], F32, {})
        -> "((t0 > t1 || t0 != t0) ? t0 : t1)"

Each entry means what backends/reference/kernels.py computes for that op (torch eager):
operands arrive in the op's computation dtype (lowering inserts the casts), f16/bf16 values
are held in float (``c_abi.temp_type``) and rounded only by a cast to f16/bf16 or a store.
exp, expm1, log, log1p, tanh, erf, sigmoid and silu of float temporaries call the vectorisable
``effc_*f`` functions of ``c_math.MATH_PRELUDE`` ([Note: C vector math]); f64 keeps libm.
NaN propagates as in torch: max/min/clamp keep it, relu keeps it (``x < 0 ? 0 : x``),
``sign(NaN)`` is 0. Integer ops wrap like torch's (through unsigned arithmetic); integer
division and remainder by zero give 0 instead of trapping. Float to integer casts go through
int64, as torch's do on this ISA (``-1.5 -> u8`` is 255).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from effc.ir import DType

from .c_abi import c_type, temp_type
from .c_math import VECTOR_MATH

FLOAT_NP = {DType.F64: np.float64, DType.F32: np.float32, DType.F16: np.float16}
_UNSIGNED = {DType.I64: "uint64_t", DType.I32: "uint32_t"}


def is_f64(d: DType) -> bool:
    return d is DType.F64


def literal(value: Any, dtype: DType) -> str:
    """``value`` as a C constant of ``dtype``'s temporary type, rounded to ``dtype`` first."""
    if dtype is DType.BOOL:
        return "true" if value else "false"
    if dtype.is_int:
        v = int(value)
        return str(v) if -2**31 < v < 2**31 else f"INT64_C({v})"
    v = float(value)
    if dtype is DType.BF16:
        import torch
        v = float(torch.tensor(v, dtype=torch.bfloat16).float())
    elif dtype in FLOAT_NP:
        v = float(FLOAT_NP[dtype](v))
    suffix = "" if dtype is DType.F64 else "f"
    if math.isnan(v):
        return "NAN" if suffix else "((double)NAN)"
    if math.isinf(v):
        inf = "INFINITY" if suffix else "((double)INFINITY)"
        return inf if v > 0 else f"(-{inf})"
    return f"{v!r}{suffix}" if v >= 0 else f"({v!r}{suffix})"


def _fn(name: str, d: DType) -> str:
    """The math function for the temporary type of ``d``: libm's for double, ``expf`` for
    float, or ``effc_expf`` where c_math has a vectorisable one."""
    if is_f64(d):
        return name
    return f"effc_{name}f" if name in VECTOR_MATH else name + "f"


Rule = Callable[[Sequence[str], Sequence[DType], DType, dict], str]


def _unary_math(name: str) -> Rule:
    return lambda a, t, o, at: f"{_fn(name, t[0])}({a[0]})"


def _wrap(op: str) -> Rule:
    """Integer + - * wrap around as torch's do; bool + is or, bool * is and."""
    def rule(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
        if o is DType.BOOL and op in "+*":
            return f"({a[0]} {'||' if op == '+' else '&&'} {a[1]})"
        if o in _UNSIGNED:
            u = _UNSIGNED[o]
            return f"(({c_type(o)})(({u}){a[0]} {op} ({u}){a[1]}))"
        if o.is_float:
            return f"({a[0]} {op} {a[1]})"
        return f"(({temp_type(o)})({a[0]} {op} {a[1]}))"
    return rule


def _neg(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    if o in _UNSIGNED:
        return f"(({c_type(o)})(0u - ({_UNSIGNED[o]}){a[0]}))"
    return f"(({temp_type(o)})(-{a[0]}))"


def _abs(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    if o.is_float:
        return f"{_fn('fabs', o)}({a[0]})"
    if o is DType.BOOL or o is DType.U8:
        return a[0]
    return f"(({c_type(o)})({a[0]} < 0 ? -{a[0]} : {a[0]}))"


def _float_only(name: str) -> Rule:
    """floor/ceil/round/trunc: identity on integers."""
    return lambda a, t, o, at: f"{_fn(name, o)}({a[0]})" if o.is_float else a[0]


def _sign(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    x = a[0]
    if o is DType.BOOL:
        return x
    return f"(({temp_type(o)})(({x} > 0) - ({x} < 0)))"


def _div(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    mode = at.get("rounding_mode")
    x, y = a
    if o.is_float:
        if mode is None:
            return f"({x} / {y})"
        if mode == "trunc":
            return f"{_fn('trunc', o)}({x} / {y})"
        return f"effc_floordiv_{'f64' if is_f64(o) else 'f32'}({x}, {y})"
    fn = "effc_truncdiv" if mode in (None, "trunc") else "effc_floordiv"
    return f"(({c_type(o)}){fn}({x}, {y}))"


def _pow(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    if o.is_float:
        return f"{_fn('pow', o)}({a[0]}, {a[1]})"
    return f"(({c_type(o)})effc_ipow({a[0]}, {a[1]}))"


def _extreme(cmp: str) -> Rule:
    """maximum/minimum: NaN in either operand gives NaN, as torch."""
    def rule(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
        x, y = a
        if o is DType.BOOL:
            return f"({x} {'||' if cmp == '>' else '&&'} {y})"
        if o.is_float:
            return f"(({x} {cmp} {y} || {x} != {x}) ? {x} : {y})"
        return f"({x} {cmp} {y} ? {x} : {y})"
    return rule


def _fmod(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    if o.is_float:
        return f"{_fn('fmod', o)}({a[0]}, {a[1]})"
    return f"(({c_type(o)})effc_fmod_i({a[0]}, {a[1]}))"


def _remainder(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    if o.is_float:
        return f"effc_remainder_{'f64' if is_f64(o) else 'f32'}({a[0]}, {a[1]})"
    return f"(({c_type(o)})effc_mod({a[0]}, {a[1]}))"


def _clamp_expr(x: str, lo: str | None, hi: str | None) -> str:
    """min(max(x, lo), hi) with NaN kept (comparisons with NaN are false)."""
    if lo is not None:
        x = f"({x} < {lo} ? {lo} : {x})"
    if hi is not None:
        x = f"({x} > {hi} ? {hi} : {x})"
    return x


def _clamp(lo_key: str, hi_key: str) -> Rule:
    def rule(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
        lo, hi = at.get(lo_key), at.get(hi_key)
        return _clamp_expr(a[0], None if lo is None else literal(lo, o), None if hi is None else literal(hi, o))
    return rule


def _cast(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    x, src = a[0], t[0]
    if o is src:
        return x
    if o is DType.BOOL:
        return f"({x} != 0)"
    if o in (DType.F16, DType.BF16):
        rnd = "effc_round_f16" if o is DType.F16 else "effc_round_bf16"
        return f"{rnd}((float){x})"
    if o.is_float:
        return f"(({c_type(o)}){x})"
    if src.is_float and o is not DType.I64:  # through int64, as torch on x86
        return f"(({c_type(o)})(int64_t){x})"
    return f"(({c_type(o)}){x})"


def _gelu(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    x, f = a[0], (lambda v: literal(v, o))
    if at.get("approximate", "none") == "tanh":
        inner = f"{f(math.sqrt(2 / math.pi))} * ({x} + {f(0.044715)} * {x} * {x} * {x})"
        return f"({f(0.5)} * {x} * ({f(1)} + {_fn('tanh', o)}({inner})))"
    return f"({x} * {f(0.5)} * ({f(1)} + {_fn('erf', o)}({x} * {f(math.sqrt(0.5))})))"


def _f(o: DType, v: float) -> str:
    return literal(v, o)


def _sigmoid(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    if not is_f64(o):
        return f"effc_sigmoidf({a[0]})"
    return f"({_f(o, 1)} / ({_f(o, 1)} + exp(-{a[0]})))"


def _silu(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    if not is_f64(o):
        return f"effc_siluf({a[0]})"
    return f"({a[0]} / ({_f(o, 1)} + exp(-{a[0]})))"


def _hardsigmoid_expr(x: str, o: DType) -> str:
    return f"({_clamp_expr(f'({x} + {_f(o, 3)})', _f(o, 0), _f(o, 6))} / {_f(o, 6)})"


def _softplus(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    x, beta, thr = a[0], _f(o, at["beta"]), _f(o, at["threshold"])
    return f"(({x} * {beta}) > {thr} ? {x} : {_fn('log1p', o)}({_fn('exp', o)}({x} * {beta})) / {beta})"


def _elu(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    x = a[0]
    neg, pos, inp = _f(o, at["alpha"] * at["scale"]), _f(o, at["scale"]), _f(o, at["input_scale"])
    return f"({x} <= 0 ? ({_fn('exp', o)}({x} * {inp}) - {_f(o, 1)}) * {neg} : {x} * {pos})"


def _erfinv(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    return f"effc_erfinv_f64({a[0]})" if is_f64(o) else f"((float)effc_erfinv_f64((double){a[0]}))"


def _bool_or_not(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    return f"(!{a[0]})" if o is DType.BOOL else f"(({c_type(o)})~{a[0]})"


def _binop(op: str) -> Rule:
    return lambda a, t, o, at: f"({a[0]} {op} {a[1]})"


def _logical(op: str) -> Rule:
    return lambda a, t, o, at: f"(({a[0]} != 0) {op} ({a[1]} != 0))"


def _isnan(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    return f"({a[0]} != {a[0]})" if t[0].is_float else "false"


def _isinf(a: Sequence[str], t: Sequence[DType], o: DType, at: dict) -> str:
    return f"(isinf({a[0]}) != 0)" if t[0].is_float else "false"


SCALAR: dict[str, Rule] = {
    "add": _wrap("+"), "sub": _wrap("-"), "mul": _wrap("*"), "div": _div, "pow": _pow,
    "neg": _neg, "abs": _abs, "sign": _sign,
    "relu": lambda a, t, o, at: f"({a[0]} < 0 ? {literal(0, o)} : {a[0]})",
    "floor": _float_only("floor"), "ceil": _float_only("ceil"), "round": _float_only("nearbyint"),
    "trunc": _float_only("trunc"), "bitwise_not": _bool_or_not,
    "exp": _unary_math("exp"), "exp2": _unary_math("exp2"), "expm1": _unary_math("expm1"),
    "log": _unary_math("log"), "log2": _unary_math("log2"), "log10": _unary_math("log10"),
    "log1p": _unary_math("log1p"), "sqrt": _unary_math("sqrt"),
    "rsqrt": lambda a, t, o, at: f"({_f(o, 1)} / {_fn('sqrt', o)}({a[0]}))",
    "reciprocal": lambda a, t, o, at: f"({_f(o, 1)} / {a[0]})",
    **{n: _unary_math(n) for n in ("sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
                                   "asinh", "acosh", "atanh", "erf")},
    "erfinv": _erfinv, "sigmoid": _sigmoid, "silu": _silu, "gelu": _gelu,
    "hardsigmoid": lambda a, t, o, at: _hardsigmoid_expr(a[0], o),
    "hardswish": lambda a, t, o, at: f"({a[0]} * {_hardsigmoid_expr(a[0], o)})",
    "softplus": _softplus, "elu": _elu,
    "leaky_relu": lambda a, t, o, at: f"({a[0]} > 0 ? {a[0]} : {a[0]} * {_f(o, at['negative_slope'])})",
    "hardtanh": _clamp("min_val", "max_val"), "clamp": _clamp("min", "max"),
    "logical_not": lambda a, t, o, at: f"(!{a[0]})", "isnan": _isnan, "isinf": _isinf,
    "maximum": _extreme(">"), "minimum": _extreme("<"), "fmod": _fmod, "remainder": _remainder,
    "atan2": lambda a, t, o, at: f"{_fn('atan2', o)}({a[0]}, {a[1]})",
    "bitwise_and": _binop("&"), "bitwise_or": _binop("|"), "bitwise_xor": _binop("^"),
    "eq": _binop("=="), "ne": _binop("!="), "lt": _binop("<"), "le": _binop("<="), "gt": _binop(">"),
    "ge": _binop(">="), "logical_and": _logical("&&"), "logical_or": _logical("||"),
    "logical_xor": _logical("!="),
    "where": lambda a, t, o, at: f"({a[0]} ? {a[1]} : {a[2]})",
    "cast": _cast,
}


def scalar_expr(op: str, args: Sequence[str], arg_dtypes: Sequence[DType], out: DType, attrs: dict) -> str:
    """The C expression of pointwise ``op`` on temporaries ``args``; KeyError for an op the
    table lacks."""
    return SCALAR[op](args, arg_dtypes, out, attrs)
