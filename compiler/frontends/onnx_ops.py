"""ONNX ops effc converts itself, where torch-mlir has no lowering or only a partial one.

Before import, such nodes are renamed ``effc_<OpType>`` (``rename_own_ops``), so that torch-mlir
passes them through untouched as ``torch.operator "onnx.effc_<OpType>"``; the torch dialect
importer then calls the handler here. A handler builds the op from aten calls (``AtenCalls``),
which go through the same op table as every other aten op, or become extern nodes.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from effc.ir import Value

from .lowering import Unsupported
from .onnx_calls import AtenCalls, Handler, Outs, tensor as _tensor
from .onnx_quantize import dequantize_linear, dynamic_quantize_linear, qlinear_matmul, quantize_linear
from .onnx_resize import resize

PREFIX = "effc_"


def grid_sample(aten: AtenCalls, xs: list[Any], attrs: dict[str, Any], outs: Outs) -> tuple:
    modes = {"linear": 0, "bilinear": 0, "nearest": 1, "cubic": 2, "bicubic": 2}
    paddings = {"zeros": 0, "border": 1, "reflection": 2}
    mode, padding = attrs.get("mode", "linear"), attrs.get("padding_mode", "zeros")
    if mode not in modes or padding not in paddings:
        raise Unsupported(f"GridSample mode {mode!r} with padding {padding!r}")
    x, grid = _tensor(xs[0], "X"), _tensor(xs[1], "grid")
    align = bool(attrs.get("align_corners", 0))
    if modes[mode] == 2 and padding == "border":
        grid = _clamp_outside(aten, grid, x.type.shape[2:][::-1], align)
    return (aten("aten.grid_sampler", x, grid, modes[mode], paddings[padding], align),)


def _clamp_outside(aten: AtenCalls, grid: Value, sizes: Sequence[Any], align: bool) -> Value:
    """ONNX's bicubic sampling with border padding first clamps a coordinate that falls outside
    the image to the first or last pixel's centre; torch only clamps each of the 16 taps."""
    if not all(isinstance(n, int) for n in sizes):
        raise Unsupported("GridSample cubic with border padding needs static image sizes")
    inset = [0.0 if align else 1.0 / n for n in sizes]  # pixel centres 0 and n-1, normalised
    dtype = grid.type.dtype.to_torch()
    lo = aten.constant(torch.tensor([-1.0 + e for e in inset], dtype=dtype))
    hi = aten.constant(torch.tensor([1.0 - e for e in inset], dtype=dtype))
    grid = aten("aten.where.self", aten("aten.lt.Scalar", grid, -1.0), lo, grid)
    return aten("aten.where.self", aten("aten.gt.Scalar", grid, 1.0), hi, grid)


def cum_prod(aten: AtenCalls, xs: list[Any], attrs: dict[str, Any], outs: Outs) -> tuple:
    x = _tensor(xs[0], "x")
    rank = x.type.rank
    axis = int(aten.value(xs[1], "CumProd's axis").reshape(()).item())
    if not -rank <= axis < rank:
        raise Unsupported(f"CumProd axis {axis} out of range for rank {rank}")
    axis %= rank
    n = x.type.shape[axis]
    reverse, exclusive = bool(attrs.get("reverse", 0)), bool(attrs.get("exclusive", 0))
    if reverse:
        x = aten("aten.flip", x, [axis])
    if exclusive and n:  # shifted by one along the axis, a one in front
        one: Any = 1.0 if x.type.dtype.is_float else 1
        x = aten("aten.slice.Tensor", x, axis, 0, n - 1, 1)
        x = aten("aten.constant_pad_nd", x, [0, 0] * (rank - 1 - axis) + [1, 0], one)
    y = aten("aten.cumprod", x, axis, dtype=x.type.dtype.to_torch())
    if reverse:
        y = aten("aten.flip", y, [axis])
    return (y,)


def bit_cast(aten: AtenCalls, xs: list[Any], attrs: dict[str, Any], outs: Outs) -> tuple:
    x = _tensor(xs[0], "input")
    to = outs[0][0]
    if to.itemsize != x.type.dtype.itemsize:
        raise Unsupported(f"BitCast from {x.type.dtype} to {to}")
    return (aten("aten.clone", aten("aten.view.dtype", x, to.to_torch())),)


def scatter_elements(aten: AtenCalls, xs: list[Any], attrs: dict[str, Any], outs: Outs) -> tuple:
    data, index, updates = (_tensor(x, w) for x, w in zip(xs, ("data", "indices", "updates")))
    reduce = {"max": "amax", "min": "amin", "add": "sum", "mul": "prod"}.get(attrs.get("reduction", "none"))
    if reduce is None:
        raise Unsupported(f"ScatterElements reduction {attrs.get('reduction')!r}")
    axis = attrs.get("axis", 0) % data.type.rank
    n = data.type.shape[axis]
    wrapped = aten("aten.add.Scalar", index, n)  # ONNX allows negative indices; torch does not
    index = aten("aten.where.self", aten("aten.lt.Scalar", index, 0), wrapped, index)
    return (aten("aten.scatter_reduce.two", data, axis, index, updates, reduce, include_self=True),)


def lp_normalization(aten: AtenCalls, xs: list[Any], attrs: dict[str, Any], outs: Outs) -> tuple:
    """x / ||x||_p along an axis; a zero vector stays zero (ONNX's reference), not 0/0."""
    x = _tensor(xs[0], "input")
    p = attrs.get("p", 2)
    if p not in (1, 2):
        raise Unsupported(f"LpNormalization p={p}")
    norm = aten("aten.linalg_vector_norm", x, float(p), [attrs.get("axis", -1)], True)
    zero = aten.constant(torch.zeros((), dtype=x.type.dtype.to_torch()))
    return (aten("aten.where.self", aten("aten.eq.Scalar", norm, 0), zero, aten("aten.div.Tensor", x, norm)),)


def rotary_embedding(aten: AtenCalls, xs: list[Any], attrs: dict[str, Any], outs: Outs) -> tuple:
    """Rotary position embedding (opset 23): pairs of features rotated by the angle of their
    position, halves or interleaved pairs, over the first ``rotary_embedding_dim`` features."""
    x, cos, sin = (_tensor(v, w) for v, w in zip(xs[:3], ("X", "cos_cache", "sin_cache")))
    positions = xs[3] if len(xs) > 3 and isinstance(xs[3], Value) else None
    if not x.type.is_static or x.type.rank not in (3, 4):
        raise Unsupported("RotaryEmbedding needs a static input of rank 3 or 4")
    shape = [int(d) for d in x.type.shape]
    if x.type.rank == 4:  # [batch, heads, seq, head] -> [batch, seq, heads, head]
        x = aten("aten.transpose.int", x, 1, 2)
    else:
        heads = int(attrs.get("num_heads", 0))
        if heads <= 0 or shape[2] % heads:
            raise Unsupported(f"RotaryEmbedding of a rank-3 input needs num_heads dividing {shape[2]}")
        x = aten("aten.reshape", x, [shape[0], shape[1], heads, shape[2] // heads])
    head = int(x.type.shape[3])
    rot = int(attrs.get("rotary_embedding_dim", 0)) or head
    half = rot // 2
    if positions is not None:  # caches indexed by position: [batch, seq, rot/2]
        cos, sin = aten("aten.embedding", cos, positions), aten("aten.embedding", sin, positions)
    cos, sin = aten("aten.unsqueeze", cos, 2), aten("aten.unsqueeze", sin, 2)
    part = aten("aten.slice.Tensor", x, 3, 0, rot, 1)
    if attrs.get("interleaved", 0):
        x1, x2 = aten("aten.slice.Tensor", part, 3, 0, rot, 2), aten("aten.slice.Tensor", part, 3, 1, rot, 2)
    else:
        x1, x2 = aten("aten.slice.Tensor", part, 3, 0, half, 1), aten("aten.slice.Tensor", part, 3, half, rot, 1)
    real = aten("aten.sub.Tensor", aten("aten.mul.Tensor", cos, x1), aten("aten.mul.Tensor", sin, x2))
    imag = aten("aten.add.Tensor", aten("aten.mul.Tensor", sin, x1), aten("aten.mul.Tensor", cos, x2))
    if attrs.get("interleaved", 0):
        turned = aten("aten.reshape", aten("aten.stack", [real, imag], -1), [int(d) for d in part.type.shape])
    else:
        turned = aten("aten.cat", [real, imag], -1)
    y = aten("aten.cat", [turned, aten("aten.slice.Tensor", x, 3, rot, head, 1)], -1) if rot < head else turned
    if len(shape) == 4:
        return (aten("aten.transpose.int", y, 1, 2),)
    return (aten("aten.reshape", y, shape),)


OWN_ONNX_OPS: dict[str, Handler] = {
    PREFIX + "RotaryEmbedding": rotary_embedding,
    PREFIX + "QuantizeLinear": quantize_linear,
    PREFIX + "DequantizeLinear": dequantize_linear,
    PREFIX + "QLinearMatMul": qlinear_matmul,
    PREFIX + "DynamicQuantizeLinear": dynamic_quantize_linear,
    PREFIX + "LpNormalization": lp_normalization,
    PREFIX + "GridSample": grid_sample,
    PREFIX + "CumProd": cum_prod,
    PREFIX + "BitCast": bit_cast,
    PREFIX + "ScatterElements": scatter_elements,
    PREFIX + "Resize": resize,
}


def _takes(node: Any, constants: set[str]) -> bool:
    if PREFIX + node.op_type not in OWN_ONNX_OPS or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "QuantizeLinear":  # torch-mlir lowers it with a constant scale, unblocked
        blocked = any(a.name == "block_size" and a.i for a in node.attribute)
        return len(node.input) > 1 and (node.input[1] not in constants or blocked)
    if node.op_type == "ScatterElements":  # torch-mlir lowers the other reductions
        return any(a.name == "reduction" and a.s in (b"max", b"min") for a in node.attribute)
    return True


def rename_own_ops(graph: Any) -> None:
    """Rename, in place, the nodes of ``graph`` (and its subgraphs) that effc converts itself."""
    constants = {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for node in graph.node:
        if _takes(node, constants):
            node.op_type = PREFIX + node.op_type
        for a in node.attribute:
            if a.g.node:
                rename_own_ops(a.g)
            for g in a.graphs:
                rename_own_ops(g)
