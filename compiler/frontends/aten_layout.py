"""Op-table entries for aten views and data movement, indexing, and tensor creation."""

from __future__ import annotations

from typing import Any, Sequence

import sympy

from effc.ir import DType, Op, TensorType, Value


from .lowering import Args, Converter, Lowering, Unsupported, dtype_arg, int_list

_BIG = 2**62


def _reshape(key: str) -> Converter:
    return lambda cx, a, out: cx.op(Op.RESHAPE, [cx.tensor(a["self"])], shape=int_list(a[key]))


def _permute(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    return cx.op(Op.PERMUTE, [cx.tensor(a["self"])], dims=int_list(a["dims"]))


def _transpose(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    x = cx.tensor(a["self"])
    r = max(x.type.rank, 1)
    d0, d1 = a["dim0"] % r, a["dim1"] % r
    dims = list(range(x.type.rank))
    if x.type.rank:
        dims[d0], dims[d1] = dims[d1], dims[d0]
    return cx.op(Op.PERMUTE, [x], dims=tuple(dims))


def _t(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    x = cx.tensor(a["self"])
    return x if x.type.rank < 2 else cx.op(Op.PERMUTE, [x], dims=(1, 0))


def _squeeze(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    x = cx.tensor(a["self"])
    if "dim" in a:
        dims = int_list(a["dim"])
    else:
        dims = tuple(i for i, d in enumerate(x.type.shape) if isinstance(d, int) and d == 1)
    return cx.op(Op.SQUEEZE, [x], dims=dims)


def _slice(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    x = cx.tensor(a["self"])
    start = 0 if a.get("start") is None else a["start"]
    end = _BIG if a.get("end") is None else a["end"]
    if isinstance(end, int) and end >= _BIG:
        end = _BIG
    return cx.op(Op.SLICE, [x], dim=a.get("dim", 0), start=start, end=end, step=a.get("step", 1))


def _split(cx: Lowering, a: Args, out: Sequence[TensorType]) -> tuple[Value, ...]:
    x = cx.tensor(a["self"])
    dim = a.get("dim", 0)
    if "split_sizes" in a:
        sizes = int_list(a["split_sizes"])
    else:
        sizes = tuple(t.shape[dim] for t in out)
    node = cx.b.node(Op.SPLIT, [x], {"dim": dim, "sizes": sizes})
    return node.outputs


def _unbind(cx: Lowering, a: Args, out: Sequence[TensorType]) -> tuple[Value, ...]:
    x = cx.tensor(a["self"])
    dim = a.get("dim", 0)
    n = x.type.shape[dim]
    if not isinstance(n, int):
        raise Unsupported("unbind over a symbolic axis")
    parts = cx.b.node(Op.SPLIT, [x], {"dim": dim, "sizes": (1,) * n}).outputs
    return tuple(cx.op(Op.SQUEEZE, [p], dims=(dim,)) for p in parts)


def _cat(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    ts = [cx.tensor(t) for t in a["tensors"]]
    # torch.cat skips legacy empty 1-d tensors of shape [0]
    ts = [t for t in ts if not (t.type.rank == 1 and t.type.shape[0] == 0)] or ts[:1]
    if out and any(t.type.dtype is not out[0].dtype for t in ts):
        ts = [cx.cast(t, out[0].dtype) for t in ts]
    return cx.op(Op.CAT, ts, dim=a.get("dim", 0))


def _pad(mode: str) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
        return cx.op(Op.PAD, [cx.tensor(a["self"])], pads=int_list(a["padding" if "padding" in a else "pad"]),
                     mode=mode, value=float(a.get("value", 0.0) or 0.0))
    return conv


def _unflatten(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    x = cx.tensor(a["self"])
    d = a["dim"] % x.type.rank if x.type.rank else 0
    shape = list(x.type.shape[:d]) + list(int_list(a["sizes"])) + list(x.type.shape[d + 1:])
    return cx.op(Op.RESHAPE, [x], shape=tuple(shape))


def _expand(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    return cx.op(Op.EXPAND, [cx.tensor(a["self"])], shape=int_list(a["size"]))


def _index_select(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    return cx.op(Op.INDEX_SELECT, [cx.tensor(a["self"]), cx.tensor(a["index"])], dim=a["dim"])


def _gather(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    return cx.op(Op.GATHER, [cx.tensor(a["self"]), cx.tensor(a["index"])], dim=a["dim"])


def _embedding(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    pad = a.get("padding_idx", -1)
    return cx.op(Op.EMBEDDING, [cx.tensor(a["weight"]), cx.tensor(a["indices"])],
                 padding_idx=None if pad is None or pad < 0 else pad)


def _out_dtype(a: Args, out: Sequence[TensorType]) -> DType:
    return dtype_arg(a.get("dtype")) or out[0].dtype


def _arange(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    start, end, step = a.get("start", 0), a["end"], a.get("step", 1)
    return cx.op(Op.ARANGE, [], start=start, end=end, step=step, dtype=_out_dtype(a, out))


def _full(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    return cx.op(Op.FULL, [], shape=int_list(a["size"]), value=_fill(a["fill_value"], out[0].dtype),
                 dtype=_out_dtype(a, out))


def _fill(v: Any, dtype: DType) -> Any:
    if isinstance(v, sympy.Basic):
        return v
    if dtype.is_bool:
        return bool(v)
    if dtype.is_int:
        return int(v)
    return float(v)


def _const_like(value: float) -> Converter:
    def conv(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
        shape = int_list(a["size"]) if "size" in a else out[0].shape
        return cx.op(Op.FULL, [], shape=tuple(shape), value=_fill(value, out[0].dtype), dtype=out[0].dtype)
    return conv


def _full_like(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    return cx.op(Op.FULL, [], shape=out[0].shape, value=_fill(a["fill_value"], out[0].dtype),
                 dtype=out[0].dtype)


def _scalar_tensor(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    return cx.op(Op.FULL, [], shape=(), value=_fill(a["s"], out[0].dtype), dtype=out[0].dtype)


def _copy(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    # copy(dst, src) is src broadcast into dst's shape and dtype
    dst, src = cx.tensor(a["self"]), cx.tensor(a["src"])
    v = cx.cast(src, dst.type.dtype)
    if v.type.shape != dst.type.shape:
        v = cx.op(Op.EXPAND, [v], shape=dst.type.shape)
    return v


def _index(cx: Lowering, a: Args, out: Sequence[TensorType]) -> Value:
    """x[..., idx, ...] with one integer index tensor: index_select over the flattened index,
    then the index's shape put back in place of the indexed axis."""
    x = cx.tensor(a["self"])
    idxs = list(a["indices"])
    used = [i for i, t in enumerate(idxs) if t is not None]
    if len(used) != 1:
        raise Unsupported("advanced indexing with several index tensors")
    d = used[0]
    idx = cx.tensor(idxs[d])
    if not idx.type.dtype.is_int:
        raise Unsupported("indexing with a boolean mask")
    # indexing counts negative indices from the end; index_select does not
    zero = cx.b.scalar(0, DType.I64)
    size = cx.b.scalar(x.type.shape[d], DType.I64)
    idx = cx.op(Op.WHERE, [cx.op(Op.LT, [idx, zero]), cx.op(Op.ADD, [idx, size]), idx])
    flat = idx if idx.type.rank == 1 else cx.op(Op.RESHAPE, [idx], shape=(-1,))
    sel = cx.op(Op.INDEX_SELECT, [x, flat], dim=d)
    shape = x.type.shape[:d] + idx.type.shape + x.type.shape[d + 1:]
    return sel if idx.type.rank == 1 else cx.op(Op.RESHAPE, [sel], shape=shape)


TABLE: dict[str, Converter] = {
    "aten.view.default": _reshape("size"), "aten._unsafe_view.default": _reshape("size"),
    "aten.reshape.default": _reshape("shape"), "aten.unflatten.int": _unflatten, "aten.view_copy.default": _reshape("size"),
    "aten.permute.default": _permute, "aten.transpose.int": _transpose, "aten.t.default": _t,
    "aten.expand.default": _expand, "aten.broadcast_to.default": _expand,
    "aten.squeeze.dim": _squeeze, "aten.squeeze.dims": _squeeze, "aten.squeeze.default": _squeeze,
    "aten.unsqueeze.default": lambda cx, a, out: cx.op(Op.UNSQUEEZE, [cx.tensor(a["self"])], dim=a["dim"]),
    "aten.slice.Tensor": _slice,
    "aten.select.int": lambda cx, a, out: cx.op(Op.SELECT, [cx.tensor(a["self"])], dim=a["dim"], index=a["index"]),
    "aten.cat.default": _cat,
    "aten.split_with_sizes.default": _split, "aten.split.Tensor": _split, "aten.unbind.int": _unbind,
    "aten.constant_pad_nd.default": _pad("constant"),
    "aten.reflection_pad1d.default": _pad("reflect"), "aten.reflection_pad2d.default": _pad("reflect"),
    "aten.reflection_pad3d.default": _pad("reflect"),
    "aten.replication_pad1d.default": _pad("replicate"), "aten.replication_pad2d.default": _pad("replicate"),
    "aten.replication_pad3d.default": _pad("replicate"),
    "aten.gather.default": _gather, "aten.index.Tensor": _index, "aten.index_select.default": _index_select,
    "aten.embedding.default": _embedding,
    "aten.arange.start_step": _arange, "aten.arange.start": _arange, "aten.arange.default": _arange,
    "aten.full.default": _full, "aten.full_like.default": _full_like,
    "aten.zeros.default": _const_like(0), "aten.ones.default": _const_like(1),
    "aten.empty.memory_format": _const_like(0), "aten.new_zeros.default": _const_like(0),
    "aten.new_ones.default": _const_like(1), "aten.new_empty.default": _const_like(0),
    "aten.zeros_like.default": _const_like(0), "aten.ones_like.default": _const_like(1),
    "aten.empty_like.default": _const_like(0),
    "aten.new_full.default": lambda cx, a, out: cx.op(Op.FULL, [], shape=int_list(a["size"]),
                                                      value=_fill(a["fill_value"], out[0].dtype),
                                                      dtype=out[0].dtype),
    "aten.scalar_tensor.default": _scalar_tensor,
    "aten.copy.default": _copy,
}
