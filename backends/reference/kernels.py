"""One torch implementation per effc op: what the reference backend runs.

Each takes the node's input tensors and its (already evaluated) attributes and returns a tensor
or a tuple of tensors. These define the meaning of the IR; every other backend is tested
against them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from effc.ir import DType, Op
from effc.ir.attrs import InputRef, TorchObj
from effc.ir.ops import U_FLOAT

Tensors = Sequence[torch.Tensor]
Impl = Callable[[Tensors, dict], Any]

_UNARY: dict[Op, Callable[..., torch.Tensor]] = {
    Op.NEG: torch.neg, Op.ABS: torch.abs, Op.RELU: torch.relu, Op.FLOOR: torch.floor,
    Op.CEIL: torch.ceil, Op.ROUND: torch.round, Op.TRUNC: torch.trunc, Op.SIGN: torch.sign,
    Op.BITWISE_NOT: torch.bitwise_not, Op.EXP: torch.exp, Op.EXP2: torch.exp2,
    Op.EXPM1: torch.expm1, Op.LOG: torch.log, Op.LOG2: torch.log2, Op.LOG10: torch.log10,
    Op.LOG1P: torch.log1p, Op.SQRT: torch.sqrt, Op.RSQRT: torch.rsqrt,
    Op.RECIPROCAL: torch.reciprocal, Op.SIN: torch.sin, Op.COS: torch.cos, Op.TAN: torch.tan,
    Op.ASIN: torch.asin, Op.ACOS: torch.acos, Op.ATAN: torch.atan, Op.SINH: torch.sinh,
    Op.COSH: torch.cosh, Op.TANH: torch.tanh, Op.ASINH: torch.asinh, Op.ACOSH: torch.acosh,
    Op.ATANH: torch.atanh, Op.SIGMOID: torch.sigmoid, Op.ERF: torch.erf,
    Op.ERFINV: torch.erfinv, Op.SILU: F.silu, Op.HARDSWISH: F.hardswish,
    Op.HARDSIGMOID: F.hardsigmoid, Op.LOGICAL_NOT: torch.logical_not, Op.ISNAN: torch.isnan,
    Op.ISINF: torch.isinf,
}
_BINARY: dict[Op, Callable[..., torch.Tensor]] = {
    Op.ADD: torch.add, Op.SUB: torch.sub, Op.MUL: torch.mul, Op.POW: torch.pow,
    Op.MAXIMUM: torch.maximum, Op.MINIMUM: torch.minimum, Op.FMOD: torch.fmod,
    Op.REMAINDER: torch.remainder, Op.ATAN2: torch.atan2, Op.BITWISE_AND: torch.bitwise_and,
    Op.BITWISE_OR: torch.bitwise_or, Op.BITWISE_XOR: torch.bitwise_xor, Op.EQ: torch.eq,
    Op.NE: torch.ne, Op.LT: torch.lt, Op.LE: torch.le, Op.GT: torch.gt, Op.GE: torch.ge,
    Op.LOGICAL_AND: torch.logical_and, Op.LOGICAL_OR: torch.logical_or,
    Op.LOGICAL_XOR: torch.logical_xor,
}


def _dt(d: DType | None) -> torch.dtype | None:
    return None if d is None else d.to_torch()


def _dims(d: Sequence[int]) -> list[int] | None:
    return list(d) if d else None


def _unary(op: Op) -> Impl:
    fn = _UNARY[op]

    def run(x: Tensors, a: dict) -> torch.Tensor:
        t = x[0]
        if op in U_FLOAT and not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        return fn(t)
    return run


def _binary(op: Op) -> Impl:
    fn = _BINARY[op]
    return lambda x, a: fn(x[0], x[1])


def _prod(x: torch.Tensor, dims: Sequence[int], keepdim: bool) -> torch.Tensor:
    if not dims or x.dim() == 0:
        out = torch.prod(x)
        return out.reshape([1] * x.dim()) if keepdim else out
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        x = torch.prod(x, d, keepdim=keepdim)
    return x


def _rms_norm(x: Tensors, a: dict) -> torch.Tensor:
    t = x[0]
    dims = list(range(t.dim() - len(a["normalized_shape"]), t.dim()))
    eps = a["eps"] if a["eps"] is not None else torch.finfo(t.dtype).eps
    out = t * torch.rsqrt(t.pow(2).mean(dims, keepdim=True) + eps)
    return out * x[1] if a["has_weight"] else out


def _affine(x: Tensors, a: dict, first: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    i = first
    w = b = None
    if a["has_weight"]:
        w, i = x[i], i + 1
    if a["has_bias"]:
        b = x[i]
    return w, b


def _pool_fn(kind: str, n: int) -> Callable[..., torch.Tensor]:
    return getattr(F, f"{kind}{n}d")


def _max_pool(x: Tensors, a: dict) -> torch.Tensor:
    return _pool_fn("max_pool", len(a["kernel"]))(x[0], a["kernel"], a["stride"], a["padding"],
                                                 a["dilation"], a["ceil_mode"])


def _avg_pool(x: Tensors, a: dict) -> torch.Tensor:
    fn = _pool_fn("avg_pool", len(a["kernel"]))
    kw: dict[str, Any] = {"ceil_mode": a["ceil_mode"], "count_include_pad": a["count_include_pad"]}
    if len(a["kernel"]) > 1:
        kw["divisor_override"] = a["divisor_override"]
    return fn(x[0], a["kernel"], a["stride"], a["padding"], **kw)


def _sdpa(x: Tensors, a: dict) -> torch.Tensor:
    kw: dict[str, Any] = {"attn_mask": x[3] if len(x) > 3 else None, "is_causal": a["is_causal"],
                          "scale": a["scale"]}
    if a["enable_gqa"]:
        kw["enable_gqa"] = True
    return F.scaled_dot_product_attention(x[0], x[1], x[2], **kw)


def resolve_target(target: str) -> Callable[..., Any]:
    """``aten.add.Tensor`` -> torch.ops.aten.add.Tensor (only torch.ops namespaces)."""
    obj: Any = torch.ops
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_torch_obj(name: str) -> Any:
    obj: Any = torch
    for part in name.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def fill_template(v: Any, tensors: Tensors) -> Any:
    """Rebuild an extern call's argument from its template."""
    if isinstance(v, InputRef):
        return tensors[v.index]
    if isinstance(v, TorchObj):
        return resolve_torch_obj(v.name)
    if isinstance(v, DType):
        return v.to_torch()
    if isinstance(v, tuple):
        return [fill_template(e, tensors) for e in v]
    if isinstance(v, dict):
        return {k: fill_template(e, tensors) for k, e in v.items()}
    return v


def _extern(x: Tensors, a: dict) -> Any:
    fn = resolve_target(a["target"])
    args = [fill_template(v, x) for v in a["args"]]
    kwargs = {k: fill_template(v, x) for k, v in a["kwargs"].items()}
    return fn(*args, **kwargs)


KERNELS: dict[Op, Impl] = {
    **{op: _unary(op) for op in _UNARY},
    **{op: _binary(op) for op in _BINARY},
    Op.GELU: lambda x, a: F.gelu(x[0], approximate=a["approximate"]),
    Op.HARDTANH: lambda x, a: F.hardtanh(x[0], a["min_val"], a["max_val"]),
    Op.LEAKY_RELU: lambda x, a: F.leaky_relu(x[0], a["negative_slope"]),
    Op.SOFTPLUS: lambda x, a: F.softplus(x[0], a["beta"], a["threshold"]),
    Op.ELU: lambda x, a: torch.ops.aten.elu(x[0], a["alpha"], a["scale"], a["input_scale"]),
    Op.DIV: lambda x, a: torch.div(x[0], x[1], rounding_mode=a["rounding_mode"]),
    Op.WHERE: lambda x, a: torch.where(x[0], x[1], x[2]),
    Op.CLAMP: lambda x, a: torch.clamp(x[0], a["min"], a["max"]),
    Op.CAST: lambda x, a: x[0].to(a["dtype"].to_torch()),
    Op.SUM: lambda x, a: torch.sum(x[0], _dims(a["dims"]), a["keepdim"], dtype=_dt(a["dtype"])),
    Op.MEAN: lambda x, a: torch.mean(x[0], _dims(a["dims"]), a["keepdim"]),
    Op.AMAX: lambda x, a: torch.amax(x[0], a["dims"], a["keepdim"]),
    Op.AMIN: lambda x, a: torch.amin(x[0], a["dims"], a["keepdim"]),
    Op.PROD: lambda x, a: _prod(x[0], a["dims"], a["keepdim"]),
    Op.ANY: lambda x, a: torch.any(x[0], _dims(a["dims"]), keepdim=a["keepdim"]) if a["dims"] else
    torch.any(x[0]).reshape([1] * x[0].dim() if a["keepdim"] else []),
    Op.ALL: lambda x, a: torch.all(x[0], _dims(a["dims"]), keepdim=a["keepdim"]) if a["dims"] else
    torch.all(x[0]).reshape([1] * x[0].dim() if a["keepdim"] else []),
    Op.ARGMAX: lambda x, a: torch.argmax(x[0], a["dim"], a["keepdim"]),
    Op.ARGMIN: lambda x, a: torch.argmin(x[0], a["dim"], a["keepdim"]),
    Op.VAR: lambda x, a: torch.var(x[0], _dims(a["dims"]), correction=a["correction"],
                                   keepdim=a["keepdim"]),
    Op.STD: lambda x, a: torch.std(x[0], _dims(a["dims"]), correction=a["correction"],
                                   keepdim=a["keepdim"]),
    Op.CUMSUM: lambda x, a: torch.cumsum(x[0], a["dim"], dtype=_dt(a["dtype"])),
    Op.MATMUL: lambda x, a: torch.matmul(x[0], x[1]),
    Op.ADDMM: lambda x, a: torch.addmm(x[0], x[1], x[2], beta=a["beta"], alpha=a["alpha"]),
    Op.LINEAR: lambda x, a: F.linear(x[0], x[1], x[2] if len(x) > 2 else None),
    Op.CONVOLUTION: lambda x, a: torch.ops.aten.convolution(
        x[0], x[1], x[2] if len(x) > 2 else None, list(a["stride"]), list(a["padding"]),
        list(a["dilation"]), a["transposed"], list(a["output_padding"]), a["groups"]),
    Op.MAX_POOL: _max_pool,
    Op.AVG_POOL: _avg_pool,
    Op.ADAPTIVE_AVG_POOL: lambda x, a: _pool_fn("adaptive_avg_pool", len(a["output_size"]))(
        x[0], a["output_size"]),
    Op.ADAPTIVE_MAX_POOL: lambda x, a: _pool_fn("adaptive_max_pool", len(a["output_size"]))(
        x[0], a["output_size"]),
    Op.BATCH_NORM: lambda x, a: F.batch_norm(x[0], x[1], x[2], *_affine(x, a, 3), False, 0.0, a["eps"]),
    Op.LAYER_NORM: lambda x, a: F.layer_norm(x[0], a["normalized_shape"], *_affine(x, a, 1), a["eps"]),
    Op.GROUP_NORM: lambda x, a: F.group_norm(x[0], a["groups"], *_affine(x, a, 1), a["eps"]),
    Op.RMS_NORM: _rms_norm,
    Op.SOFTMAX: lambda x, a: torch.softmax(x[0], a["dim"]),
    Op.LOG_SOFTMAX: lambda x, a: torch.log_softmax(x[0], a["dim"]),
    Op.RESHAPE: lambda x, a: x[0].reshape(a["shape"]),
    Op.PERMUTE: lambda x, a: x[0].permute(a["dims"]),
    Op.EXPAND: lambda x, a: x[0].expand(a["shape"]),
    Op.SQUEEZE: lambda x, a: x[0].squeeze(a["dims"]) if x[0].dim() else x[0],
    Op.UNSQUEEZE: lambda x, a: x[0].unsqueeze(a["dim"]),
    Op.SLICE: lambda x, a: torch.ops.aten.slice.Tensor(x[0], a["dim"], a["start"], a["end"], a["step"]),
    Op.SELECT: lambda x, a: x[0].select(a["dim"], a["index"]),
    Op.CAT: lambda x, a: torch.cat(list(x), a["dim"]),
    Op.SPLIT: lambda x, a: tuple(torch.split(x[0], list(a["sizes"]), a["dim"])),
    Op.PAD: lambda x, a: F.pad(x[0], list(a["pads"]), a["mode"],
                               a["value"] if a["mode"] == "constant" else None),
    Op.GATHER: lambda x, a: torch.gather(x[0], a["dim"], x[1]),
    Op.INDEX_SELECT: lambda x, a: torch.index_select(x[0], a["dim"], x[1]),
    Op.EMBEDDING: lambda x, a: F.embedding(x[1], x[0], a["padding_idx"]),
    Op.ARANGE: lambda x, a: torch.arange(a["start"], a["end"], a["step"], dtype=_dt(a["dtype"])),
    Op.FULL: lambda x, a: torch.full(a["shape"], a["value"], dtype=_dt(a["dtype"])),
    Op.SDPA: _sdpa,
    Op.EXTERN: _extern,
}
