"""The kernel cost model: explicit features counted from kernel IR, time from the roofline."""

from __future__ import annotations

from effc.costmodel.kernel_cost import kernel_features, predict_kernel
from effc.costmodel.roofline import Target
from effc.ir import DType, GraphBuilder, Op, TensorType, size_symbol
from effc.ir.kernel_lower import lower
from effc.ir.kernel_node import add_kernel

N = size_symbol("n")
T = Target("t", bandwidth=1e9, peak_flops=1e9, overhead=1e-6)


def _kernel(kind, fn, *types):
    body = GraphBuilder()
    g = body.build(fn(body, *[body.input(f"a{i}", t) for i, t in enumerate(types)]))
    outer = GraphBuilder()
    return lower(add_kernel(outer, kind, "k", [outer.input(f"x{i}", t) for i, t in enumerate(types)], g))


def test_a_broadcast_bias_is_read_at_its_own_size_and_each_statement_counts_per_point():
    k = _kernel("pointwise", lambda b, x, bias: [b.op(Op.RELU, [b.op(Op.ADD, [x, bias])])],
                TensorType(DType.F32, (N, 64)), TensorType(DType.F32, (64,)))
    f = kernel_features(k, {N: 8})
    assert f["bytes_read"] == 4 * (8 * 64 + 64)
    assert f["bytes_written"] == 4 * 8 * 64
    assert f["flops"] == 2 * 8 * 64 and f["domain_size"] == 512 and f["reduce_size"] == 1
    assert f["n_loads"] == 2 and f["itemsize"] == 4 and f["kind"] == "pointwise"
    p = predict_kernel(k, {N: 8}, T)
    assert p is not None and p.confidence == "low" and p.features["bound"] == "memory"
    assert abs(p.seconds - ((f["bytes_read"] + f["bytes_written"]) / 1e9 + 1e-6)) < 1e-12


def test_matmul_counts_two_flops_per_multiply_add_and_is_compute_bound_when_large():
    k = _kernel("matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])],
                TensorType(DType.F32, (256, 512)), TensorType(DType.F32, (512, 128)))
    f = kernel_features(k, {})
    assert f["flops"] == 2 * 256 * 128 * 512 and f["reduce_size"] == 512
    p = predict_kernel(k, {}, T)
    assert p is not None and p.features["bound"] == "compute"


def test_reduction_loops_and_calibration_raise_confidence():
    k = _kernel("reduction", lambda b, x: [b.op(Op.SOFTMAX, [x], dim=-1)], TensorType(DType.F32, (4, 32)))
    f = kernel_features(k, {})
    assert f["n_loops"] == 3 and f["reduce_size"] == 32 and f["domain_size"] == 4
    calibrated = Target("c", 1e9, 1e9, 1e-6, calibrated=True)
    p = predict_kernel(k, {}, calibrated)
    assert p is not None and p.confidence == "medium"


def test_opaque_kernels_stay_low_confidence_and_unbound_sizes_give_none():
    k = _kernel("op", lambda b, x: [b.op(Op.CUMSUM, [x], dim=0, dtype=None)], TensorType(DType.F32, (N, 4)))
    assert predict_kernel(k, {N: 4}, Target("c", 1e9, 1e9, 1e-6, calibrated=True)).confidence == "low"
    assert predict_kernel(k, {}, T) is None


def test_targets_by_description_and_half_precision_matrix_units():
    from effc.costmodel.roofline import CPU_DEFAULT, GPU_DEFAULTS, default_target
    assert default_target("sm90 NVIDIA H200") is GPU_DEFAULTS["sm90"]
    assert default_target("sm100 NVIDIA B200") is GPU_DEFAULTS["sm90"]   # newest known below it
    assert default_target("sm75 Tesla T4") is GPU_DEFAULTS["sm80"]
    assert default_target("cpu-avx512 2 threads") is CPU_DEFAULT
    gpu = GPU_DEFAULTS["sm90"]
    shape = ((4096, 4096), (4096, 4096))
    f32 = _kernel("matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])], *(TensorType(DType.F32, s) for s in shape))
    f16 = _kernel("matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])], *(TensorType(DType.F16, s) for s in shape))
    p32, p16 = predict_kernel(f32, {}, gpu), predict_kernel(f16, {}, gpu)
    assert p32 is not None and p16 is not None
    assert p32.features["bound"] == p16.features["bound"] == "compute"
    # the same FLOPs on tensor cores: the half-precision ceiling, not float32's
    assert abs(p16.seconds - (2 * 4096**3 / gpu.half_flops + gpu.overhead)) < 1e-9
    assert p32.seconds > 5 * p16.seconds
    # element-wise half-precision math gets no tensor-core rate
    add = _kernel("pointwise", lambda b, x, y: [b.op(Op.ADD, [x, y])], *(TensorType(DType.F16, s) for s in shape))
    assert predict_kernel(add, {}, gpu).features["bound"] == "memory"
