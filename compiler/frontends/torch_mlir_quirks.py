"""Where torch-mlir's ONNX lowering departs from aten's schemas, and how effc undoes it.

torch-mlir's own backends read these ops leniently; effc hands them to the aten op table (and,
as externs, to torch itself), which check arguments the way PyTorch does. So:

- pooling ``stride`` lists arrive followed by ONNX's dilations (``[2, 2, 1, 1]`` for a 2-D
  pool), and ``padding`` lists as ONNX's begins then ends (``2n`` entries);
- a float32 pad before max pooling uses ``-DBL_MAX`` as its value, meaning -inf;
- a 1-D convolution carries a two-entry ``output_padding``;
- ONNX's ``Clip`` without bounds arrives as ``clamp`` with neither ``min`` nor ``max``;
- ONNX's integer ``Div`` arrives as ``div.Tensor`` with an integer result type (torch-mlir's
  reading: truncating division), where aten's ``div.Tensor`` is true division;
- ONNX pads pools by more than half the window, and asymmetrically; torch refuses both, so such
  pools are written as an explicit pad followed by an unpadded pool;
- ``NegativeLogLikelihoodLoss`` arrives as ``nll_loss_forward`` for inputs of any rank (aten's
  takes one or two dimensions) with a mistyped ``total_weight``; it is written out in IR ops;
- ``SoftmaxCrossEntropyLoss`` with weights sums the float weights into a result typed int64
  (``fix_result_types`` gives it the float type aten's ``sum`` has).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from effc.ir import DType, Op, Value

from .lowering import Lowering, Unsupported

_POOL = re.compile(r"^aten\.(avg|max)_pool([123])d")


def fix_arguments(short: str, a: dict[str, Any]) -> None:
    """Rewrite ``a`` (bound schema arguments of torch-mlir op ``short``) in place."""
    m = _POOL.match(short)
    if m:
        n = int(m.group(2))
        for key in ("kernel_size", "stride", "dilation"):
            v = a.get(key)
            if isinstance(v, list) and len(v) > n:
                if any(x != 1 for x in v[n:]):
                    raise Unsupported(f"{short} with dilations {v[n:]}")
                a[key] = v[:n]
        pad = a.get("padding")
        if isinstance(pad, list) and len(pad) == 2 * n and pad[:n] == pad[n:]:
            a["padding"] = pad[:n]
    if short == "aten.convolution" and isinstance(a.get("output_padding"), list) and isinstance(a.get("stride"), list):
        n = len(a["stride"])
        if len(a["output_padding"]) > n and not any(a["output_padding"][n:]):
            a["output_padding"] = a["output_padding"][:n]
    if short == "aten.constant_pad_nd" and isinstance(a.get("value"), float) and isinstance(a.get("self"), Value):
        dtype = a["self"].type.dtype
        if dtype.is_float and abs(a["value"]) > torch.finfo(dtype.to_torch()).max:
            a["value"] = float("inf") if a["value"] > 0 else float("-inf")


def fix_result_types(short: str, a: Mapping[str, Any], outs: list[tuple[DType, list[int | None]]]) -> list:
    """torch-mlir's declared result types, with its known mistypings replaced by aten's types."""
    x = a.get("self")
    if (short in ("aten.sum", "aten.sum.dim_IntList") and a.get("dtype") is None and isinstance(x, Value)
            and x.type.dtype.is_float and outs and not outs[0][0].is_float):
        return [(x.type.dtype, outs[0][1])] + list(outs[1:])
    return outs


def explicit_quirk(cx: Lowering, short: str, a: Mapping[str, Any], out_dtypes: list[DType]) -> Any:
    """IR for the calls the aten table cannot take as they are; None for every other call."""
    if short == "aten.div.Tensor" and out_dtypes and not out_dtypes[0].is_float:
        x, y = cx.operands([a["self"], a["other"]], out_dtypes[0])
        return cx.cast(cx.op(Op.DIV, [x, y], rounding_mode="trunc"), out_dtypes[0])
    if short in ("aten.clamp", "aten.clamp.Tensor") and a.get("min") is None and a.get("max") is None:
        return cx.tensor(a["self"])
    if short == "aten.nll_loss_forward":
        return _nll_loss(cx, a)
    m = re.match(r"^aten\.(avg|max)_pool([123])d$", short)
    if m:
        return _padded_pool(cx, m.group(1), int(m.group(2)), a)
    return None


def _nll_loss(cx: Lowering, a: Mapping[str, Any]) -> Any:
    """loss_i = -w[t_i] * logp[i, t_i] over every position, zero where t_i == ignore_index;
    reduced by sum, or by mean weighted by the same w."""
    from .lowering import NOT_COMPUTED
    logp, target = cx.tensor(a["self"]), cx.tensor(a["target"])
    if logp.type.rank < 2 or target.type.dtype.is_float:
        return None
    reduction, ignore = int(a["reduction"]), int(a["ignore_index"])
    dtype = logp.type.dtype
    keep = cx.op(Op.NE, cx.operands([target, ignore], None))
    zero = cx.b.scalar(0, target.type.dtype)
    safe = cx.op(Op.WHERE, [keep, target, zero])
    picked = cx.op(Op.SQUEEZE, [cx.op(Op.GATHER, [logp, cx.op(Op.UNSQUEEZE, [safe], dim=1)], dim=1)], dims=(1,))
    if a.get("weight") is not None:
        flat = cx.op(Op.RESHAPE, [safe], shape=(-1,))
        w = cx.op(Op.RESHAPE, [cx.op(Op.INDEX_SELECT, [cx.tensor(a["weight"]), flat], dim=0)],
                  shape=tuple(target.type.shape))
    else:
        w = cx.op(Op.FULL, [], shape=tuple(target.type.shape), value=1.0, dtype=dtype)
    w = cx.op(Op.WHERE, [keep, w, cx.b.scalar(0.0, dtype)])
    loss = cx.op(Op.NEG, [cx.op(Op.MUL, [picked, w])])
    if reduction == 0:
        return loss, NOT_COMPUTED
    total = cx.op(Op.SUM, [loss], dims=(), keepdim=False, dtype=None)
    if reduction == 2:
        return total, NOT_COMPUTED
    return cx.op(Op.DIV, [total, cx.op(Op.SUM, [w], dims=(), keepdim=False, dtype=None)], rounding_mode=None), NOT_COMPUTED


def _padded_pool(cx: Lowering, kind: str, n: int, a: Mapping[str, Any]) -> Value | None:
    pad = a.get("padding")
    if not isinstance(pad, list):
        return None
    begins, ends = (pad[:n], pad[n:]) if len(pad) == 2 * n else (pad * n if len(pad) == 1 else pad, ) * 2
    k = list(a["kernel_size"]) * (n if len(a["kernel_size"]) == 1 else 1)
    dil = list(a.get("dilation") or [1] * n)
    dil = dil * n if len(dil) == 1 else dil
    reach = [d * (kk - 1) + 1 for d, kk in zip(dil, k)]
    if begins == ends and all(p <= r // 2 for p, r in zip(begins, reach)):
        return None  # torch takes this padding as it is
    if a.get("ceil_mode") or a.get("divisor_override") is not None:
        raise Unsupported(f"{kind} pooling with asymmetric or wide padding and ceil_mode or a divisor override")
    x = cx.tensor(a["self"])
    torch_pads: list[int] = []
    for d in reversed(range(n)):  # torch pads the last axis first, (begin, end) per axis
        torch_pads += [begins[d], ends[d]]
    stride = list(a.get("stride") or k)
    stride = stride * n if len(stride) == 1 else stride
    if kind == "max":
        fill = float("-inf") if x.type.dtype.is_float else int(torch.iinfo(x.type.dtype.to_torch()).min)
        padded = cx.op(Op.PAD, [x], pads=tuple(torch_pads), mode="constant", value=fill)
        return cx.op(Op.MAX_POOL, [padded], kernel=tuple(k), stride=tuple(stride), padding=(0,) * n,
                     dilation=tuple(dil), ceil_mode=False)
    pool = dict(kernel=tuple(k), stride=tuple(stride), padding=(0,) * n, ceil_mode=False,
                count_include_pad=True, divisor_override=None)
    padded = cx.op(Op.PAD, [x], pads=tuple(torch_pads), mode="constant", value=0.0)
    total = cx.op(Op.AVG_POOL, [padded], **pool)
    if a.get("count_include_pad"):
        return total
    # the mean over real elements only: divide by the pooled share of real elements
    ones = cx.op(Op.FULL, [], shape=(1, 1) + tuple(x.type.shape[-n:]), value=1.0, dtype=x.type.dtype)
    share = cx.op(Op.AVG_POOL, [cx.op(Op.PAD, [ones], pads=tuple(torch_pads), mode="constant", value=0.0)], **pool)
    return cx.op(Op.DIV, [total, share], rounding_mode=None)
