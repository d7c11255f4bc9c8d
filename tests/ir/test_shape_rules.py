"""Shape rules agree with torch: the inferred type of each op equals the type torch returns.

Each case runs the real torch op on small random tensors and compares its result's dtype and
shape with ``infer``. Symbolic cases infer once with size symbols, then substitute several
concrete sizes and compare with torch at each.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import pytest
import sympy
import torch
import torch.nn.functional as F

from effc.ir import DType, Op, ShapeError, TensorType, infer, size_symbol
from effc.ir.types import as_dim

aten = torch.ops.aten
BIG = sys.maxsize  # what torch passes for an open-ended slice


def f(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype)


def i(*shape: int, dtype: torch.dtype = torch.int64, high: int = 5) -> torch.Tensor:
    return torch.randint(0, high, shape, dtype=dtype)


def b(*shape: int) -> torch.Tensor:
    return torch.rand(shape) > 0.5


def ty(t: torch.Tensor) -> TensorType:
    return TensorType(DType.from_torch(t.dtype), tuple(t.shape))


def results(out: Any) -> tuple[TensorType, ...]:
    return tuple(ty(t) for t in out) if isinstance(out, (tuple, list)) else (ty(out),)


Ref = Callable[..., Any]
CASES: list[Any] = []


def case(name: str, op: Op, inputs: Sequence[torch.Tensor], attrs: dict[str, Any], ref: Ref,
         first_only: bool = False) -> None:
    """Register a case; ``first_only`` compares only torch's first result (values of max+indices)."""
    CASES.append(pytest.param(op, list(inputs), attrs, ref, first_only, id=name))


torch.manual_seed(0)

# unary, each kind
case("neg", Op.NEG, [f(2, 3)], {}, torch.neg)
case("abs_i32", Op.ABS, [i(4, dtype=torch.int32)], {}, torch.abs)
case("relu_i64", Op.RELU, [i(2, 2)], {}, torch.relu)
case("floor_bf16", Op.FLOOR, [f(3, dtype=torch.bfloat16)], {}, torch.floor)
case("floor_int", Op.FLOOR, [i(3)], {}, torch.floor)
case("sign", Op.SIGN, [f(3)], {}, torch.sign)
case("bitwise_not_bool", Op.BITWISE_NOT, [b(3)], {}, torch.bitwise_not)
case("bitwise_not_i8", Op.BITWISE_NOT, [i(3, dtype=torch.int8)], {}, torch.bitwise_not)
case("hardtanh", Op.HARDTANH, [f(2, 3)], {"min_val": -1.0, "max_val": 1.0},
     lambda x: F.hardtanh(x, -1.0, 1.0))
case("leaky_relu", Op.LEAKY_RELU, [f(2, 3)], {"negative_slope": 0.1},
     lambda x: F.leaky_relu(x, 0.1))
case("exp_int", Op.EXP, [i(2, 3)], {}, torch.exp)
case("exp_f16", Op.EXP, [f(2, dtype=torch.float16)], {}, torch.exp)
case("sqrt_bool", Op.SQRT, [b(4)], {}, torch.sqrt)
case("sigmoid_f64", Op.SIGMOID, [f(2, dtype=torch.float64)], {}, torch.sigmoid)
case("gelu", Op.GELU, [f(2, 3)], {"approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh"))
case("softplus", Op.SOFTPLUS, [f(5)], {"beta": 2.0, "threshold": 10.0},
     lambda x: F.softplus(x, 2.0, 10.0))
case("elu", Op.ELU, [f(5)], {"alpha": 1.0, "scale": 1.0, "input_scale": 1.0},
     lambda x: aten.elu(x, 1.0, 1.0, 1.0))
case("erfinv", Op.ERFINV, [f(3).clamp(-0.9, 0.9)], {}, torch.erfinv)
case("logical_not", Op.LOGICAL_NOT, [f(3)], {}, torch.logical_not)
case("isnan", Op.ISNAN, [f(3)], {}, torch.isnan)
case("isinf_int", Op.ISINF, [i(3)], {}, torch.isinf)
case("clamp_int_float_bound", Op.CLAMP, [i(4)], {"min": 0.5, "max": None},
     lambda x: torch.clamp(x, min=0.5))
case("clamp_int", Op.CLAMP, [i(4, dtype=torch.int32)], {"min": 0, "max": 3},
     lambda x: torch.clamp(x, 0, 3))
case("clamp_f16", Op.CLAMP, [f(4, dtype=torch.float16)], {"min": None, "max": 1.0},
     lambda x: torch.clamp(x, max=1.0))

# binary: broadcasting, promotion across categories, zero-dim operands
case("add_broadcast", Op.ADD, [f(2, 3), f(3)], {}, torch.add)
case("add_i32_i64", Op.ADD, [i(3, dtype=torch.int32), i(3)], {}, torch.add)
case("add_i64_f16", Op.ADD, [i(3), f(3, dtype=torch.float16)], {}, torch.add)
case("mul_bool", Op.MUL, [b(3), b(3)], {}, torch.mul)
case("add_f32_0d_f64", Op.ADD, [f(2, 3), f(dtype=torch.float64)], {}, torch.add)
case("add_i64_0d_f64", Op.ADD, [i(3), f(dtype=torch.float64)], {}, torch.add)
case("add_0d_0d", Op.ADD, [i(dtype=torch.int32), f(dtype=torch.float16)], {}, torch.add)
case("add_bool_0d_i64", Op.ADD, [b(4), i()], {}, torch.add)
case("add_i8_0d_i64", Op.ADD, [i(4, dtype=torch.int8), i()], {}, torch.add)
case("add_0d_f16_dim_f32", Op.ADD, [f(dtype=torch.float16), f(2)], {}, torch.add)
case("div_int", Op.DIV, [i(3), i(3) + 1], {"rounding_mode": None}, torch.div)
case("div_floor_int", Op.DIV, [i(3), i(3) + 1], {"rounding_mode": "floor"},
     lambda x, y: torch.div(x, y, rounding_mode="floor"))
case("div_trunc_f32", Op.DIV, [f(3), f(3)], {"rounding_mode": "trunc"},
     lambda x, y: torch.div(x, y, rounding_mode="trunc"))
case("pow_int_float", Op.POW, [i(3), f(3)], {}, torch.pow)
case("maximum", Op.MAXIMUM, [f(1, 3, dtype=torch.float16), f(2, 1)], {}, torch.maximum)
case("fmod", Op.FMOD, [i(3, dtype=torch.int32), i(3, dtype=torch.int32) + 1], {}, torch.fmod)
case("remainder", Op.REMAINDER, [f(2, 3), f(3)], {}, torch.remainder)
case("atan2_int", Op.ATAN2, [i(3), i(3)], {}, torch.atan2)
case("bitwise_and", Op.BITWISE_AND, [i(3, dtype=torch.int32), i(3)], {}, torch.bitwise_and)
case("bitwise_xor_bool", Op.BITWISE_XOR, [b(3), b(3)], {}, torch.bitwise_xor)
case("eq_mixed", Op.EQ, [f(2, 3), i(3)], {}, torch.eq)
case("lt_broadcast", Op.LT, [f(2, 1), f(1, 4)], {}, torch.lt)
case("logical_and", Op.LOGICAL_AND, [f(3), i(3)], {}, torch.logical_and)
case("logical_xor_0d", Op.LOGICAL_XOR, [b(2, 2), b()], {}, torch.logical_xor)

# where, cast
case("where", Op.WHERE, [b(2, 1), f(1, 3), f(dtype=torch.float64)], {}, torch.where)
case("where_promote", Op.WHERE, [b(3), i(3), f(3, dtype=torch.float16)], {}, torch.where)
case("cast_bf16", Op.CAST, [f(2, 3)], {"dtype": DType.BF16}, lambda x: x.to(torch.bfloat16))
case("cast_bool", Op.CAST, [i(2)], {"dtype": DType.BOOL}, lambda x: x.to(torch.bool))

# reductions and scans
R = {"keepdim": False}
case("sum_dim", Op.SUM, [f(2, 3, 4)], {"dims": (1,), **R, "dtype": None}, lambda x: torch.sum(x, (1,)))
case("sum_all_i32", Op.SUM, [i(2, 3, dtype=torch.int32)], {"dims": (), **R, "dtype": None}, torch.sum)
case("sum_keepdim", Op.SUM, [f(2, 3, 4)], {"dims": (-1, 0), "keepdim": True, "dtype": None},
     lambda x: torch.sum(x, (-1, 0), keepdim=True))
case("sum_dtype", Op.SUM, [f(2, 3)], {"dims": (0,), **R, "dtype": DType.F64},
     lambda x: torch.sum(x, (0,), dtype=torch.float64))
case("sum_bool", Op.SUM, [b(5)], {"dims": (), **R, "dtype": None}, torch.sum)
case("sum_0d", Op.SUM, [f()], {"dims": (), "keepdim": True, "dtype": None},
     lambda x: torch.sum(x, (), keepdim=True))
case("mean_keepdim", Op.MEAN, [f(2, 3, 4)], {"dims": (0, 2), "keepdim": True},
     lambda x: torch.mean(x, (0, 2), keepdim=True))
case("amax", Op.AMAX, [i(2, 3, dtype=torch.int32)], {"dims": (1,), **R}, lambda x: torch.amax(x, (1,)))
case("amin", Op.AMIN, [f(2, 3)], {"dims": (), **R}, lambda x: torch.amin(x, ()))
case("prod_i16", Op.PROD, [i(2, 3, dtype=torch.int16)], {"dims": (1,), **R},
     lambda x: torch.prod(x, 1))
case("argmax_keepdim", Op.ARGMAX, [f(2, 3, 4)], {"dim": 1, "keepdim": True},
     lambda x: torch.argmax(x, 1, keepdim=True))
case("argmax_all", Op.ARGMAX, [f(2, 3)], {"dim": None, "keepdim": False}, torch.argmax)
case("argmin_all_keepdim", Op.ARGMIN, [f(2, 3)], {"dim": None, "keepdim": True},
     lambda x: torch.argmin(x, keepdim=True))
case("var", Op.VAR, [f(2, 3, 4)], {"dims": (1,), "correction": 0, **R},
     lambda x: aten.var.correction(x, [1], correction=0))
case("std_all_keepdim", Op.STD, [f(2, 3)], {"dims": None, "correction": 1, "keepdim": True},
     lambda x: aten.std.correction(x, None, correction=1, keepdim=True))
case("any", Op.ANY, [f(2, 3)], {"dims": (0,), **R}, lambda x: aten.any.dims(x, [0]))
case("all", Op.ALL, [b(2, 3)], {"dims": (), **R}, torch.all)
case("cumsum_int", Op.CUMSUM, [i(2, 3, dtype=torch.int32)], {"dim": 1, "dtype": None},
     lambda x: torch.cumsum(x, 1))
case("cumsum_f16", Op.CUMSUM, [f(2, 3, dtype=torch.float16)], {"dim": -1, "dtype": None},
     lambda x: torch.cumsum(x, -1))
case("cumsum_dtype", Op.CUMSUM, [f(4)], {"dim": 0, "dtype": DType.F64},
     lambda x: torch.cumsum(x, 0, dtype=torch.float64))

# matmul family
case("matmul_1d_1d", Op.MATMUL, [f(4), f(4)], {}, torch.matmul)
case("matmul_1d_2d", Op.MATMUL, [f(4), f(4, 3)], {}, torch.matmul)
case("matmul_2d_1d", Op.MATMUL, [f(2, 4), f(4)], {}, torch.matmul)
case("matmul_2d", Op.MATMUL, [f(2, 4), f(4, 3)], {}, torch.matmul)
case("matmul_batched", Op.MATMUL, [f(2, 1, 3, 4), f(5, 4, 6)], {}, torch.matmul)
case("matmul_1d_3d", Op.MATMUL, [f(4), f(2, 4, 3)], {}, torch.matmul)
case("addmm", Op.ADDMM, [f(3), f(2, 4), f(4, 3)], {"beta": 1.0, "alpha": 2.0},
     lambda c, x, y: torch.addmm(c, x, y, beta=1.0, alpha=2.0))
case("linear_bias", Op.LINEAR, [f(2, 5, 4), f(3, 4), f(3)], {}, F.linear)
case("linear_1d", Op.LINEAR, [f(4), f(3, 4)], {}, F.linear)


# convolution: aten.convolution(x, w, bias, stride, padding, dilation, transposed, out_pad, groups)
def conv(stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...], groups: int,
         transposed: bool = False, output_padding: tuple[int, ...] | None = None) -> tuple[dict[str, Any], Ref]:
    op_ = output_padding or (0,) * len(stride)
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
             "transposed": transposed, "output_padding": op_}

    def ref(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return aten.convolution(x, w, bias, stride, padding, dilation, transposed, op_, groups)
    return attrs, ref


case("conv1d", Op.CONVOLUTION, [f(2, 4, 10), f(6, 4, 3)], *conv((2,), (1,), (1,), 1))
case("conv2d_groups", Op.CONVOLUTION, [f(1, 4, 9, 11), f(6, 2, 3, 3), f(6)],
     *conv((2, 1), (1, 2), (2, 1), 2))
case("conv2d_depthwise", Op.CONVOLUTION, [f(1, 4, 8, 8), f(4, 1, 3, 3)], *conv((1, 1), (0, 0), (1, 1), 4))
case("conv_transposed2d", Op.CONVOLUTION, [f(1, 4, 5, 5), f(4, 3, 3, 3), f(3)],
     *conv((2, 2), (1, 1), (1, 1), 1, True, (1, 1)))
case("conv_transposed2d_groups", Op.CONVOLUTION, [f(1, 4, 5, 6), f(4, 3, 3, 2)],
     *conv((1, 2), (0, 1), (2, 1), 2, True, (0, 1)))
case("conv_transposed1d", Op.CONVOLUTION, [f(2, 3, 7), f(3, 5, 4)], *conv((3,), (2,), (1,), 1, True))

# pools: aten.max_pool2d(x, k, s, p, d, ceil); aten.avg_pool2d(x, k, s, p, ceil, incl_pad, divisor)
MP = {"dilation": (1, 1), "ceil_mode": False}
case("max_pool2d", Op.MAX_POOL, [f(2, 3, 9, 9)], {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), **MP},
     lambda x: aten.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], False))
case("max_pool2d_ceil", Op.MAX_POOL, [f(1, 2, 10, 5)],
     {"kernel": (3, 2), "stride": (2, 2), "padding": (0, 1), "dilation": (1, 1), "ceil_mode": True},
     lambda x: aten.max_pool2d(x, [3, 2], [2, 2], [0, 1], [1, 1], True))
case("max_pool2d_dilation_unbatched", Op.MAX_POOL, [f(3, 11, 11)],
     {"kernel": (2, 3), "stride": (1, 2), "padding": (0, 1), "dilation": (2, 2), "ceil_mode": False},
     lambda x: aten.max_pool2d(x, [2, 3], [1, 2], [0, 1], [2, 2], False))
case("max_pool1d", Op.MAX_POOL, [f(2, 3, 9)],
     {"kernel": (2,), "stride": (2,), "padding": (0,), "dilation": (1,), "ceil_mode": True},
     lambda x: aten.max_pool1d(x, [2], [2], [0], [1], True))
case("avg_pool2d", Op.AVG_POOL, [f(2, 3, 8, 7)],
     {"kernel": (2, 3), "stride": (2, 2), "padding": (1, 1), "ceil_mode": False,
      "count_include_pad": True, "divisor_override": None},
     lambda x: aten.avg_pool2d(x, [2, 3], [2, 2], [1, 1], False, True, None))
case("avg_pool2d_ceil", Op.AVG_POOL, [f(1, 1, 7, 7)],
     {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 0), "ceil_mode": True,
      "count_include_pad": False, "divisor_override": 2},
     lambda x: aten.avg_pool2d(x, [3, 3], [2, 2], [1, 0], True, False, 2))
case("avg_pool1d", Op.AVG_POOL, [f(2, 3, 10)],
     {"kernel": (3,), "stride": (3,), "padding": (1,), "ceil_mode": True,
      "count_include_pad": True, "divisor_override": None},
     lambda x: aten.avg_pool1d(x, [3], [3], [1], True, True))
case("adaptive_avg_pool2d", Op.ADAPTIVE_AVG_POOL, [f(2, 3, 7, 9)], {"output_size": (3, 4)},
     lambda x: F.adaptive_avg_pool2d(x, (3, 4)))
case("adaptive_avg_pool1d", Op.ADAPTIVE_AVG_POOL, [f(2, 3, 7)], {"output_size": (1,)},
     lambda x: F.adaptive_avg_pool1d(x, 1))
case("adaptive_max_pool2d", Op.ADAPTIVE_MAX_POOL, [f(3, 8, 5)], {"output_size": (2, 2)},
     lambda x: aten.adaptive_max_pool2d(x, [2, 2]), first_only=True)

# norms and softmax
case("batch_norm", Op.BATCH_NORM, [f(2, 3, 4, 4), f(3), f(3).abs(), f(3), f(3)],
     {"eps": 1e-5, "has_weight": True, "has_bias": True},
     lambda x, m, v, w, bias: F.batch_norm(x, m, v, w, bias, False, 0.1, 1e-5))
case("batch_norm_plain", Op.BATCH_NORM, [f(2, 3), f(3), f(3).abs()],
     {"eps": 1e-5, "has_weight": False, "has_bias": False},
     lambda x, m, v: F.batch_norm(x, m, v, None, None, False, 0.1, 1e-5))
case("layer_norm", Op.LAYER_NORM, [f(2, 5, 4), f(4), f(4)],
     {"normalized_shape": (4,), "eps": 1e-5, "has_weight": True, "has_bias": True},
     lambda x, w, bias: F.layer_norm(x, (4,), w, bias, 1e-5))
case("layer_norm_bf16_2d", Op.LAYER_NORM, [f(2, 3, 4, dtype=torch.bfloat16)],
     {"normalized_shape": (3, 4), "eps": 1e-5, "has_weight": False, "has_bias": False},
     lambda x: F.layer_norm(x, (3, 4)))
case("group_norm", Op.GROUP_NORM, [f(2, 4, 5), f(4), f(4)],
     {"groups": 2, "eps": 1e-5, "has_weight": True, "has_bias": True},
     lambda x, w, bias: F.group_norm(x, 2, w, bias, 1e-5))
case("rms_norm", Op.RMS_NORM, [f(2, 3, 4), f(4)], {"normalized_shape": (4,), "eps": 1e-6, "has_weight": True},
     lambda x, w: F.rms_norm(x, (4,), w, 1e-6))
case("softmax", Op.SOFTMAX, [f(2, 3)], {"dim": -1}, lambda x: torch.softmax(x, -1))
case("softmax_f16", Op.SOFTMAX, [f(2, 3, dtype=torch.float16)], {"dim": 0}, lambda x: torch.softmax(x, 0))
case("log_softmax_f64", Op.LOG_SOFTMAX, [f(4, dtype=torch.float64)], {"dim": 0},
     lambda x: torch.log_softmax(x, 0))

# layout
case("reshape_minus1", Op.RESHAPE, [f(2, 3, 4)], {"shape": (4, -1)}, lambda x: x.reshape(4, -1))
case("reshape_middle_minus1", Op.RESHAPE, [f(6)], {"shape": (2, -1, 1)}, lambda x: x.reshape(2, -1, 1))
case("reshape_to_0d", Op.RESHAPE, [f(1, 1)], {"shape": ()}, lambda x: x.reshape(()))
case("permute", Op.PERMUTE, [f(2, 3, 4)], {"dims": (2, 0, 1)}, lambda x: x.permute(2, 0, 1))
case("permute_negative", Op.PERMUTE, [f(2, 3, 4)], {"dims": (-1, 0, 1)}, lambda x: x.permute(-1, 0, 1))
case("expand", Op.EXPAND, [f(3, 1)], {"shape": (2, 3, 4)}, lambda x: x.expand(2, 3, 4))
case("expand_minus1", Op.EXPAND, [f(3, 1)], {"shape": (2, -1, 5)}, lambda x: x.expand(2, -1, 5))
case("squeeze", Op.SQUEEZE, [f(1, 3, 1, 2)], {"dims": (0, 2)}, lambda x: aten.squeeze.dims(x, [0, 2]))
case("squeeze_not_one", Op.SQUEEZE, [f(2, 3)], {"dims": (1,)}, lambda x: aten.squeeze.dims(x, [1]))
case("squeeze_none", Op.SQUEEZE, [f(1, 2)], {"dims": ()}, lambda x: aten.squeeze.dims(x, []))
case("squeeze_negative", Op.SQUEEZE, [f(2, 1)], {"dims": (-1,)}, lambda x: x.squeeze(-1))
case("unsqueeze", Op.UNSQUEEZE, [f(2, 3)], {"dim": 0}, lambda x: x.unsqueeze(0))
case("unsqueeze_last", Op.UNSQUEEZE, [f(2, 3)], {"dim": -1}, lambda x: x.unsqueeze(-1))


def sl(dim: int, start: int, end: int, step: int) -> tuple[dict[str, Any], Ref]:
    return ({"dim": dim, "start": start, "end": end, "step": step},
            lambda x: aten.slice.Tensor(x, dim, start, end, step))


case("slice", Op.SLICE, [f(2, 5)], *sl(1, 1, 3, 1))
case("slice_negative", Op.SLICE, [f(2, 5)], *sl(1, -3, -1, 1))
case("slice_huge_end", Op.SLICE, [f(6, 2)], *sl(0, 1, BIG, 2))
case("slice_step3", Op.SLICE, [f(7)], *sl(0, 0, 7, 3))
case("slice_start_past_end", Op.SLICE, [f(4, 3)], *sl(0, 9, BIG, 1))
case("slice_very_negative_start", Op.SLICE, [f(4, 3)], *sl(-1, -100, 2, 1))
case("slice_empty", Op.SLICE, [f(5)], *sl(0, 3, 1, 1))
case("select", Op.SELECT, [f(2, 3, 4)], {"dim": 1, "index": -1}, lambda x: x.select(1, -1))
case("select_first", Op.SELECT, [f(2, 3)], {"dim": 0, "index": 0}, lambda x: x.select(0, 0))
case("cat", Op.CAT, [f(2, 3), f(1, 3), f(4, 3)], {"dim": 0}, lambda *xs: torch.cat(xs, 0))
case("cat_promote", Op.CAT, [i(2, 3, dtype=torch.int32), f(2, 1, dtype=torch.float16)], {"dim": -1},
     lambda *xs: torch.cat(xs, -1))
case("cat_bool_int", Op.CAT, [b(2), i(3)], {"dim": 0}, lambda *xs: torch.cat(xs, 0))
case("split", Op.SPLIT, [f(6, 4)], {"dim": 0, "sizes": (2, 3, 1)},
     lambda x: aten.split_with_sizes(x, [2, 3, 1], 0))
case("split_last", Op.SPLIT, [f(2, 4)], {"dim": -1, "sizes": (4,)},
     lambda x: aten.split_with_sizes(x, [4], -1))
case("pad_constant", Op.PAD, [f(2, 3)], {"pads": (1, 2), "mode": "constant", "value": 0.0},
     lambda x: F.pad(x, (1, 2)))
case("pad_two_dims", Op.PAD, [f(2, 3, 4)], {"pads": (1, 1, 2, 0), "mode": "constant", "value": 1.0},
     lambda x: F.pad(x, (1, 1, 2, 0), value=1.0))
case("pad_negative", Op.PAD, [f(2, 5)], {"pads": (-1, 2), "mode": "constant", "value": 0.0},
     lambda x: F.pad(x, (-1, 2)))
case("pad_reflect", Op.PAD, [f(1, 2, 5)], {"pads": (2, 2), "mode": "reflect", "value": None},
     lambda x: F.pad(x, (2, 2), mode="reflect"))
case("pad_replicate", Op.PAD, [f(1, 2, 4, 4)], {"pads": (1, 0, 0, 2), "mode": "replicate", "value": None},
     lambda x: F.pad(x, (1, 0, 0, 2), mode="replicate"))

# indexing
case("gather", Op.GATHER, [f(3, 4), i(3, 2, high=4)], {"dim": 1}, lambda x, j: torch.gather(x, 1, j))
case("gather_smaller", Op.GATHER, [f(3, 4), i(2, 2, high=3)], {"dim": 0}, lambda x, j: torch.gather(x, 0, j))
case("index_select", Op.INDEX_SELECT, [f(4, 3), i(5, high=4)], {"dim": 0},
     lambda x, j: torch.index_select(x, 0, j))
case("index_select_0d", Op.INDEX_SELECT, [f(4, 3), i(high=3)], {"dim": -1},
     lambda x, j: torch.index_select(x, -1, j))
case("embedding", Op.EMBEDDING, [f(10, 4), i(2, 3, high=10)], {"padding_idx": None}, lambda w, j: F.embedding(j, w))
case("embedding_i32", Op.EMBEDDING, [f(10, 4, dtype=torch.float16), i(5, dtype=torch.int32, high=10)],
     {"padding_idx": 0}, lambda w, j: F.embedding(j, w, padding_idx=0))

# creation
case("arange_int", Op.ARANGE, [], {"start": 0, "end": 10, "step": 3, "dtype": DType.I64},
     lambda: torch.arange(0, 10, 3))
case("arange_float", Op.ARANGE, [], {"start": 0.5, "end": 2.0, "step": 0.25, "dtype": DType.F32},
     lambda: torch.arange(0.5, 2.0, 0.25))
case("arange_negative_step", Op.ARANGE, [], {"start": 5, "end": 0, "step": -2, "dtype": DType.I32},
     lambda: torch.arange(5, 0, -2, dtype=torch.int32))
case("full", Op.FULL, [], {"shape": (2, 3), "value": 1.5, "dtype": DType.F16},
     lambda: torch.full((2, 3), 1.5, dtype=torch.float16))
case("full_0d", Op.FULL, [], {"shape": (), "value": 1, "dtype": DType.I64}, lambda: torch.full((), 1))

# attention
SD = {"scale": None, "is_causal": False, "enable_gqa": False}
case("sdpa", Op.SDPA, [f(2, 4, 5, 8), f(2, 4, 7, 8), f(2, 4, 7, 6)], SD, F.scaled_dot_product_attention)
case("sdpa_mask", Op.SDPA, [f(2, 5, 8), f(2, 7, 8), f(2, 7, 8), b(5, 7)], {**SD, "scale": 0.5},
     lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m, scale=0.5))
case("sdpa_gqa_causal", Op.SDPA, [f(1, 8, 5, 8), f(1, 2, 5, 8), f(1, 2, 5, 8)],
     {"scale": None, "is_causal": True, "enable_gqa": True},
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
case("sdpa_bf16", Op.SDPA, [f(1, 3, 4, dtype=torch.bfloat16)] * 3, SD, F.scaled_dot_product_attention)


def test_every_family_is_covered() -> None:
    covered = {p.values[0].family for p in CASES}
    from effc.ir import Family
    assert covered == set(Family) - {Family.CONSTANT, Family.EXTERN, Family.KERNEL}  # kernel: test_kernel_node.py


@pytest.mark.parametrize("op,inputs,attrs,ref,first_only", CASES)
def test_rule_matches_torch(op: Op, inputs: list[torch.Tensor], attrs: dict[str, Any], ref: Ref,
                            first_only: bool) -> None:
    want = results(ref(*inputs))
    got = infer(op, [ty(t) for t in inputs], attrs)
    assert got[:1] == want[:1] if first_only else got == want


# -- symbolic shapes: infer once, then compare with torch at several concrete sizes

# Like torch's dynamic shapes, the rules take a size symbol to be at least 2 (x[-2:] has 2 rows).
s0, s1 = size_symbol("s0"), size_symbol("s1")


def f32(*shape: Any) -> TensorType:
    return TensorType(DType.F32, shape)


def subst(t: TensorType, env: dict[sympy.Symbol, int]) -> TensorType:
    return t.with_shape(as_dim(sympy.sympify(d).subs(env)) for d in t.shape)


SYM: list[Any] = [
    pytest.param(Op.RESHAPE, [f32(s0, 4, 8)], {"shape": (s0, -1)}, lambda x: x.reshape(x.shape[0], -1),
                 id="reshape_keep_batch"),
    pytest.param(Op.RESHAPE, [f32(2 * s0, 6)], {"shape": (s0, -1)}, lambda x: x.reshape(x.shape[0] // 2, -1),
                 id="reshape_fold"),
    pytest.param(Op.RESHAPE, [f32(s0, s1)], {"shape": (-1,)}, lambda x: x.reshape(-1), id="reshape_flatten"),
    pytest.param(Op.MATMUL, [f32(s0, 8), f32(8, s1)], {}, torch.matmul, id="matmul_2d"),
    pytest.param(Op.MATMUL, [f32(s1, s0, 8), f32(8, 3)], {}, torch.matmul, id="matmul_batched"),
    pytest.param(Op.SLICE, [f32(s0, 3)], {"dim": 0, "start": 1, "end": BIG, "step": 2},
                 lambda x: x[1::2], id="slice_step"),
    pytest.param(Op.SLICE, [f32(4, s0)], {"dim": 1, "start": 0, "end": -1, "step": 1},
                 lambda x: x[:, :-1], id="slice_negative_end"),
    pytest.param(Op.SLICE, [f32(s0)], {"dim": 0, "start": -2, "end": BIG, "step": 1},
                 lambda x: x[-2:], id="slice_negative_start"),
    pytest.param(Op.CONVOLUTION, [f32(1, 3, s0, s1), f32(4, 3, 3, 2)], conv((2, 1), (1, 0), (1, 2), 1)[0],
                 conv((2, 1), (1, 0), (1, 2), 1)[1], id="conv2d"),
    pytest.param(Op.CONVOLUTION, [f32(1, 4, s0), f32(4, 2, 3)], conv((2,), (1,), (1,), 2, True, (1,))[0],
                 conv((2,), (1,), (1,), 2, True, (1,))[1], id="conv_transposed"),
    pytest.param(Op.MAX_POOL, [f32(1, 2, s0)],
                 {"kernel": (3,), "stride": (2,), "padding": (1,), "dilation": (1,), "ceil_mode": False},
                 lambda x: aten.max_pool1d(x, [3], [2], [1], [1], False), id="max_pool"),
    pytest.param(Op.CAT, [f32(s0, 4), f32(s1, 4), f32(2, 4)], {"dim": 0},
                 lambda *xs: torch.cat(xs, 0), id="cat"),
]


@pytest.mark.parametrize("op,types,attrs,ref", SYM)
@pytest.mark.parametrize("sizes", [(5, 7), (8, 8), (9, 12)])
def test_symbolic_rule_matches_torch(op: Op, types: list[TensorType], attrs: dict[str, Any], ref: Ref,
                                     sizes: tuple[int, int]) -> None:
    got = infer(op, types, attrs)
    env = {s0: sizes[0], s1: sizes[1]}
    inputs = [torch.randn(subst(t, env).shape) for t in types]  # type: ignore[arg-type]
    assert tuple(subst(t, env) for t in got) == results(ref(*inputs))


def test_symbolic_results_read_well() -> None:
    assert str(infer(Op.RESHAPE, [f32(s0, 4, 8)], {"shape": (-1,)})[0]) == "f32[32*s0]"
    assert str(infer(Op.CAT, [f32(s0, 4), f32(s1, 4)], {"dim": 0})[0]) == "f32[s0+s1, 4]"
    attrs = {"dim": 0, "start": 1, "end": BIG, "step": 1}
    assert str(infer(Op.SLICE, [f32(s0)], attrs)[0]) == "f32[s0-1]"


# -- ill-typed operands

BAD: list[Any] = [
    pytest.param(Op.ADD, [f32(2, 3), f32(4)], {}, "broadcast", id="add_no_broadcast"),
    pytest.param(Op.MATMUL, [f32(2, 3), f32(4, 5)], {}, "contraction", id="matmul_mismatch"),
    pytest.param(Op.MATMUL, [f32(), f32(3)], {}, "rank", id="matmul_0d"),
    pytest.param(Op.RESHAPE, [f32(2, 3)], {"shape": (4, -1)}, "reshape", id="reshape_indivisible"),
    pytest.param(Op.RESHAPE, [f32(5)], {"shape": (2, 3)}, "reshape", id="reshape_numel"),
    pytest.param(Op.RESHAPE, [f32(6)], {"shape": (-1, -1)}, "-1", id="reshape_two_minus1"),
    pytest.param(Op.CONVOLUTION, [f32(1, 3, 8, 8), f32(4, 2, 3, 3)], conv((1, 1), (0, 0), (1, 1), 1)[0],
                 "channels", id="conv_channels"),
    pytest.param(Op.CONVOLUTION, [f32(1, 3, 2, 2), f32(4, 3, 3, 3)], conv((1, 1), (0, 0), (1, 1), 1)[0],
                 "does not fit", id="conv_window_too_big"),
    pytest.param(Op.CAT, [f32(2, 3), f32(3)], {"dim": 0}, "rank", id="cat_rank"),
    pytest.param(Op.CAT, [f32(2, 3), f32(2, 4)], {"dim": 0}, "differ", id="cat_other_axis"),
    pytest.param(Op.SPLIT, [f32(5)], {"dim": 0, "sizes": (2, 2)}, "add up", id="split_sizes"),
    pytest.param(Op.SOFTMAX, [TensorType(DType.I64, (3,))], {"dim": 0}, "floating", id="softmax_int"),
    pytest.param(Op.MEAN, [TensorType(DType.I32, (3,))], {"dims": (), "keepdim": False}, "floating",
                 id="mean_int"),
    pytest.param(Op.WHERE, [f32(3), f32(3), f32(3)], {}, "bool", id="where_float_condition"),
    pytest.param(Op.PERMUTE, [f32(2, 3)], {"dims": (0, 0)}, "permutation", id="permute_repeat"),
    pytest.param(Op.SOFTMAX, [f32(2, 3)], {"dim": 2}, "out of range", id="axis_out_of_range"),
    pytest.param(Op.SLICE, [f32(4)], {"dim": 0, "start": 0, "end": 4, "step": 0}, "step", id="slice_step0"),
    pytest.param(Op.BITWISE_AND, [f32(2), f32(2)], {}, "integer", id="bitwise_float"),
    pytest.param(Op.GATHER, [f32(2, 3), f32(2, 3)], {"dim": 0}, "integers", id="gather_float_index"),
    pytest.param(Op.NEG, [f32(2), f32(2)], {}, "inputs", id="arity"),
    pytest.param(Op.GELU, [f32(2)], {}, "missing", id="missing_attribute"),
    pytest.param(Op.ADD, [f32(s0), f32(s1)], {}, "broadcast", id="symbolic_no_broadcast"),
]


@pytest.mark.parametrize("op,types,attrs,words", BAD)
def test_rule_rejects(op: Op, types: list[TensorType], attrs: dict[str, Any], words: str) -> None:
    with pytest.raises(ShapeError, match=words):
        infer(op, types, attrs)


def test_found_by_property_search() -> None:
    """Rule defects found while writing the graph strategies."""
    from effc.ir import DType, Op, ShapeError, TensorType, infer, size_symbol
    import sympy
    s0 = size_symbol("s0")
    (t,) = infer(Op.SLICE, [TensorType(DType.F32, (s0,))], {"dim": 0, "start": 0, "end": 3, "step": 1})
    assert t.shape[0] == sympy.Min(3, s0)
    with pytest.raises(ShapeError):
        infer(Op.SUB, [TensorType(DType.F32, (2,)), TensorType(DType.BOOL, ())], {})
    with pytest.raises(ShapeError):
        infer(Op.CAT, [TensorType(DType.F32, ())], {"dim": 0})
    with pytest.raises(ShapeError):
        infer(Op.PAD, [TensorType(DType.F32, (1, 2, 3, 4))], {"pads": (1, 1), "mode": "reflect", "value": 0.0})
    (t,) = infer(Op.PAD, [TensorType(DType.F32, (1, 2, 3, 4))], {"pads": (1, 1, 2, 2), "mode": "reflect", "value": 0.0})
    assert t.shape == (1, 2, 7, 6)
