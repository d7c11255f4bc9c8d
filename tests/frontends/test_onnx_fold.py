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


def _if_on_size(then_value, else_value, cond_from="x"):
    """y = x + (then_value if Size(cond_from) == 6 else else_value)."""
    then_g = helper.make_graph([helper.make_node("Constant", [], ["t"], value=helper.make_tensor("tv", TensorProto.FLOAT, [], [then_value]))],
                               "then", [], [f32("t", [])])
    else_g = helper.make_graph([helper.make_node("Constant", [], ["e"], value=helper.make_tensor("ev", TensorProto.FLOAT, [], [else_value]))],
                               "else", [], [f32("e", [])])
    return [helper.make_node("Size", [cond_from], ["n"]), helper.make_node("Equal", ["n", "six"], ["c"]),
            helper.make_node("If", ["c"], ["k"], then_branch=then_g, else_branch=else_g),
            helper.make_node("Add", ["x", "k"], ["y"])]


def test_an_if_on_a_known_size_becomes_the_branch_it_takes():
    m = model(_if_on_size(10.0, -10.0), [f32("x", [2, 3])], [f32("y", [2, 3])], [init("six", np.array(6, np.int64))])
    p = prepare(m)
    assert "If" not in [n.op_type for n in p.graph.node]
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(effc.compile(m).run({"x": x})["y"], x + 10)


def test_an_if_on_input_data_compiles_per_value_of_that_input():
    nodes = [helper.make_node("ReduceSum", ["flag"], ["n"], keepdims=0), helper.make_node("Equal", ["n", "six"], ["c"])]
    nodes += _if_on_size(1.0, 2.0)[2:]
    m = model(nodes, [f32("x", [2]), helper.make_tensor_value_info("flag", TensorProto.INT64, [2])], [f32("y", [2])],
              [init("six", np.array(6, np.int64))])
    compiled = effc.compile(m)
    x = np.zeros(2, np.float32)
    np.testing.assert_array_equal(compiled.run({"x": x, "flag": np.array([3, 3], np.int64)})["y"], x + 1)
    np.testing.assert_array_equal(compiled.run({"x": x, "flag": np.array([3, 4], np.int64)})["y"], x + 2)


def test_transpose_without_perm_reverses_the_axes():
    m = model([helper.make_node("Transpose", ["x"], ["y"])], [f32("x", [2, 3, 4])], [f32("y", [4, 3, 2])])
    perm = [a for n in prepare(m).graph.node for a in n.attribute if a.name == "perm"]
    assert list(perm[0].ints) == [2, 1, 0]
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(effc.compile(m).run({"x": x})["y"], x.transpose())
