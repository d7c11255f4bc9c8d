"""Op-table entries for elementwise aten ops: math, comparisons, where, clamp, casts."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from effc.ir import Op, TensorType, Value

from .lowering import Args, Converter, Lowering, Unsupported, dtype_arg


def _unary(op: Op, **attrs: Any) -> Converter:
    return lambda cx, a, out: cx.op(op, [cx.tensor(a["self"])], **attrs)


def _binary(op: Op, lhs: str = "self", rhs: str = "other", **attrs: Any) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
        x, y = cx.operands([a[lhs], a[rhs]], out[0].dtype if out else None)
        return cx.op(op, [x, y], **attrs)
    return conv


def _add_sub(op: Op) -> Converter:
    # add(x, y, alpha) = x + alpha * y
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
        od = out[0].dtype if out else None
        y = a["other"]
        if a.get("alpha", 1) != 1:
            (yv,) = cx.operands([y], od)
            (al,) = cx.operands([a["alpha"]], od)
            y = cx.op(Op.MUL, [yv, al])
        x, yv = cx.operands([a["self"], y], od)
        return cx.op(op, [x, yv])
    return conv


def _div(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    x, y = cx.operands([a["self"], a["other"]], out[0].dtype if out else None)
    return cx.op(Op.DIV, [x, y], rounding_mode=a.get("rounding_mode"))


def _floor_divide(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    x, y = cx.operands([a["self"], a["other"]], out[0].dtype if out else None)
    return cx.op(Op.DIV, [x, y], rounding_mode="floor")


def _rsub(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    # rsub(x, y, alpha) = y - alpha * x
    od = out[0].dtype if out else None
    x = a["self"]
    if a.get("alpha", 1) != 1:
        xv, al = cx.operands([x, a["alpha"]], od)
        x = cx.op(Op.MUL, [xv, al])
    y, xv = cx.operands([a["other"], x], od)
    return cx.op(Op.SUB, [y, xv])


def _where(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    c = cx.tensor(a["condition"])
    x, y = cx.operands([a["self"], a["other"]], out[0].dtype if out else None)
    return cx.op(Op.WHERE, [c, x, y])


def _clamp(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    lo, hi = a.get("min"), a.get("max")
    if isinstance(lo, Value) or isinstance(hi, Value):
        x = cx.tensor(a["self"])
        od = out[0].dtype if out else None
        if lo is not None:
            x = cx.op(Op.MAXIMUM, cx.operands([x, lo], od))
        if hi is not None:
            x = cx.op(Op.MINIMUM, cx.operands([x, hi], od))
        return x
    if lo is None and hi is None:
        raise Unsupported("clamp without bounds")
    return cx.op(Op.CLAMP, [cx.tensor(a["self"])], min=lo, max=hi)


def _clamp_side(side: str) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
        bound = a.get(side)
        if isinstance(bound, Value):
            op = Op.MAXIMUM if side == "min" else Op.MINIMUM
            return cx.op(op, cx.operands([a["self"], bound], out[0].dtype if out else None))
        return cx.op(Op.CLAMP, [cx.tensor(a["self"])], **{side: bound, ("max" if side == "min" else "min"): None})
    return conv


def _to_copy(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    x = cx.tensor(a["self"])
    dev = a.get("device")
    if dev is not None and cx.device is not None and torch.device(dev) != cx.device:
        raise Unsupported(f"moves a tensor from {cx.device} to {dev}")
    dtype = dtype_arg(a.get("dtype")) or (out[0].dtype if out else x.type.dtype)
    return cx.cast(x, dtype)


def _identity(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    return cx.tensor(a["self"])


def _round(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    if a.get("decimals", 0) != 0:
        raise Unsupported("round with decimals")
    return cx.op(Op.ROUND, [cx.tensor(a["self"])])


def _pow(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    x, y = cx.operands([a["self"], a["exponent"]], out[0].dtype if out else None)
    return cx.op(Op.POW, [x, y])


def _convert_element_type(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    return cx.cast(cx.tensor(a["a"]), dtype_arg(a["dtype"]) or out[0].dtype)


_UNARY_NAMES = {
    "abs": Op.ABS, "neg": Op.NEG, "exp": Op.EXP, "exp2": Op.EXP2, "expm1": Op.EXPM1, "log": Op.LOG,
    "log2": Op.LOG2, "log10": Op.LOG10, "log1p": Op.LOG1P, "sqrt": Op.SQRT, "rsqrt": Op.RSQRT,
    "reciprocal": Op.RECIPROCAL, "sin": Op.SIN, "cos": Op.COS, "tan": Op.TAN, "asin": Op.ASIN,
    "acos": Op.ACOS, "atan": Op.ATAN, "sinh": Op.SINH, "cosh": Op.COSH, "tanh": Op.TANH,
    "asinh": Op.ASINH, "acosh": Op.ACOSH, "atanh": Op.ATANH, "sigmoid": Op.SIGMOID, "erf": Op.ERF,
    "erfinv": Op.ERFINV, "floor": Op.FLOOR, "ceil": Op.CEIL, "trunc": Op.TRUNC, "sign": Op.SIGN,
    "relu": Op.RELU, "silu": Op.SILU, "hardswish": Op.HARDSWISH, "hardsigmoid": Op.HARDSIGMOID,
    "logical_not": Op.LOGICAL_NOT, "bitwise_not": Op.BITWISE_NOT, "isnan": Op.ISNAN,
    "isinf": Op.ISINF,
}
_BINARY_NAMES = {
    "mul": Op.MUL, "maximum": Op.MAXIMUM, "minimum": Op.MINIMUM, "fmod": Op.FMOD,
    "remainder": Op.REMAINDER, "atan2": Op.ATAN2, "bitwise_and": Op.BITWISE_AND,
    "bitwise_or": Op.BITWISE_OR, "bitwise_xor": Op.BITWISE_XOR, "eq": Op.EQ, "ne": Op.NE,
    "lt": Op.LT, "le": Op.LE, "gt": Op.GT, "ge": Op.GE, "logical_and": Op.LOGICAL_AND,
    "logical_or": Op.LOGICAL_OR, "logical_xor": Op.LOGICAL_XOR,
}

TABLE: dict[str, Converter] = {
    **{f"aten.{n}.default": _unary(op) for n, op in _UNARY_NAMES.items()},
    **{f"aten.{n}.{ov}": _binary(op) for n, op in _BINARY_NAMES.items()
       for ov in ("Tensor", "Scalar", "default")},
    "aten.add.Tensor": _add_sub(Op.ADD), "aten.add.Scalar": _add_sub(Op.ADD),
    "aten.sub.Tensor": _add_sub(Op.SUB), "aten.sub.Scalar": _add_sub(Op.SUB),
    "aten.rsub.Tensor": _rsub, "aten.rsub.Scalar": _rsub,
    "aten.div.Tensor": _div, "aten.div.Scalar": _div, "aten.div.Tensor_mode": _div,
    "aten.div.Scalar_mode": _div, "aten.floor_divide.default": _floor_divide,
    "aten.pow.Tensor_Tensor": _pow, "aten.pow.Tensor_Scalar": _pow,
    "aten.pow.Scalar": lambda cx, a, out: _pow(cx, {"self": a["self"], "exponent": a["exponent"]}, out),
    "aten.gelu.default": lambda cx, a, out: cx.op(Op.GELU, [cx.tensor(a["self"])], approximate=a["approximate"]),
    "aten.hardtanh.default": lambda cx, a, out: cx.op(Op.HARDTANH, [cx.tensor(a["self"])],
                                                      min_val=a["min_val"], max_val=a["max_val"]),
    "aten.leaky_relu.default": lambda cx, a, out: cx.op(Op.LEAKY_RELU, [cx.tensor(a["self"])],
                                                        negative_slope=a["negative_slope"]),
    "aten.softplus.default": lambda cx, a, out: cx.op(Op.SOFTPLUS, [cx.tensor(a["self"])],
                                                      beta=a["beta"], threshold=a["threshold"]),
    "aten.elu.default": lambda cx, a, out: cx.op(Op.ELU, [cx.tensor(a["self"])], alpha=a["alpha"],
                                                 scale=a["scale"], input_scale=a["input_scale"]),
    "aten.round.default": _round, "aten.round.decimals": _round,
    "aten.where.self": _where,
    "aten.clamp.default": _clamp, "aten.clamp.Tensor": _clamp,
    "aten.clamp_min.default": _clamp_side("min"), "aten.clamp_max.default": _clamp_side("max"),
    "aten.clamp_min.Tensor": _clamp_side("min"), "aten.clamp_max.Tensor": _clamp_side("max"),
    "aten._to_copy.default": _to_copy, "aten.to.dtype": _to_copy,
    "aten.clone.default": _identity, "aten.alias.default": _identity,
    "aten.lift_fresh_copy.default": _identity, "aten.detach.default": _identity,
    "prims.convert_element_type.default": _convert_element_type,
}
