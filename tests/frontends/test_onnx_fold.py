"""ONNX-level clean-up before torch-mlir: constant chains folded, RMSNormalization spelled out."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

import effc
from effc.frontends.onnx_load import prepare

from .onnx_models import f32, init, model


def test_shape_arithmetic_of_static_tensors_becomes_initializers():
    m = model([helper.make_node("Shape", ["x"], ["s"]),
               helper.make_node("Slice", ["s", "one", "three"], ["tail"]),
               helper.make_node("ReduceProd", ["tail"], ["n"], keepdims=1),
               helper.make_node("Concat", ["two", "n"], ["shape"], axis=0),
               helper.make_node("Reshape", ["x", "shape"], ["y"])],
              [f32("x", [2, 3, 4])], [f32("y", [2, 12])],
              [init("one", np.array([1], np.int64)), init("three", np.array([3], np.int64)),
               init("two", np.array([2], np.int64))])
    p = prepare(m)
    assert [n.op_type for n in p.graph.node] == ["Reshape"]
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(effc.compile(m).run({"x": x})["y"], x.reshape(2, 12))


def test_rms_normalization_is_spelled_out_with_constant_axes():
    m = model([helper.make_node("RMSNormalization", ["x", "scale"], ["y"], axis=-2, epsilon=1e-3)],
              [f32("x", ["b", 3, 4]), f32("scale", [3, 4])], [f32("y", ["b", 3, 4])], opset=23)
    m.ir_version = 10
    assert "RMSNormalization" not in [n.op_type for n in prepare(m).graph.node]
    rng = np.random.default_rng(0)
    x, scale = rng.standard_normal((5, 3, 4), dtype=np.float32), rng.random((3, 4), dtype=np.float32)
    want = x / np.sqrt((x.astype(np.float64) ** 2).mean(axis=(1, 2), keepdims=True) + 1e-3) * scale
    np.testing.assert_allclose(effc.compile(m).run({"x": x, "scale": scale})["y"], want, rtol=1e-5, atol=1e-6)


def test_random_ops_and_graph_outputs_are_not_folded():
    m = model([helper.make_node("RandomUniform", [], ["r"], shape=[3], dtype=TensorProto.FLOAT),
               helper.make_node("Add", ["r", "x"], ["y"]),
               helper.make_node("Identity", ["c"], ["z"])],
              [f32("x", [3])], [f32("y", [3]), f32("z", [3])], [init("c", np.ones(3, np.float32))])
    assert [n.op_type for n in prepare(m).graph.node] == ["RandomUniform", "Add", "Identity"]
