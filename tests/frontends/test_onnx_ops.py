"""ONNX ops effc converts itself (frontends/onnx_ops.py) where torch-mlir has no lowering or a
partial one: each matches ONNX's reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import effc
from effc.frontends.onnx_calls import _attr_value
from effc.frontends.onnx_ops import rename_own_ops

from .onnx_models import f32, init, model


def _check(m, feeds, exact=False):
    want = ReferenceEvaluator(m).run(None, feeds)
    got = effc.compile(m).run(feeds)
    for w, (name, g) in zip(want, got.items()):
        assert g.dtype == w.dtype, name
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode, padding, align", [(m, p, 0) for m in ("linear", "nearest", "cubic")
                                                 for p in ("zeros", "border", "reflection")] + [("cubic", "border", 1)])
def test_grid_sample_every_mode_and_padding(mode, padding, align):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, (1, 3, 6, 2)).astype(np.float32)
    m = model([helper.make_node("GridSample", ["x", "g"], ["y"], mode=mode, padding_mode=padding, align_corners=align)],
              [f32("x", [1, 2, 4, 5]), f32("g", [1, 3, 6, 2])], [f32("y", [1, 2, 3, 6])], opset=20)
    _check(m, {"x": x, "g": grid})


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.INT32])
def test_cum_prod(exclusive, reverse, dtype):
    x = (np.arange(1, 13).reshape(3, 4) % 5 + 1).astype(np.float32 if dtype == TensorProto.FLOAT else np.int32)
    m = model([helper.make_node("CumProd", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)],
              [helper.make_tensor_value_info("x", dtype, [3, 4])], [helper.make_tensor_value_info("y", dtype, [3, 4])],
              [init("axis", np.array(-1, np.int64))], opset=26)
    _check(m, {"x": x}, exact=dtype == TensorProto.INT32)


def test_cum_prod_axis_given_as_an_input_compiles_per_value():
    x = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    m = model([helper.make_node("CumProd", ["x", "axis"], ["y"])],
              [f32("x", [2, 3]), helper.make_tensor_value_info("axis", TensorProto.INT64, [])], [f32("y", [2, 3])], opset=26)
    compiled = effc.compile(m)
    for axis in (0, 1):
        a = np.array(axis, np.int64)
        np.testing.assert_allclose(compiled.run({"x": x, "axis": a})["y"], np.cumprod(x, axis=axis))


@pytest.mark.parametrize("src, to, values", [
    (TensorProto.FLOAT, TensorProto.INT32, np.array([1.0, -2.5, np.inf], np.float32)),
    (TensorProto.INT64, TensorProto.DOUBLE, np.array([0, 4607182418800017408], np.int64)),
    (TensorProto.BOOL, TensorProto.UINT8, np.array([True, False], np.bool_)),
])
def test_bit_cast_keeps_the_bits(src, to, values):
    m = model([helper.make_node("BitCast", ["x"], ["y"], to=to)], [helper.make_tensor_value_info("x", src, [len(values)])],
              [helper.make_tensor_value_info("y", to, [len(values)])], opset=26)
    _check(m, {"x": values}, exact=True)


@pytest.mark.parametrize("reduction", ["max", "min"])
def test_scatter_elements_max_and_min_with_negative_indices(reduction):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    idx = np.array([[-1, 0, 2], [1, -4, 1]], np.int64)
    upd = np.array([[20, -5, 7], [1, 30, -2]], np.float32)
    m = model([helper.make_node("ScatterElements", ["d", "i", "u"], ["y"], axis=1, reduction=reduction)],
              [f32("d", [3, 4]), helper.make_tensor_value_info("i", TensorProto.INT64, [2, 3]), f32("u", [2, 3])],
              [f32("y", [3, 4])], opset=18)
    _check(m, {"d": data, "i": idx, "u": upd})


def test_only_the_nodes_effc_converts_are_renamed():
    g = helper.make_graph(
        [helper.make_node("ScatterElements", ["d", "i", "u"], ["a"], reduction="add"),
         helper.make_node("ScatterElements", ["d", "i", "u"], ["b"], reduction="max"),
         helper.make_node("CumProd", ["x", "k"], ["c"]), helper.make_node("Relu", ["x"], ["r"])], "g", [], [])
    rename_own_ops(g)
    assert [n.op_type for n in g.node] == ["ScatterElements", "effc_ScatterElements", "effc_CumProd", "Relu"]


def test_attribute_text_becomes_python_values():
    assert _attr_value('"cubic"') == "cubic"
    assert _attr_value("1 : si64") == 1
    assert _attr_value("-7 : si64") == -7
    assert _attr_value("2.500000e-01 : f32") == 0.25
    assert _attr_value("[1 : si64, 2 : si64]") == [1, 2]
    assert _attr_value("[]") == []


def test_lp_normalization_keeps_a_zero_vector_zero():
    x = np.array([[0.0, 3.0], [0.0, -4.0]], np.float32)  # the first column is all zeros
    for p, want in ((1, [[0, 3 / 7], [0, -4 / 7]]), (2, [[0, 0.6], [0, -0.8]])):
        # (ONNX's reference evaluator divides by the plain sum for p=1; onnxruntime and the
        # spec take the sum of absolute values)
        m = model([helper.make_node("LpNormalization", ["x"], ["y"], axis=0, p=p)], [f32("x", [2, 2])],
                  [f32("y", [2, 2])], opset=17)
        np.testing.assert_allclose(effc.compile(m).run({"x": x})["y"], want, rtol=1e-6)


def test_weighted_softmax_cross_entropy_sums_its_weights_as_floats():
    # torch-mlir types the sum of the weights as int64; effc keeps aten's float sum
    rng = np.random.default_rng(0)
    scores, labels = rng.standard_normal((3, 5)).astype(np.float32), np.array([0, 3, 4], np.int64)
    m = model([helper.make_node("SoftmaxCrossEntropyLoss", ["x", "t", "w"], ["loss"], reduction="mean")],
              [f32("x", [3, 5]), helper.make_tensor_value_info("t", TensorProto.INT64, [3])], [f32("loss", [])],
              [init("w", np.array([0.9, 0.7, 0.8, 0.9, 0.35], np.float32))], opset=17)
    _check(m, {"x": scores, "t": labels})


@pytest.mark.parametrize("rank, interleaved, rot, positions", [(4, 0, 0, True), (3, 1, 4, True), (4, 1, 0, False),
                                                              (3, 0, 6, False)])
def test_rotary_embedding(rank, interleaved, rot, positions):
    rng = np.random.default_rng(3)
    b, s, h, d = 2, 3, 2, 8
    x = rng.standard_normal((b, h, s, d) if rank == 4 else (b, s, h * d)).astype(np.float32)
    half = (rot or d) // 2
    cache = (5, half) if positions else (b, s, half)
    cos, sin = rng.standard_normal(cache).astype(np.float32), rng.standard_normal(cache).astype(np.float32)
    names = ["x", "cos", "sin"] + (["pos"] if positions else [])
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rot} | ({"num_heads": h} if rank == 3 else {})
    inputs = [f32("x", list(x.shape)), f32("cos", list(cache)), f32("sin", list(cache))]
    if positions:
        inputs.append(helper.make_tensor_value_info("pos", TensorProto.INT64, [b, s]))
    m = model([helper.make_node("RotaryEmbedding", names, ["y"], **attrs)], inputs, [f32("y", list(x.shape))], opset=23)
    m.ir_version = 10
    feeds = {"x": x, "cos": cos, "sin": sin} | ({"pos": rng.integers(0, 5, (b, s))} if positions else {})
    _check(m, feeds)
