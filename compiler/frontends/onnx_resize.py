"""ONNX ``Resize``, all of it: every mode, coordinate transformation, antialiasing, ``axes``,
``keep_aspect_ratio_policy``, ``exclude_outside`` and ``tf_crop_and_resize`` with its
extrapolation value.

torch-mlir lowers only part of Resize (and some of that to interpolate calls torch cannot run).
Resize is separable: each resized axis is a fixed linear map of the input along that axis. So
the map is computed here, at compile time, from the sizes and attributes (which must be known),
and applied with ops effc already has: a gather of the chosen indices for ``nearest``, a matmul
with the interpolation matrix for ``linear`` and ``cubic``.

    Resize(x: f32[1, 1, 4, 4], scales=[1, 1, 0.5, 2], mode="linear")
  ->
    x.transpose(2, -1) @ W2.T  ... then  @ W3.T    (W2: 2x4, W3: 8x4, rows summing to 1)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from effc.ir import Value

from .lowering import Unsupported

_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                     "asymmetric", "tf_crop_and_resize")


def output_plan(shape: list[int], attrs: dict[str, Any], roi: np.ndarray | None,
                scales: np.ndarray | None, sizes: np.ndarray | None) -> list[tuple[int, float, int, tuple[float, float]]]:
    """For each axis that changes: (axis, scale, output size, roi start and end)."""
    r = len(shape)
    axes = [a % r for a in attrs.get("axes", list(range(r)))]
    if len(set(axes)) != len(axes):
        raise Unsupported(f"Resize axes {attrs.get('axes')} repeat an axis")
    scale = [1.0] * r
    out = list(shape)
    if sizes is not None and sizes.size:
        if sizes.size != len(axes):
            raise Unsupported(f"Resize has {sizes.size} sizes for {len(axes)} axes")
        for a, m in zip(axes, sizes.tolist()):
            scale[a], out[a] = m / shape[a], int(m)
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            if policy not in ("not_larger", "not_smaller"):
                raise Unsupported(f"Resize keep_aspect_ratio_policy {policy!r}")
            common = (min if policy == "not_larger" else max)(scale[a] for a in axes)
            for a in axes:
                scale[a], out[a] = common, int(common * shape[a] + 0.5)  # rounded half up
    elif scales is not None and scales.size:
        if scales.size != len(axes):
            raise Unsupported(f"Resize has {scales.size} scales for {len(axes)} axes")
        for a, s in zip(axes, scales.tolist()):
            if s <= 0:
                raise Unsupported(f"Resize scale {s} is not positive")
            scale[a], out[a] = float(s), int(s * shape[a])
    else:
        raise Unsupported("Resize needs scales or sizes")
    boxes = [(0.0, 1.0)] * r
    crop = attrs.get("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize"
    if crop:
        if roi is None or roi.size != 2 * len(axes):
            raise Unsupported("Resize with tf_crop_and_resize needs a roi of two numbers per axis")
        for k, a in enumerate(axes):
            boxes[a] = (float(roi[k]), float(roi[len(axes) + k]))
    return [(a, scale[a], out[a], boxes[a]) for a in range(r)
            if out[a] != shape[a] or not math.isclose(scale[a], 1.0) or (crop and boxes[a] != (0.0, 1.0))]


def source_coordinates(mode: str, n: int, m: int, scale: float, box: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``m`` outputs samples an axis of ``n`` inputs; and which outputs fall
    outside it (only ``tf_crop_and_resize`` extrapolates)."""
    y = np.arange(m, dtype=np.float64)
    width = scale * n  # the unrounded output size
    outside = np.zeros(m, dtype=bool)
    if mode == "align_corners":
        x = np.zeros(m) if width == 1 else y * (n - 1) / (width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "pytorch_half_pixel":
        x = np.full(m, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = n / 2 * (1 - m / width)
        x = offset + (y + 0.5) / scale - 0.5
    elif mode == "tf_crop_and_resize":
        lo, hi = np.float32(box[0]), np.float32(box[1])  # roi arithmetic in float32, as ONNX's reference does
        x = np.full(m, (hi - lo) * (n - 1) / 2) if width == 1 else y * (hi - lo) * (n - 1) / (width - 1)
        x = x + lo * np.float32(n - 1)
        outside = (x < 0) | (x > n - 1)
    else:
        raise Unsupported(f"Resize coordinate_transformation_mode {mode!r}")
    return x, outside


def nearest_indices(x: np.ndarray, n: int, rounding: str) -> np.ndarray:
    base = np.floor(x)
    frac = x - base
    if rounding == "round_prefer_floor":
        up = frac > 0.5
    elif rounding == "round_prefer_ceil":
        up = frac >= 0.5
    elif rounding == "floor":
        up = np.zeros_like(frac, dtype=bool)
    elif rounding == "ceil":
        up = frac > 0
    else:
        raise Unsupported(f"Resize nearest_mode {rounding!r}")
    return np.clip(base + up, 0, n - 1).astype(np.int64)


def _cubic(d: np.ndarray, a: float) -> np.ndarray:
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def interpolation_matrix(x: np.ndarray, n: int, scale: float, mode: str, attrs: dict[str, Any]) -> np.ndarray:
    """The ``m x n`` matrix taking an axis of ``n`` inputs to the outputs sampled at ``x``:
    the linear or cubic kernel at each input's distance (stretched by the scale when
    antialiasing a reduction), inputs beyond the edge counted as the edge one, or dropped and
    the rest renormalised with ``exclude_outside``."""
    antialias = bool(attrs.get("antialias", 0))
    stretch = min(scale, 1.0) if antialias else 1.0
    support = 1.0 if mode == "linear" else 2.0
    reach = int(math.ceil(support / stretch)) + 1
    taps = np.floor(x)[:, None] + np.arange(-reach, reach + 1)[None, :]
    d = stretch * (taps - x[:, None])
    w = np.maximum(0.0, 1 - np.abs(d)) if mode == "linear" else _cubic(d, float(attrs.get("cubic_coeff_a", -0.75)))
    if attrs.get("exclude_outside", 0):
        w = np.where((taps < 0) | (taps >= n), 0.0, w)
    if antialias or attrs.get("exclude_outside", 0):
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    out = np.zeros((len(x), n))
    rows = np.repeat(np.arange(len(x)), taps.shape[1])
    np.add.at(out, (rows, np.clip(taps, 0, n - 1).astype(np.int64).ravel()), w.ravel())
    return out


def resize(aten: Any, xs: list[Any], attrs: dict[str, Any], outs: Any) -> tuple:
    x = xs[0]
    if not isinstance(x, Value) or not x.type.is_static:
        raise Unsupported("Resize needs an input of static shape")
    given = [i for i in (1, 2, 3) if i < len(xs) and xs[i] is not None]
    read = dict(zip(given, aten.values([xs[i] for i in given], "Resize's roi, scales or sizes")))
    known = [read[i].numpy().astype(np.float64) if i in read else None for i in (1, 2, 3)]
    mode = attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        raise Unsupported(f"Resize mode {mode!r}")
    if mode != "nearest" and not x.type.dtype.is_float:
        raise Unsupported(f"Resize {mode} of {x.type.dtype} values")
    coordinates = attrs.get("coordinate_transformation_mode", "half_pixel")
    shape = [int(d) for d in x.type.shape]
    y = x
    for axis, scale, m, box in output_plan(shape, attrs, *known):
        n = shape[axis]
        if m == 0 or n == 0:
            raise Unsupported("Resize to or from an empty axis")
        src, outside = source_coordinates(coordinates, n, m, scale, box)
        if mode == "nearest":
            index = torch.from_numpy(nearest_indices(src, n, attrs.get("nearest_mode", "round_prefer_floor")))
            y = aten("aten.index_select", y, axis, aten.constant(index))
        else:
            w = interpolation_matrix(src, n, scale, mode, attrs)
            w[outside] = 0.0
            last = aten("aten.transpose.int", y, axis, -1)
            mixed = aten("aten.matmul", last, aten.constant(torch.from_numpy(w.T.copy()).to(x.type.dtype.to_torch())))
            y = aten("aten.transpose.int", mixed, axis, -1)
        if outside.any():  # tf_crop_and_resize: outputs sampled outside the input
            view = [1] * len(shape)
            view[axis] = m
            mask = torch.from_numpy(outside.reshape(view))
            fill = torch.tensor(float(attrs.get("extrapolation_value", 0.0)), dtype=x.type.dtype.to_torch())
            y = aten("aten.where.self", aten.constant(mask), aten.constant(fill), y)
    return (y,)
