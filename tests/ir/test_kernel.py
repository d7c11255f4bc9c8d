"""Kernel IR: golden text of lowered kernels, each also run against the reference backend."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from effc.backends.reference.program import ReferenceProgram
from effc.ir import DType, Graph, GraphBuilder, Node, Op, TensorType, Value, size_symbol
from effc.ir.kernel import format_kernel
from effc.ir.kernel_interp import run_kernel
from effc.ir.kernel_lower import LoweringError, lower
from effc.ir.kernel_node import add_kernel

S0 = size_symbol("s0")


def f32(*shape: object) -> TensorType:
    return TensorType(DType.F32, shape)  # type: ignore[arg-type]


def kernel_node(kind: str, fn: Callable[..., list[Value]], *types: TensorType) -> Node:
    body = GraphBuilder()
    outs = fn(body, *[body.input(f"a{i}", t) for i, t in enumerate(types)])
    g = body.build(outs)
    outer = GraphBuilder()
    return add_kernel(outer, kind, "k0", [outer.input(f"x{i}", t) for i, t in enumerate(types)], g)


def check_runs(node: Node, env: dict, *shapes: tuple[int, ...]) -> None:
    body: Graph = node.attrs["body"]
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(s, generator=gen, dtype=v.type.dtype.to_torch()) for s, v in zip(shapes, body.inputs)]
    got = run_kernel(lower(node), xs, env)
    want = ReferenceProgram(body)(*xs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_bias_gelu_reads_the_broadcast_bias_by_column():
    node = kernel_node("pointwise", lambda b, x, bias: [
        b.op(Op.GELU, [b.op(Op.ADD, [x, bias])], approximate="tanh")], f32(S0, 64), f32(64))
    assert format_kernel(lower(node)) == """\
kernel k0 pointwise(a0: f32[s0, 64], a1: f32[64]) -> (out0: f32[s0, 64])
  domain i0 < s0, i1 < 64
  %t0 = load a0[64*i0 + i1] : f32
  %t1 = load a1[i1] : f32
  %t2 = add(%t0, %t1) : f32
  %t3 = gelu(%t2) {approximate="tanh"} : f32
  store out0[64*i0 + i1] = %t3
"""
    check_runs(node, {S0: 3}, (3, 64), (64,))


def test_softmax_is_a_max_loop_a_sum_loop_and_a_storing_loop():
    node = kernel_node("reduction", lambda b, x: [b.op(Op.SOFTMAX, [x], dim=1)], f32(S0, 8))
    assert format_kernel(lower(node)) == """\
kernel k0 reduction(a0: f32[s0, 8]) -> (out0: f32[s0, 8])
  domain i0 < s0
  reduce r0 < 8
  loop r0 {
    %t0 = load a0[8*i0 + r0] : f32
    %t1 = reduce max(%t0) : f32
  }
  loop r0 {
    %t2 = load a0[8*i0 + r0] : f32
    %t3 = sub(%t2, %t1) : f32
    %t4 = exp(%t3) : f32
    %t5 = reduce sum(%t4) : f32
  }
  loop r0 {
    %t6 = load a0[8*i0 + r0] : f32
    %t7 = sub(%t6, %t1) : f32
    %t8 = exp(%t7) : f32
    %t9 = div(%t8, %t5) {rounding_mode=none} : f32
    store out0[8*i0 + r0] = %t9
  }
"""
    check_runs(node, {S0: 5}, (5, 8))


def test_layer_norm_computes_per_row_statistics_between_its_loops():
    node = kernel_node("reduction", lambda b, x, w, bias: [
        b.op(Op.LAYER_NORM, [x, w, bias], normalized_shape=(16,), eps=1e-5, has_weight=True,
             has_bias=True)], f32(S0, 16), f32(16), f32(16))
    assert format_kernel(lower(node)) == """\
kernel k0 reduction(a0: f32[s0, 16], a1: f32[16], a2: f32[16]) -> (out0: f32[s0, 16])
  domain i0 < s0
  reduce r0 < 16
  loop r0 {
    %t0 = load a0[16*i0 + r0] : f32
    %t1 = reduce sum(%t0) : f32
  }
  %t2 = const 16 : f32
  %t3 = div(%t1, %t2) {rounding_mode=none} : f32
  loop r0 {
    %t4 = load a0[16*i0 + r0] : f32
    %t5 = sub(%t4, %t3) : f32
    %t6 = mul(%t5, %t5) : f32
    %t7 = reduce sum(%t6) : f32
  }
  %t8 = div(%t7, %t2) {rounding_mode=none} : f32
  %t9 = const 1e-05 : f32
  %t10 = add(%t8, %t9) : f32
  %t11 = rsqrt(%t10) : f32
  loop r0 {
    %t12 = load a0[16*i0 + r0] : f32
    %t13 = sub(%t12, %t3) : f32
    %t14 = mul(%t13, %t11) : f32
    %t15 = load a1[r0] : f32
    %t16 = mul(%t14, %t15) : f32
    %t17 = load a2[r0] : f32
    %t18 = add(%t16, %t17) : f32
    store out0[16*i0 + r0] = %t18
  }
"""
    check_runs(node, {S0: 3}, (3, 16), (16,), (16,))


def test_matmul_reads_a_transposed_weight_through_its_index_and_applies_the_epilogue():
    node = kernel_node("matmul", lambda b, x, w, bias: [b.op(Op.RELU, [b.op(Op.ADD, [
        b.op(Op.MATMUL, [x, b.op(Op.PERMUTE, [w], dims=(1, 0))]), bias])])],
        f32(S0, 32), f32(16, 32), f32(16))
    assert format_kernel(lower(node)) == """\
kernel k0 matmul(a0: f32[s0, 32], a1: f32[16, 32], a2: f32[16]) -> (out0: f32[s0, 16])
  domain i0 < s0, i1 < 16
  reduce r0 < 32
  %acc = matmul sum(a0[32*i0 + r0] * a1[32*i1 + r0]) {batch=0, trans_a=false, trans_b=true} : f32
  %t0 = load a2[i1] : f32
  %t1 = add(%acc, %t0) : f32
  %t2 = relu(%t1) : f32
  store out0[16*i0 + i1] = %t2
"""
    check_runs(node, {S0: 4}, (4, 32), (16, 32), (16,))


def test_permute_then_reshape_folds_into_floor_and_mod():
    node = kernel_node("pointwise", lambda b, x: [b.op(Op.EXP, [b.op(Op.RESHAPE, [
        b.op(Op.PERMUTE, [x], dims=(0, 2, 1))], shape=(S0, 12))])], f32(S0, 3, 4))
    assert format_kernel(lower(node)) == """\
kernel k0 pointwise(a0: f32[s0, 3, 4]) -> (out0: f32[s0, 12])
  domain i0 < s0, i1 < 12
  %t0 = load a0[12*i0 + 4*(Mod(i1, 3)) + floor(i1/3)] : f32
  %t1 = exp(%t0) : f32
  store out0[12*i0 + i1] = %t1
"""
    check_runs(node, {S0: 2}, (2, 3, 4))


def test_a_reshape_and_its_inverse_simplify_to_the_identity_index():
    node = kernel_node("pointwise", lambda b, x: [b.op(Op.NEG, [b.op(Op.RESHAPE, [
        b.op(Op.RESHAPE, [x], shape=(S0 * 12,))], shape=(S0, 3, 4))])], f32(S0, 3, 4))
    assert "load a0[12*i0 + 4*i1 + i2]" in format_kernel(lower(node))


def test_grouped_strided_padded_convolution_matches_the_reference():
    node = kernel_node("conv", lambda b, x, w, bias: [b.op(Op.SILU, [b.op(
        Op.CONVOLUTION, [x, w, bias], stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2,
        transposed=False, output_padding=(0, 0))])], f32(2, 4, 7, 7), f32(6, 2, 3, 3), f32(6))
    k = lower(node)
    assert k.template is not None and k.template.operands[0].mask is not None
    assert [a.name for a in k.reduce] == ["r0", "r1", "r2"]
    check_runs(node, {}, (2, 4, 7, 7), (6, 2, 3, 3), (6,))


def test_op_and_view_kernels_are_opaque_calls_and_aliases():
    pool = kernel_node("op", lambda b, x: [b.op(Op.MAX_POOL, [x], kernel=(2,), stride=(2,), padding=(0,),
                                                 dilation=(1,), ceil_mode=False)], f32(2, 3, 8))
    assert format_kernel(lower(pool)).splitlines()[1] == \
        "  call max_pool {kernel=[2], stride=[2], padding=[0], dilation=[1], ceil_mode=false}"
    check_runs(pool, {}, (2, 3, 8))
    view = kernel_node("view", lambda b, x: [b.op(Op.RESHAPE, [x], shape=(S0, 6))], f32(S0, 2, 3))
    assert lower(view).body == ()
    check_runs(view, {S0: 2}, (2, 2, 3))


def test_a_reduction_read_at_another_index_is_refused():
    # x[i, j] + sum(x[j, :]): the row sum is needed at a column index, not its own row
    node = kernel_node("reduction", lambda b, x: [b.op(Op.ADD, [x, b.op(Op.PERMUTE, [
        b.op(Op.SUM, [x], dims=(1,), keepdim=True, dtype=None)], dims=(1, 0))])], f32(4, 4))
    with pytest.raises(LoweringError, match="not at its own index"):
        lower(node)


def test_reductions_over_different_domains_are_refused():
    node = kernel_node("reduction", lambda b, x: [
        b.op(Op.SUM, [x], dims=(0,), keepdim=False, dtype=None),
        b.op(Op.SUM, [x], dims=(1,), keepdim=False, dtype=None)], f32(4, 5))
    with pytest.raises(LoweringError, match="another domain"):
        lower(node)


def test_a_pointwise_kernel_holding_a_matmul_is_refused():
    node = kernel_node("pointwise", lambda b, x: [b.op(Op.MATMUL, [x, x])], f32(4, 4))
    with pytest.raises(LoweringError, match="cannot hold matmul"):
        lower(node)


# -- trivial reshapes: inserting or removing size-1 dims keeps the element order ---------------

def test_a_matmul_epilogue_through_trivial_reshapes_stores_each_output_at_its_own_index():
    """addmm -> [1, s0, 16] -> gelu written out -> [s0, 16], GPT-2's MLP: one matmul kernel;
    the [1, s0, 16] value is an output too, of the domain's shape up to a size-1 dim."""
    def mlp(b, x, w, bias):
        y3 = b.op(Op.RESHAPE, [b.op(Op.ADDMM, [bias, x, w], beta=1, alpha=1)], shape=(1, S0, 16))
        g = b.op(Op.MUL, [b.op(Op.MUL, [y3, b.scalar(0.5, DType.F32)]),
                          b.op(Op.ADD, [b.op(Op.TANH, [y3]), b.scalar(1.0, DType.F32)])])
        return [b.op(Op.RESHAPE, [g], shape=(S0, 16)), y3]
    node = kernel_node("matmul", mlp, f32(S0, 8), f32(8, 16), f32(16))
    assert format_kernel(lower(node)) == """\
kernel k0 matmul(a0: f32[s0, 8], a1: f32[8, 16], a2: f32[16]) -> (out0: f32[s0, 16], out1: f32[1, s0, 16])
  domain i0 < s0, i1 < 16
  reduce r0 < 8
  %acc = matmul sum(a0[8*i0 + r0] * a1[i1 + 16*r0]) {batch=0, trans_a=false, trans_b=false} : f32
  %t0 = load a2[i1] : f32
  %t1 = add(%acc, %t0) : f32
  %t2 = const 0.5 : f32
  %t3 = mul(%t1, %t2) : f32
  %t4 = tanh(%t1) : f32
  %t5 = const 1.0 : f32
  %t6 = add(%t4, %t5) : f32
  %t7 = mul(%t3, %t6) : f32
  store out0[16*i0 + i1] = %t7
  store out1[16*i0 + i1] = %t1
"""
    check_runs(node, {S0: 3}, (3, 8), (8, 16), (16,))


def test_a_conv_epilogue_through_a_trivial_reshape_matches_the_reference():
    node = kernel_node("conv", lambda b, x, w, r: [b.op(Op.ADD, [b.op(Op.UNSQUEEZE, [b.op(
        Op.CONVOLUTION, [x, w], stride=(1,), padding=(1,), dilation=(1,), groups=1,
        transposed=False, output_padding=(0,))], dim=0), r])], f32(2, 3, 8), f32(4, 3, 3), f32(1, 2, 4, 8))
    assert [str(b.shape) for b in lower(node).buffers if b.role == "out"] == ["(1, 2, 4, 8)"]
    check_runs(node, {}, (2, 3, 8), (4, 3, 3), (1, 2, 4, 8))


def test_layer_norm_then_a_trivial_reshape_is_stored_at_the_reshaped_index():
    node = kernel_node("reduction", lambda b, x, w, bias: [b.op(Op.RESHAPE, [b.op(
        Op.LAYER_NORM, [x, w, bias], normalized_shape=(16,), eps=1e-5, has_weight=True,
        has_bias=True)], shape=(S0, 16))], f32(1, S0, 16), f32(16), f32(16))
    text = format_kernel(lower(node))
    assert text.splitlines()[:3] == [
        "kernel k0 reduction(a0: f32[1, s0, 16], a1: f32[16], a2: f32[16]) -> (out0: f32[s0, 16])",
        "  domain i0 < 1, i1 < s0", "  reduce r0 < 16"]
    assert "    store out0[16*i1 + r0] = %t18" in text.splitlines()
    check_runs(node, {S0: 3}, (1, 3, 16), (16,), (16,))


def test_a_row_sum_through_trivial_reshapes_is_read_at_its_own_row():
    """sum keepdim [s0, 1] -> [s0] -> [1, s0]: every value stays at its row; broadcast back over
    the row as [s0, 1] it divides the row."""
    def body(b, x):
        s = b.op(Op.SUM, [x], dims=(1,), keepdim=True, dtype=None)
        flat = b.op(Op.SQUEEZE, [s], dims=(1,))
        row = b.op(Op.UNSQUEEZE, [b.op(Op.NEG, [flat])], dim=0)
        back = b.op(Op.RESHAPE, [row], shape=(S0, 1))
        return [b.op(Op.DIV, [x, back], rounding_mode=None), row]
    node = kernel_node("reduction", body, f32(S0, 8))
    assert "  store out1[i0] = %t2" in format_kernel(lower(node)).splitlines()
    check_runs(node, {S0: 3}, (3, 8))


def test_an_output_beyond_size_1_dims_of_the_domain_is_refused():
    node = kernel_node("matmul", lambda b, x, w: [b.op(Op.RESHAPE, [b.op(Op.MATMUL, [x, w])],
                                                       shape=(8, 2, 8))], f32(8, 4), f32(4, 16))
    with pytest.raises(LoweringError, match="up to size-1 dims"):
        lower(node)
