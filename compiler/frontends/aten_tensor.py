"""Op-table entries for aten reductions, linear algebra, convolution, pooling, norms,
softmax and attention."""

from __future__ import annotations

from typing import Any, Sequence

from effc.ir import DType, Op, TensorType, Value
from effc.ir.types import dims_equal

from .lowering import NOT_COMPUTED, Args, Converter, Lowering, Unsupported, dtype_arg, int_list


def _dims(x: Any) -> tuple:
    return () if x is None else int_list(x)


def _reduce(op: Op, dim_key: str = "dim") -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
        x = cx.tensor(a["self"])
        dims = _dims(a.get(dim_key))
        keep = bool(a.get("keepdim", False))
        if op in (Op.SUM, Op.PROD):
            return cx.op(op, [x], dims=dims, keepdim=keep, **({"dtype": dtype_arg(a.get("dtype"))} if op is Op.SUM else {}))
        if a.get("dtype") is not None:
            x = cx.cast(x, dtype_arg(a["dtype"]))  # type: ignore[arg-type]
        return cx.op(op, [x], dims=dims, keepdim=keep)
    return conv


def _prod(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    x = cx.tensor(a["self"])
    if a.get("dtype") is not None:
        x = cx.cast(x, dtype_arg(a["dtype"]))  # type: ignore[arg-type]
    dims = _dims(a.get("dim"))
    return cx.op(Op.PROD, [x], dims=dims, keepdim=bool(a.get("keepdim", False)))


def _arg(op: Op) -> Converter:
    return lambda cx, a, out: cx.op(op, [cx.tensor(a["self"])], dim=a.get("dim"),
                                    keepdim=bool(a.get("keepdim", False)))


def _var(op: Op) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
        corr = a.get("correction")
        if "unbiased" in a:
            corr = 1 if a["unbiased"] else 0
        return cx.op(op, [cx.tensor(a["self"])], dims=_dims(a.get("dim")),
                     correction=1 if corr is None else corr, keepdim=bool(a.get("keepdim", False)))
    return conv


def _var_mean(cx: Lowering, a: Args, out: Sequence[TensorType]) -> tuple[Value, Value]:
    x = cx.tensor(a["self"])
    dims, keep = _dims(a.get("dim")), bool(a.get("keepdim", False))
    corr = a.get("correction")
    var = cx.op(Op.VAR, [x], dims=dims, correction=1 if corr is None else corr, keepdim=keep)
    return var, cx.op(Op.MEAN, [x], dims=dims, keepdim=keep)


def _max_dim(vop: Op, iop: Op) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> tuple[Value, Value]:
        x = cx.tensor(a["self"])
        keep = bool(a.get("keepdim", False))
        return (cx.op(vop, [x], dims=(a["dim"],), keepdim=keep),
                cx.op(iop, [x], dim=a["dim"], keepdim=keep))
    return conv


def _any_all(op: Op) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
        return cx.op(op, [cx.tensor(a["self"])], dims=_dims(a.get("dim")),
                     keepdim=bool(a.get("keepdim", False)))
    return conv


def _matmul(lhs: str, rhs: str) -> Converter:
    return lambda cx, a, out: cx.op(Op.MATMUL, [cx.tensor(a[lhs]), cx.tensor(a[rhs])])


def _addmm(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    return cx.op(Op.ADDMM, [cx.tensor(a["self"]), cx.tensor(a["mat1"]), cx.tensor(a["mat2"])],
                 beta=a.get("beta", 1), alpha=a.get("alpha", 1))


def _linear(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    ins = [cx.tensor(a["input"]), cx.tensor(a["weight"])]
    if a.get("bias") is not None:
        ins.append(cx.tensor(a["bias"]))
    return cx.op(Op.LINEAR, ins)


def _convolution(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    x, w = cx.tensor(a["input"]), cx.tensor(a["weight"])
    n = w.type.rank - 2
    ins = [x, w] + ([cx.tensor(a["bias"])] if a.get("bias") is not None else [])
    return cx.op(Op.CONVOLUTION, ins, stride=int_list(a["stride"], n), padding=int_list(a["padding"], n),
                 dilation=int_list(a["dilation"], n), groups=a["groups"], transposed=bool(a["transposed"]),
                 output_padding=int_list(a["output_padding"], n))


def _max_pool(n: int, with_indices: bool) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Any:
        k = int_list(a["kernel_size"], n)
        stride = int_list(a.get("stride") or k, n)
        v = cx.op(Op.MAX_POOL, [cx.tensor(a["self"])], kernel=k, stride=stride,
                  padding=int_list(a.get("padding", 0), n), dilation=int_list(a.get("dilation", 1), n),
                  ceil_mode=bool(a.get("ceil_mode", False)))
        return (v, NOT_COMPUTED) if with_indices else v
    return conv


def _avg_pool(n: int) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
        k = int_list(a["kernel_size"], n)
        return cx.op(Op.AVG_POOL, [cx.tensor(a["self"])], kernel=k,
                     stride=int_list(a.get("stride") or k, n), padding=int_list(a.get("padding", 0), n),
                     ceil_mode=bool(a.get("ceil_mode", False)),
                     count_include_pad=bool(a.get("count_include_pad", True)),
                     divisor_override=a.get("divisor_override"))
    return conv


def _adaptive(op: Op, n: int, with_indices: bool = False) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Any:
        v = cx.op(op, [cx.tensor(a["self"])], output_size=int_list(a["output_size"], n))
        return (v, NOT_COMPUTED) if with_indices else v
    return conv


def _affine(cx: Lowering, w: Any, b: Any) -> tuple[list[Value], dict]:
    ins = [cx.tensor(v) for v in (w, b) if v is not None]
    return ins, {"has_weight": w is not None, "has_bias": b is not None}


def _batch_norm(cx: Lowering, a: Args, out: Sequence[TensorType]) -> tuple:
    if a.get("training"):
        raise Unsupported("batch norm in training mode")
    if a.get("running_mean") is None or a.get("running_var") is None:
        raise Unsupported("batch norm without running statistics")
    ins, flags = _affine(cx, a.get("weight"), a.get("bias"))
    v = cx.op(Op.BATCH_NORM, [cx.tensor(a["input"]), cx.tensor(a["running_mean"]),
                              cx.tensor(a["running_var"]), *ins], eps=a["eps"], **flags)
    return (v, NOT_COMPUTED, NOT_COMPUTED)


def _layer_norm(cx: Lowering, a: Args, out: Sequence[TensorType]) -> tuple:
    ins, flags = _affine(cx, a.get("weight"), a.get("bias"))
    v = cx.op(Op.LAYER_NORM, [cx.tensor(a["input"]), *ins],
              normalized_shape=int_list(a["normalized_shape"]), eps=a["eps"], **flags)
    return (v, NOT_COMPUTED, NOT_COMPUTED)


def _group_norm(cx: Lowering, a: Args, out: Sequence[TensorType]) -> tuple:
    ins, flags = _affine(cx, a.get("weight"), a.get("bias"))
    v = cx.op(Op.GROUP_NORM, [cx.tensor(a["input"]), *ins], groups=a["group"], eps=a["eps"], **flags)
    return (v, NOT_COMPUTED, NOT_COMPUTED)


def _rms_norm(fused: bool) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Any:
        w = a.get("weight")
        v = cx.op(Op.RMS_NORM, [cx.tensor(a["input"])] + ([cx.tensor(w)] if w is not None else []),
                  normalized_shape=int_list(a["normalized_shape"]), eps=a.get("eps"), has_weight=w is not None)
        return (v, NOT_COMPUTED) if fused else v
    return conv


def _softmax(op: Op) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
        x = cx.tensor(a["self"])
        if a.get("half_to_float"):
            x = cx.cast(x, DType.F32)
        if a.get("dtype") is not None:
            x = cx.cast(x, dtype_arg(a["dtype"]))  # type: ignore[arg-type]
        return cx.op(op, [x], dim=a["dim"])
    return conv


def _sdpa(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Any:
    """All of torch's attention entry points; extra outputs (log-sum-exp, RNG state, debug
    masks) are not computed, so a graph that uses them keeps the torch op."""
    if a.get("dropout_p", 0.0) not in (0, 0.0):
        raise Unsupported("attention with dropout")
    if a.get("dropout_mask") is not None or a.get("return_debug_mask"):
        raise Unsupported("attention with a dropout or debug mask")
    q, k, v = (cx.tensor(a[n]) for n in ("query", "key", "value"))
    ins = [q, k, v]
    mask = a.get("attn_mask", a.get("attn_bias"))
    if mask is not None:
        ins.append(cx.tensor(mask))
    scale = a.get("scale")
    # torch's CPU/GPU kernels take no enable_gqa flag: fewer K/V heads than Q heads is GQA
    gqa = bool(a.get("enable_gqa", False)) or (
        q.type.rank >= 3 and not dims_equal(q.type.shape[-3], k.type.shape[-3]))
    res = cx.op(Op.SDPA, ins, scale=None if scale is None else float(scale),
                is_causal=bool(a.get("is_causal", False)), enable_gqa=gqa)
    return (res,) + (NOT_COMPUTED,) * (len(out) - 1) if len(out) > 1 else res


TABLE: dict[str, Converter] = {
    "aten.sum.dim_IntList": _reduce(Op.SUM), "aten.sum.default": _reduce(Op.SUM),
    "aten.mean.dim": _reduce(Op.MEAN), "aten.mean.default": _reduce(Op.MEAN),
    "aten.amax.default": _reduce(Op.AMAX), "aten.amin.default": _reduce(Op.AMIN),
    "aten.max.default": _reduce(Op.AMAX), "aten.min.default": _reduce(Op.AMIN),
    "aten.prod.default": _prod, "aten.prod.dim_int": _prod,
    "aten.argmax.default": _arg(Op.ARGMAX), "aten.argmin.default": _arg(Op.ARGMIN),
    "aten.max.dim": _max_dim(Op.AMAX, Op.ARGMAX), "aten.min.dim": _max_dim(Op.AMIN, Op.ARGMIN),
    "aten.var.correction": _var(Op.VAR), "aten.std.correction": _var(Op.STD),
    "aten.var.dim": _var(Op.VAR), "aten.std.dim": _var(Op.STD),
    "aten.var_mean.correction": _var_mean,
    "aten.any.default": _any_all(Op.ANY), "aten.any.dim": _any_all(Op.ANY), "aten.any.dims": _any_all(Op.ANY),
    "aten.all.default": _any_all(Op.ALL), "aten.all.dim": _any_all(Op.ALL), "aten.all.dims": _any_all(Op.ALL),
    "aten.cumsum.default": lambda cx, a, out: cx.op(Op.CUMSUM, [cx.tensor(a["self"])], dim=a["dim"],
                                                    dtype=dtype_arg(a.get("dtype"))),
    "aten.mm.default": _matmul("self", "mat2"), "aten.bmm.default": _matmul("self", "mat2"),
    "aten.matmul.default": _matmul("self", "other"),
    "aten.addmm.default": _addmm, "aten.linear.default": _linear,
    "aten.convolution.default": _convolution,
    "aten.max_pool2d_with_indices.default": _max_pool(2, True),
    "aten.max_pool3d_with_indices.default": _max_pool(3, True),
    "aten.max_pool1d.default": _max_pool(1, False), "aten.max_pool2d.default": _max_pool(2, False),
    "aten.avg_pool1d.default": _avg_pool(1), "aten.avg_pool2d.default": _avg_pool(2),
    "aten.avg_pool3d.default": _avg_pool(3),
    "aten._adaptive_avg_pool2d.default": _adaptive(Op.ADAPTIVE_AVG_POOL, 2),
    "aten._adaptive_avg_pool3d.default": _adaptive(Op.ADAPTIVE_AVG_POOL, 3),
    "aten.adaptive_avg_pool1d.default": _adaptive(Op.ADAPTIVE_AVG_POOL, 1),
    "aten.adaptive_max_pool2d.default": _adaptive(Op.ADAPTIVE_MAX_POOL, 2, True),
    "aten.adaptive_max_pool1d.default": _adaptive(Op.ADAPTIVE_MAX_POOL, 1, True),
    "aten._native_batch_norm_legit_no_training.default": _batch_norm,
    "aten.native_batch_norm.default": _batch_norm,
    "aten.native_layer_norm.default": _layer_norm,
    "aten.native_group_norm.default": _group_norm,
    "aten._fused_rms_norm.default": _rms_norm(True), "aten.rms_norm.default": _rms_norm(False),
    "aten._softmax.default": _softmax(Op.SOFTMAX), "aten._log_softmax.default": _softmax(Op.LOG_SOFTMAX),
    "aten.softmax.int": _softmax(Op.SOFTMAX), "aten.log_softmax.int": _softmax(Op.LOG_SOFTMAX),
    "aten.scaled_dot_product_attention.default": _sdpa,
    "aten._scaled_dot_product_flash_attention_for_cpu.default": _sdpa,
    "aten._scaled_dot_product_attention_math.default": _sdpa,
    "aten._scaled_dot_product_efficient_attention.default": _sdpa,
    "aten._scaled_dot_product_flash_attention.default": _sdpa,
    "aten._scaled_dot_product_cudnn_attention.default": _sdpa,
}
