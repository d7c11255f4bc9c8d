"""ONNX's quantization ops converted by effc: torch-mlir lowers them through torch's quantized
tensors (or, with a scale computed at run time, not at all), which effc's IR does not have.
Here they are float arithmetic with rounding (half to even) and saturation, as ONNX defines them:

    QuantizeLinear(x, s, z)   = saturate(round(x / s) + z)
    DequantizeLinear(q, s, z) = (q - z) * s
    QLinearMatMul             = QuantizeLinear(DequantizeLinear(a) @ DequantizeLinear(b))
    DynamicQuantizeLinear(x)  = uint8 QuantizeLinear over the range of x and zero
"""

from __future__ import annotations

from typing import Any

import torch

from effc.ir import DType, Value

from .lowering import Unsupported
from .onnx_calls import AtenCalls, Outs, tensor as _tensor


_QUANTIZED = {DType.U8: (0, 255), DType.I8: (-128, 127), DType.I16: (-32768, 32767)}


def _quantize(aten: AtenCalls, x: Value, scale: Value, zero: Any, dtype: DType) -> Value:
    """saturate(round_half_even(x / scale) + zero) as ``dtype``."""
    lo, hi = _QUANTIZED[dtype]
    q = aten("aten.round", aten("aten.div.Tensor", x, scale))
    if zero is not None:
        q = aten("aten.add.Tensor", q, aten("aten._to_copy", zero, dtype=q.type.dtype.to_torch()))
    return aten("aten._to_copy", aten("aten.clamp", q, float(lo), float(hi)), dtype=dtype.to_torch())


def _spread(aten: AtenCalls, p: Any, x: Value, attrs: dict[str, Any]) -> Any:
    """A quantization parameter (scale or zero point) shaped to broadcast against ``x``: one
    value, one per index of ``axis``, or one per block of ``block_size`` along it."""
    if p is None or p.type.rank == 0 or x.type.rank == 0:
        return p
    axis = attrs.get("axis", 1) % x.type.rank
    block = attrs.get("block_size", 0)
    if block:
        n = x.type.shape[axis]
        p = aten("aten.repeat_interleave.self_int", p, block, axis)
        return aten("aten.slice.Tensor", p, axis, 0, n, 1)
    if p.type.rank == 1 and x.type.rank > 1:
        view = [1] * x.type.rank
        view[axis] = p.type.shape[0]
        return aten("aten.reshape", p, view)
    return p


def _optional(xs: list[Any], i: int) -> Value | None:
    return xs[i] if len(xs) > i and isinstance(xs[i], Value) else None


def quantize_linear(aten: AtenCalls, xs: list[Any], attrs: dict[str, Any], outs: Outs) -> tuple:
    """QuantizeLinear whose scale is computed at run time (torch-mlir needs it constant)."""
    x, scale = _tensor(xs[0], "x"), _tensor(xs[1], "y_scale")
    dtype = outs[0][0]
    if dtype not in _QUANTIZED:
        raise Unsupported(f"QuantizeLinear to {dtype}")
    return (_quantize(aten, x, _spread(aten, scale, x, attrs), _spread(aten, _optional(xs, 2), x, attrs), dtype),)


def dequantize_linear(aten: AtenCalls, xs: list[Any], attrs: dict[str, Any], outs: Outs) -> tuple:
    """(x - zero_point) * scale, per tensor, per axis or per block (torch-mlir goes through
    torch's quantized tensors, which effc does not have)."""
    x, scale = _tensor(xs[0], "x"), _tensor(xs[1], "x_scale")
    dtype = outs[0][0]
    if not dtype.is_float or x.type.dtype.is_float:
        raise Unsupported(f"DequantizeLinear of {x.type.dtype} to {dtype}")
    zero = _spread(aten, _optional(xs, 2), x, attrs)
    y = aten("aten._to_copy", x, dtype=torch.float32)
    if zero is not None:
        y = aten("aten.sub.Tensor", y, aten("aten._to_copy", zero, dtype=torch.float32))
    y = aten("aten.mul.Tensor", y, aten("aten._to_copy", _spread(aten, scale, x, attrs), dtype=torch.float32))
    return (aten("aten._to_copy", y, dtype=dtype.to_torch()),)


def _dequantized(aten: AtenCalls, x: Value, scale: Value, zero: Value, axis: int) -> Value:
    out = [(DType.F32, list(x.type.shape))]
    return dequantize_linear(aten, [x, scale, zero], {"axis": axis}, out)[0]


def qlinear_matmul(aten: AtenCalls, xs: list[Any], attrs: dict[str, Any], outs: Outs) -> tuple:
    """Quantized matmul: both operands dequantized (per tensor, a per row, b per column), a
    float32 matmul, the product quantized with the output's scale and zero point."""
    a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = (_tensor(x, "QLinearMatMul operand") for x in xs[:8])
    if a.type.rank < 2 or b.type.rank < 2:
        raise Unsupported("QLinearMatMul of vectors")
    product = aten("aten.matmul", _dequantized(aten, a, a_scale, a_zero, a.type.rank - 2),
                   _dequantized(aten, b, b_scale, b_zero, b.type.rank - 1))
    scale = aten("aten._to_copy", y_scale, dtype=torch.float32)
    return (_quantize(aten, product, scale, y_zero, outs[0][0]),)


def dynamic_quantize_linear(aten: AtenCalls, xs: list[Any], attrs: dict[str, Any], outs: Outs) -> tuple:
    """uint8 quantization of x over the range of its values and zero."""
    x = _tensor(xs[0], "x")
    dims = list(range(x.type.rank))
    zero = aten.constant(torch.zeros((), dtype=x.type.dtype.to_torch()))
    lo = aten("aten.minimum", aten("aten.amin", x, dims), zero)
    hi = aten("aten.maximum", aten("aten.amax", x, dims), zero)
    scale = aten("aten.div.Scalar", aten("aten.sub.Tensor", hi, lo), 255.0)
    shift = aten("aten.neg", aten("aten.div.Tensor", lo, scale))
    point = aten("aten._to_copy", aten("aten.clamp", aten("aten.round", shift), 0.0, 255.0), dtype=torch.uint8)
    return _quantize(aten, x, scale, point, DType.U8), scale, point


