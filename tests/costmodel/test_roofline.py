"""The roofline cost model: bytes and FLOPs counted per op family, time from the ceilings."""

from __future__ import annotations

import sympy

from effc.costmodel import Target, node_bytes, node_flops, predict_node
from effc.ir import DType, GraphBuilder, Op, TensorType
from effc.ir.types import size_symbol


def test_matmul_counts_two_flops_per_multiply_add_and_every_byte_once():
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (64, 1024)))
    w = b.input("w", TensorType(DType.F32, (1024, 256)))
    y = b.op(Op.MATMUL, [x, w])
    node = y.node
    assert node_flops(node, {}) == 2 * 64 * 256 * 1024
    assert node_bytes(node, {}) == 4 * (64 * 1024 + 1024 * 256 + 64 * 256)
    t = Target("t", bandwidth=1e9, peak_flops=1e12, overhead=1e-6)
    p = predict_node(node, {}, t)
    assert p.features["bound"] == "memory"
    assert abs(p.seconds - (node_bytes(node, {}) / 1e9 + 1e-6)) < 1e-12


def test_convolution_and_elementwise_flops():
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (1, 8, 16, 16)))
    w = b.input("w", TensorType(DType.F32, (4, 8, 3, 3)))
    y = b.op(Op.CONVOLUTION, [x, w], stride=(1, 1), padding=(1, 1), dilation=(1, 1),
             groups=1, transposed=False, output_padding=(0, 0))
    assert node_flops(y.node, {}) == 2 * (4 * 16 * 16) * (8 * 3 * 3)
    z = b.op(Op.ADD, [y, y])
    assert node_flops(z.node, {}) == 4 * 16 * 16


def test_symbolic_sizes_need_their_values():
    n = size_symbol("n")
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (n, 8)))
    y = b.op(Op.RELU, [x])
    assert predict_node(y.node, {}) is None
    assert node_bytes(y.node, {n: 3}) == 2 * 4 * 3 * 8
    assert predict_node(y.node, {sympy.Symbol("n", integer=True, positive=True): 3}).confidence == "low"
