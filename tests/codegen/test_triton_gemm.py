"""The Triton matmul template (codegen/triton_gemm.py) agrees with the reference backend:
plain, linear (transposed weight), addmm, batched and broadcast-batched matmuls, symbolic
and odd sizes that need masks, views folded into non-affine indices, matrix-vector
products, f16/bf16/f64 operands, and fused epilogues (bias, GELU, residual, clamp, cast to
f16, several outputs). On the CPU the kernels run under TRITON_INTERPRET=1 (tests/codegen/
triton_run.py); the ``gpu`` test runs a large one compiled on CUDA."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.codegen.triton_run import DEVICE, INTERPRET, build, check, load  # sets TRITON_INTERPRET first

from effc.codegen.triton_gemm import generate_template
from effc.costmodel.triton_gemm_configs import GemmConfig
from effc.ir import DType, Op, TensorType, size_symbol
from effc.ir.kernel import Compute, LoweringError

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's exp overflow in sigmoid

S0 = size_symbol("s0")
SMALL = GemmConfig(16, 16, 16, group_m=2, num_warps=4, num_stages=2)
WIDE = GemmConfig(32, 16, 32, group_m=4, num_warps=4, num_stages=2)


def T(*shape: object, dtype: DType = DType.F32) -> TensorType:
    return TensorType(dtype, shape)  # type: ignore[arg-type]


def _gelu_linear(approximate: str):  # type: ignore[no-untyped-def]
    return lambda b, x, w, c: [b.op(Op.GELU, [b.op(Op.LINEAR, [x, w, c])], approximate=approximate)]


CASES = {
    # name: (kind body, input types, input shapes, symbol values, config)
    "matmul_odd": (lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [T(37, 29), T(29, 45)], [(37, 29), (29, 45)], {}, SMALL),
    "linear_gelu_symbolic_m": (_gelu_linear("none"), [T(S0, 24), T(40, 24), T(40)], [(19, 24), (40, 24), (40,)],
                               {S0: 19}, SMALL),
    "linear_gelu_tanh_chosen": (_gelu_linear("tanh"), [T(50, 64), T(48, 64), T(48)], [(50, 64), (48, 64), (48,)],
                                {}, None),
    "addmm_scaled": (lambda b, c, x, w: [b.op(Op.ADDMM, [c, x, w], alpha=0.5, beta=2.0)],
                     [T(1, 24), T(20, 33), T(33, 24)], [(1, 24), (20, 33), (33, 24)], {}, SMALL),
    "bmm": (lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [T(3, 17, 24), T(3, 24, 20)], [(3, 17, 24), (3, 24, 20)],
            {}, WIDE),
    "bmm_broadcast_batch": (lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [T(2, 3, 5, 16), T(3, 16, 8)],
                            [(2, 3, 5, 16), (3, 16, 8)], {}, SMALL),
    "linear_3d_input_relu_and_raw": (
        lambda b, x, w: (lambda y: [y, b.op(Op.HARDTANH, [y], min_val=-0.5, max_val=0.5)])(b.op(Op.LINEAR, [x, w])),
        [T(2, 9, 20), T(18, 20)], [(2, 9, 20), (18, 20)], {}, SMALL),
    "head_merge_view": (  # [B, H, S, D] -> [B, S, H*D] @ W: the operand's index is floor/Mod
        lambda b, x, w: [b.op(Op.MATMUL, [b.op(Op.RESHAPE, [b.op(Op.PERMUTE, [x], dims=(0, 2, 1, 3))],
                                               shape=(2, 6, 32)), w])],
        [T(2, 4, 6, 8), T(32, 16)], [(2, 4, 6, 8), (32, 16)], {}, SMALL),
    "matrix_vector": (lambda b, x, v: [b.op(Op.MATMUL, [x, v])], [T(21, 30), T(30)], [(21, 30), (30,)], {}, SMALL),
    "vector_matrix_silu": (lambda b, v, w: [b.op(Op.SILU, [b.op(Op.MATMUL, [v, w])])], [T(30), T(30, 21)],
                           [(30,), (30, 21)], {}, SMALL),
    "symbolic_k": (lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [T(8, S0), T(S0, 24)], [(8, 23), (23, 24)],
                   {S0: 23}, SMALL),
    "f16_residual_cast": (
        lambda b, x, w, r: [b.op(Op.ADD, [b.op(Op.MATMUL, [x, w]), r])],
        [T(33, 40, dtype=DType.F16), T(40, 24, dtype=DType.F16), T(33, 24, dtype=DType.F16)],
        [(33, 40), (40, 24), (33, 24)], {}, SMALL),
    "f32_to_f16_sigmoid": (
        lambda b, x, w: [b.op(Op.CAST, [b.op(Op.SIGMOID, [b.op(Op.MATMUL, [x, w])])], dtype=DType.F16)],
        [T(18, 20), T(20, 17)], [(18, 20), (20, 17)], {}, SMALL),
    "bf16_linear_tanh": (lambda b, x, w: [b.op(Op.TANH, [b.op(Op.LINEAR, [x, w])])],
                         [T(16, 32, dtype=DType.BF16), T(24, 32, dtype=DType.BF16)], [(16, 32), (24, 32)], {}, SMALL),
    "atan2_helper_epilogue": (lambda b, x, w, r: [b.op(Op.ATAN2, [b.op(Op.MATMUL, [x, w]), r])],
                              [T(20, 18), T(18, 17), T(20, 17)], [(20, 18), (18, 17), (20, 17)], {}, SMALL),
    "transposed_a_scaled": (  # x.T @ w: A is read along M contiguously
        lambda b, x, w: [b.op(Op.MUL, [b.op(Op.MATMUL, [b.op(Op.PERMUTE, [x], dims=(1, 0)), w]), b.scalar(0.25, DType.F32)])],
        [T(24, 19), T(24, 20)], [(24, 19), (24, 20)], {}, SMALL),
    "f16_gpt2_gelu_cube": (  # GPT-2's GELU in the epilogue: x cubed is a product, not pow
        lambda b, x, w: (lambda y: [b.op(Op.MUL, [y, b.op(Op.TANH, [b.op(Op.ADD, [
            y, b.op(Op.MUL, [b.op(Op.POW, [y, b.scalar(3.0, DType.F64)]), b.scalar(0.044715, DType.F64)])])])])])(
            b.op(Op.MATMUL, [x, w])),
        [T(20, 32, dtype=DType.F16), T(32, 24, dtype=DType.F16)], [(20, 32), (32, 24)], {}, SMALL),
    "f64_matmul": (lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [T(17, 19, dtype=DType.F64), T(19, 18, dtype=DType.F64)],
                   [(17, 19), (19, 18)], {}, SMALL),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matmul_template_matches_reference(name: str, tmp_path: Path) -> None:
    fn, types, shapes, env, config = CASES[name]
    body, kernel = build("matmul", fn, types)
    src = generate_template(kernel, name, config)
    check(src, body, kernel, shapes, tmp_path, env)


def test_small_integer_power_in_the_epilogue_is_a_product() -> None:
    fn, types, *_ = CASES["f16_gpt2_gelu_cube"]
    _, kernel = build("matmul", fn, types)
    src = generate_template(kernel, "cube", SMALL).source
    assert "effc_pow_f" not in src and " * " in src, src


def test_symbolic_sizes_take_any_value_including_zero(tmp_path: Path) -> None:
    fn, types, _, _, _ = CASES["linear_gelu_symbolic_m"]
    body, kernel = build("matmul", fn, types)
    src = generate_template(kernel, "sym", SMALL)
    for m in (1, 16, 33):
        check(src, body, kernel, [(m, 24), (40, 24), (40,)], tmp_path, {S0: m}, seed=m)
    empty = torch.empty(0, 40, device=DEVICE)
    load(src, tmp_path)([torch.empty(0, 24, device=DEVICE), torch.randn(40, 24, device=DEVICE),
                         torch.randn(40, device=DEVICE)], [empty], [0])  # no launch, no error


def test_float32_is_ieee_unless_tf32_is_allowed() -> None:
    _, kernel = build("matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [T(64, 64), T(64, 64)])
    assert 'input_precision="ieee"' in generate_template(kernel, "k", SMALL).source
    assert 'input_precision="tf32"' in generate_template(kernel, "k", SMALL, allow_tf32=True).source
    _, half = build("matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])],
                    [T(64, 64, dtype=DType.F16), T(64, 64, dtype=DType.F16)])
    assert "input_precision" not in generate_template(half, "k", SMALL).source


def test_static_even_sizes_drop_masks_and_use_pointer_increments() -> None:
    _, kernel = build("matmul", lambda b, x, w: [b.op(Op.LINEAR, [x, w])],
                      [T(64, 64, dtype=DType.F16), T(32, 64, dtype=DType.F16)])
    src = generate_template(kernel, "k", GemmConfig(32, 32, 32)).source
    assert "mask" not in src and "a_ptrs += BLOCK_K" in src and "am = rm\n" in src


def test_wrapped_indices_are_hinted_only_when_the_wrap_keeps_vectors_aligned() -> None:
    """A 5-column linear hinted as runs of BLOCK_N made the H200 fault (misaligned address):
    a vector straddling the wrap ``rn % 5`` starts at an unaligned element."""
    def linear(n: int, m: int) -> str:
        _, kernel = build("matmul", lambda b, x, w, c: [b.op(Op.LINEAR, [x, w, c])], [T(m, 4), T(n, 4), T(n)])
        return generate_template(kernel, "k", GemmConfig(16, 32, 16, group_m=2)).source
    odd = linear(5, 22)
    assert "rn % N" in odd and "rm % M" in odd and "max_contiguous" not in odd
    assert "bn = tl.max_contiguous(tl.multiple_of(bn, BLOCK_N), BLOCK_N)" in linear(48, 22)


def test_config_comes_from_the_cost_model_unless_given() -> None:
    _, kernel = build("matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])],
                      [T(4096, 4096, dtype=DType.F16), T(4096, 4096, dtype=DType.F16)])
    assert "BLOCK_M=128, BLOCK_N=256, BLOCK_K=64" in generate_template(kernel, "k").source
    assert "BLOCK_M=32, BLOCK_N=16, BLOCK_K=32" in generate_template(kernel, "k", WIDE).source


def test_unsupported_kernels_raise_lowering_error() -> None:
    _, ints = build("matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])],
                    [T(4, 4, dtype=DType.I64), T(4, 4, dtype=DType.I64)])
    with pytest.raises(LoweringError, match="no Triton matmul"):
        generate_template(ints, "k", SMALL)
    _, kernel = build("matmul", lambda b, x, w: [b.op(Op.RELU, [b.op(Op.MATMUL, [x, w])])], [T(4, 4), T(4, 4)])
    body = tuple(dataclasses.replace(s, op="no_such_op") if isinstance(s, Compute) else s for s in kernel.body)
    with pytest.raises(LoweringError, match="no_such_op"):
        generate_template(dataclasses.replace(kernel, body=body), "k", SMALL)


def test_names_from_the_model_do_not_reach_the_source() -> None:
    _, kernel = build("matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [T(S0, 16), T(16, 16)],
                      name="evil\"); import os #")
    src = generate_template(kernel, "evil\"); import os #", SMALL)
    assert src.name.isidentifier() and "evil\"" not in src.source and "import os #" not in src.source
    assert "def entry(inputs, outputs, sizes):" in src.source and src.entry == "entry"


def test_convolution_kernels_are_not_matmul_templates() -> None:
    conv = lambda b, x, w: [b.op(Op.CONVOLUTION, [x, w], stride=(1, 1), padding=(0, 0), dilation=(1, 1),  # noqa: E731
                                 groups=1, transposed=False, output_padding=(0, 0))]
    _, kernel = build("conv", conv, [T(1, 4, 5, 5), T(8, 4, 1, 1)])
    with pytest.raises(LoweringError):
        generate_template(kernel, "k", SMALL)


@pytest.mark.gpu
def test_large_linear_gelu_on_cuda(tmp_path: Path) -> None:
    if INTERPRET:
        pytest.skip("TRITON_INTERPRET=1 in this process: the kernel would not be compiled")
    f16 = DType.F16
    body, kernel = build("matmul", _gelu_linear("tanh"), [T(S0, 2048, dtype=f16), T(1536, 2048, dtype=f16),
                                                         T(1536, dtype=f16)])
    check(generate_template(kernel, "large"), body, kernel, [(3000, 2048), (1536, 2048), (1536,)], tmp_path,
          {S0: 3000})


def test_the_triton_generator_dispatches_to_the_template(tmp_path: Path) -> None:
    from effc.codegen.triton import generate
    fn, types, shapes, env, _ = CASES["f16_residual_cast"]
    body, kernel = build("matmul", fn, types)
    src = generate(kernel, "via_triton_py", SMALL)
    assert "tl.dot(" in src.source
    check(src, body, kernel, shapes, tmp_path, env)


def test_ranked_configs_are_feasible_and_sorted() -> None:
    from effc.codegen.triton_gemm import rank_template_configs
    _, kernel = build("matmul", _gelu_linear("none"), [T(S0, 768, dtype=DType.F16), T(3072, 768, dtype=DType.F16),
                                                       T(3072, dtype=DType.F16)])
    ranked = rank_template_configs(kernel, {S0: 4096})
    times = [t for t, _ in ranked]
    assert len(ranked) >= 4 and times == sorted(times)
    assert all(c.block_m >= 16 and c.block_n >= 16 and c.block_k >= 16 for _, c in ranked)
    top = ranked[0][1]
    assert f"BLOCK_M={top.block_m}, BLOCK_N={top.block_n}, BLOCK_K={top.block_k}" in \
        generate_template(kernel, "k", size_hints={S0: 4096}).source
