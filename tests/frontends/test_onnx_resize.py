"""ONNX Resize (frontends/onnx_resize.py): the per-axis interpolation maps reproduce ONNX's
reference implementation for every mode, and compiled models match it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import effc
from effc.errors import UserError
from effc.frontends.lowering import Unsupported
from effc.frontends.onnx_resize import interpolation_matrix, nearest_indices, output_plan, source_coordinates

from .onnx_models import f32, init, model


def _resize_model(shape, attrs, scales=None, sizes=None, roi=None, axes_count=None, dtype=TensorProto.FLOAT):
    inits, names = [], ["x", "", "", ""]
    if roi is not None:
        inits.append(init("roi", np.asarray(roi, np.float32)))
        names[1] = "roi"
    if scales is not None:
        inits.append(init("scales", np.asarray(scales, np.float32)))
        names[2] = "scales"
    if sizes is not None:
        inits.append(init("sizes", np.asarray(sizes, np.int64)))
        names[3] = "sizes"
    while names[-1] == "":
        names.pop()
    node = helper.make_node("Resize", names, ["y"], **attrs)
    out = helper.make_tensor_value_info("y", dtype, [f"o{i}" for i in range(len(shape))])
    return model([node], [helper.make_tensor_value_info("x", dtype, list(shape))], [out], inits, opset=19)


def _ours(x, attrs, scales=None, sizes=None, roi=None):
    """Resize computed with this module's plan and maps, in numpy."""
    mode = attrs.get("mode", "nearest")
    y = x.astype(np.float64)
    plan = output_plan(list(x.shape), attrs, None if roi is None else np.asarray(roi, np.float64),
                       None if scales is None else np.asarray(scales, np.float32).astype(np.float64),
                       None if sizes is None else np.asarray(sizes, np.float64))
    for axis, scale, m, box in plan:
        n = y.shape[axis]
        src, outside = source_coordinates(attrs.get("coordinate_transformation_mode", "half_pixel"), n, m, scale, box)
        if mode == "nearest":
            y = np.take(y, nearest_indices(src, n, attrs.get("nearest_mode", "round_prefer_floor")), axis=axis)
        else:
            w = interpolation_matrix(src, n, scale, mode, attrs)
            y = np.moveaxis(np.moveaxis(y, axis, -1) @ w.T, -1, axis)
        view = [1] * y.ndim
        view[axis] = m
        y = np.where(outside.reshape(view), attrs.get("extrapolation_value", 0.0), y)
    return y


COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"]


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 9), scale=st.sampled_from([0.25, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 2.6]),
       mode=st.sampled_from(["nearest", "linear", "cubic"]), coords=st.sampled_from(COORDS),
       nearest=st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]),
       antialias=st.booleans(), exclude=st.booleans(), use_sizes=st.booleans(), seed=st.integers(0, 99))
def test_maps_match_onnx_reference(n, scale, mode, coords, nearest, antialias, exclude, use_sizes, seed):
    x = np.random.default_rng(seed).standard_normal((2, n, n + 1)).astype(np.float32)
    attrs = {"mode": mode, "coordinate_transformation_mode": coords, "axes": [1, 2]}
    if mode == "nearest":
        attrs["nearest_mode"] = nearest
    else:
        attrs["antialias"] = int(antialias)
        attrs["exclude_outside"] = int(exclude and mode == "cubic")
    if use_sizes:
        sizes, scales = [max(1, round(n * scale)), max(1, round((n + 1) * scale))], None
    else:
        sizes, scales = None, [scale, scale]
    if (scales and min(int(scale * n), int(scale * (n + 1))) == 0):
        return  # an empty output: both sides refuse or agree trivially
    # a coordinate a rounding error away from a whole or half pixel may land on either side of it
    # (the reference itself rounds it once on padding): only exact or clear cases are compared
    for axis, sc, m, box in output_plan(list(x.shape), attrs, None, *(None if v is None else np.array(v, np.float32)
                                                                      .astype(float) for v in (scales, sizes))):
        src, _ = source_coordinates(coords, x.shape[axis], m, sc, box)
        off = np.abs(src * 2 - np.round(src * 2))
        assume(not np.any((off > 0) & (off < 1e-9)))
    want = ReferenceEvaluator(_resize_model(x.shape, attrs, scales, sizes)).run(None, {"x": x})[0]
    np.testing.assert_allclose(_ours(x, attrs, scales, sizes).astype(np.float32), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
def test_keep_aspect_ratio_policy(policy):
    x = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4)
    attrs = {"mode": "linear", "axes": [1, 2], "keep_aspect_ratio_policy": policy}
    want = ReferenceEvaluator(_resize_model(x.shape, attrs, sizes=[9, 3])).run(None, {"x": x})[0]
    got = _ours(x, attrs, sizes=[9, 3])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_crop_and_resize_fills_outside_with_the_extrapolation_value():
    x = np.random.default_rng(1).standard_normal((1, 1, 4, 5)).astype(np.float32)
    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 7.5}
    roi = [0, 0, -0.3, 0.2, 1, 1, 0.9, 1.4]
    want = ReferenceEvaluator(_resize_model(x.shape, attrs, sizes=[1, 1, 5, 6], roi=roi)).run(None, {"x": x})[0]
    assert (want == 7.5).any()
    np.testing.assert_allclose(_ours(x, attrs, sizes=[1, 1, 5, 6], roi=roi), want, rtol=1e-5, atol=1e-6)
    got = effc.compile(_resize_model(x.shape, attrs, sizes=[1, 1, 5, 6], roi=roi)).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attrs, scales", [
    ({"mode": "cubic", "antialias": 1}, [1, 1, 0.6, 0.5]),
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "ceil"}, [1, 1, 2.5, 1.5]),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, [1, 1, 0.5, 3]),
])
def test_compiled_resize_matches_the_reference(attrs, scales):
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 5)).astype(np.float32)
    m = _resize_model(x.shape, attrs, scales=scales)
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    np.testing.assert_allclose(effc.compile(m).run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)


def test_nearest_resize_of_integers_is_a_gather_and_linear_is_refused():
    x = np.arange(12, dtype=np.int32).reshape(1, 1, 3, 4)
    m = _resize_model(x.shape, {"mode": "nearest"}, scales=[1, 1, 2, 2], dtype=TensorProto.INT32)
    np.testing.assert_array_equal(effc.compile(m).run({"x": x})["y"], ReferenceEvaluator(m).run(None, {"x": x})[0])
    bad = _resize_model(x.shape, {"mode": "linear"}, scales=[1, 1, 2, 2], dtype=TensorProto.INT32)
    with pytest.raises(UserError, match="Resize linear of i32 values"):
        effc.compile(bad)


def test_bad_resize_arguments_are_one_line_errors():
    with pytest.raises(Unsupported, match="2 scales for 3 axes"):
        output_plan([2, 3, 4], {}, None, np.array([1.0, 2.0]), None)
    with pytest.raises(Unsupported, match="not positive"):
        output_plan([2, 3], {}, None, np.array([1.0, -2.0]), None)
    with pytest.raises(Unsupported, match="needs scales or sizes"):
        output_plan([2, 3], {}, None, None, None)
    with pytest.raises(Unsupported, match="coordinate_transformation_mode 'bogus'"):
        source_coordinates("bogus", 3, 6, 2.0, (0.0, 1.0))


def test_scales_given_as_an_input_compile_per_value():
    x = np.random.default_rng(3).standard_normal((1, 1, 3, 3)).astype(np.float32)
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear")
    m = model([node], [f32("x", [1, 1, 3, 3]), f32("s", [4])], [f32("y", ["a", "b", "c", "d"])], opset=19)
    compiled = effc.compile(m)
    for s in ([1, 1, 2, 2], [1, 1, 0.5, 1.5]):
        s = np.array(s, np.float32)
        want = ReferenceEvaluator(m).run(None, {"x": x, "s": s})[0]
        np.testing.assert_allclose(compiled.run({"x": x, "s": s})["y"], want, rtol=1e-5, atol=1e-6)
