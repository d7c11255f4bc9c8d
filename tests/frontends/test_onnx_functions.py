"""ONNX function ops expanded in the ONNX model (frontends/onnx_functions.py)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import effc
from effc.frontends.onnx_functions import CannotExpand, data_dependent_branches, expand_functions
from effc.frontends.onnx_load import prepare

from .onnx_models import f32, init, model


def test_a_function_op_is_replaced_by_its_body():
    m = prepare(model([helper.make_node("AffineGrid", ["theta", "size"], ["grid"], align_corners=0)],
                      [f32("theta", [2, 3, 4])], [f32("grid", [2, 2, 3, 4, 3])],
                      [init("size", np.array([2, 1, 2, 3, 4], np.int64))], opset=20))
    expanded = expand_functions(m, {"AffineGrid"})
    ops = [n.op_type for n in expanded.graph.node]
    assert "AffineGrid" not in ops and "If" in ops
    assert all(o.domain != "effc.expand" for o in expanded.opset_import)
    theta = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    want = ReferenceEvaluator(m).run(None, {"theta": theta})[0]
    np.testing.assert_allclose(ReferenceEvaluator(expanded).run(None, {"theta": theta})[0], want, rtol=1e-6)


def test_affine_grid_compiles_with_its_branches_chosen():
    m = model([helper.make_node("AffineGrid", ["theta", "size"], ["grid"], align_corners=1)],
              [f32("theta", [2, 3, 4])], [f32("grid", [2, 2, 3, 4, 3])],
              [init("size", np.array([2, 1, 2, 3, 4], np.int64))], opset=20)
    theta = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    want = ReferenceEvaluator(m).run(None, {"theta": theta})[0]
    np.testing.assert_allclose(effc.compile(m).run({"theta": theta})["grid"], want, rtol=1e-5, atol=1e-6)


def test_an_op_without_a_body_cannot_be_expanded():
    m = prepare(model([helper.make_node("MatMul", ["x", "x"], ["y"])], [f32("x", [2, 2])], [f32("y", [2, 2])]))
    with pytest.raises(CannotExpand, match="MatMul"):
        expand_functions(m, {"MatMul"})


def test_branches_on_input_data_name_those_inputs():
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "t", [], [f32("t", [2])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "e", [], [f32("e", [2])])
    m = model([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ReduceSum", ["flag", "s"], ["c"], keepdims=0),
               helper.make_node("Cast", ["c"], ["b"], to=TensorProto.BOOL),
               helper.make_node("If", ["b"], ["y"], then_branch=then_g, else_branch=else_g, name="choose")],
              [f32("x", [2]), helper.make_tensor_value_info("flag", TensorProto.INT64, [1])], [f32("y", [2])])
    assert data_dependent_branches(m) == [("choose", (1,))]


def test_a_body_for_an_older_opset_is_converted_and_inlined():
    # Swish's body is written for opset 24; the model is opset 25
    m = model([helper.make_node("Swish", ["x"], ["y"], alpha=1.5)], [f32("x", [4])], [f32("y", [4])], opset=25)
    m.ir_version = 11
    expanded = expand_functions(prepare(m), {"Swish"})
    assert all(n.domain in ("", "ai.onnx") for n in expanded.graph.node)
    assert "Swish" not in [n.op_type for n in expanded.graph.node]
    x = np.linspace(-3, 3, 4, dtype=np.float32)
    np.testing.assert_allclose(effc.compile(m).run({"x": x})["y"], x / (1 + np.exp(-1.5 * x)), rtol=1e-6)
