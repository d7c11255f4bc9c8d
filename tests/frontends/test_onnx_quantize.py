"""ONNX quantization ops converted by effc (frontends/onnx_quantize.py): each matches ONNX's
reference evaluator exactly (integers) or within float tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import effc

from .onnx_models import f32, init, model


def _vi(name, t, shape):
    return helper.make_tensor_value_info(name, t, shape)


def _same(m, feeds):
    want = ReferenceEvaluator(m).run(None, feeds)
    got = list(effc.compile(m).run(feeds).values())
    for w, g in zip(want, got):
        assert g.dtype == w.dtype
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_array_equal(g, w)


def test_dynamic_quantize_linear_rounds_half_to_even_and_saturates():
    x = np.array([[0.0, 2.5, -3.75, 250.0], [1.25, 12.0, -1.0, 7.5]], np.float32)
    m = model([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], [f32("x", [2, 4])],
              [_vi("y", TensorProto.UINT8, [2, 4]), f32("s", []), _vi("z", TensorProto.UINT8, [])], opset=11)
    _same(m, {"x": x})


@pytest.mark.parametrize("zero_type", [TensorProto.UINT8, TensorProto.INT8])
def test_quantize_linear_with_a_scale_computed_at_run_time(zero_type):
    # the scale is an input (torch-mlir can only lower a constant one)
    x = np.linspace(-40, 300, 24, dtype=np.float32).reshape(2, 3, 4)
    m = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1)],
              [f32("x", [2, 3, 4]), f32("s", [3])], [_vi("y", zero_type, [2, 3, 4])],
              [init("z", np.array([0, 3, 100] if zero_type == TensorProto.UINT8 else [0, -3, 100],
                                  np.uint8 if zero_type == TensorProto.UINT8 else np.int8))], opset=19)
    _same(m, {"x": x, "s": np.array([1.0, 0.5, 2.0], np.float32)})


@pytest.mark.parametrize("attrs, scale_shape", [({"axis": 1}, [3]), ({"axis": 1, "block_size": 2}, [2, 2, 4])])
def test_dequantize_linear_per_axis_and_per_block(attrs, scale_shape):
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 127, (2, 3, 4)).astype(np.int8)
    scale = rng.uniform(0.1, 2, scale_shape).astype(np.float32)
    zero = rng.integers(-5, 5, scale_shape).astype(np.int8)
    m = model([helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], **attrs)],
              [_vi("x", TensorProto.INT8, [2, 3, 4])], [f32("y", [2, 3, 4])], [init("s", scale), init("z", zero)], opset=21)
    _same(m, {"x": x})


def test_qlinear_matmul_matches_dequantize_matmul_quantize():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 255, (2, 4, 3)).astype(np.uint8)
    b = rng.integers(0, 255, (3, 5)).astype(np.uint8)
    inits = [init("as", np.array(0.02, np.float32)), init("az", np.array(113, np.uint8)),
             init("bs", np.array(0.01, np.float32)), init("bz", np.array(114, np.uint8)),
             init("ys", np.array(0.03, np.float32)), init("yz", np.array(118, np.uint8))]
    m = model([helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])],
              [_vi("a", TensorProto.UINT8, [2, 4, 3]), _vi("b", TensorProto.UINT8, [3, 5])],
              [_vi("y", TensorProto.UINT8, [2, 4, 5])], inits, opset=10)
    _same(m, {"a": a, "b": b})
