"""Small ONNX models for the frontend and CLI tests, built with onnx.helper or exported from torch."""

from __future__ import annotations

import io

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper


def model(nodes, inputs, outputs, inits=(), opset=18, name="g") -> onnx.ModelProto:
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def mlp(batch="batch") -> onnx.ModelProto:
    """x[batch, 8] -> Gemm -> Relu -> MatMul -> Add -> Softmax."""
    rng = np.random.default_rng(0)
    return model(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
         helper.make_node("Relu", ["h"], ["a"], name="act"),
         helper.make_node("MatMul", ["a", "w2"], ["m"], name="fc2"),
         helper.make_node("Add", ["m", "b2"], ["z"], name="bias2"),
         helper.make_node("Softmax", ["z"], ["y"], axis=-1, name="softmax")],
        [f32("x", [batch, 8])], [f32("y", [batch, 4])],
        [init("w1", rng.standard_normal((16, 8)).astype(np.float32)),
         init("b1", rng.standard_normal(16).astype(np.float32)),
         init("w2", rng.standard_normal((16, 4)).astype(np.float32)),
         init("b2", rng.standard_normal(4).astype(np.float32))])


def exported(module: torch.nn.Module, *inputs: torch.Tensor, dynamic_batch: bool = True, opset: int = 20) -> bytes:
    """``module`` exported with torch's TorchScript-based exporter (batch axis symbolic)."""
    names = [f"in{i}" for i in range(len(inputs))]
    buf = io.BytesIO()
    axes = {n: {0: "batch"} for n in names} if dynamic_batch else None
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), tuple(inputs), buf, dynamo=False, input_names=names,
                          output_names=["out"], dynamic_axes=axes, opset_version=opset)
    return buf.getvalue()
