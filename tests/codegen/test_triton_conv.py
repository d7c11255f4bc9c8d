"""The Triton convolution templates (codegen/triton_conv.py) agree with the reference backend:
implicit GEMM (flat K, or walking taps and channel blocks) for regular, strided and padded,
dilated, grouped and 1x1 convolutions, the
direct kernel for depthwise ones (and for any convolution when asked), with fused epilogues,
f16 operands and a symbolic batch. On the CPU the kernels run under TRITON_INTERPRET=1
(tests/codegen/triton_run.py); the ``gpu`` test runs a ResNet-sized one compiled on CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import sympy

from tests.codegen.triton_run import INTERPRET, build, check  # sets TRITON_INTERPRET first

from effc.codegen.triton_conv import generate_template, rank_template_configs
from effc.codegen.triton_gemm import rank_template_configs as rank_gemm_templates
from effc.costmodel.triton_gemm_configs import DirectConfig, GemmConfig
from effc.ir import DType, Op, TensorType, Value, size_symbol
from effc.ir.kernel import Kernel, LoweringError

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

S0 = size_symbol("s0")
SMALL = GemmConfig(16, 16, 16, group_m=2, num_warps=4, num_stages=2)


def T(*shape: object, dtype: DType = DType.F32) -> TensorType:
    return TensorType(dtype, shape)  # type: ignore[arg-type]


def conv(n: object, cin: int, cout: int, hw: tuple[int, int], k: tuple[int, int], stride: tuple[int, int] = (1, 1),
         padding: tuple[int, int] = (0, 0), dilation: tuple[int, int] = (1, 1), groups: int = 1,
         epilogue: str = "bias_relu", dtype: DType = DType.F32
         ) -> tuple[Callable[..., list[Value]], list[TensorType], list[tuple[int, ...]]]:
    """A convolution kernel body, its input types and (for a symbolic ``n``: two) shapes."""
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, transposed=False,
                 output_padding=(0, 0))
    types = [T(n, cin, *hw, dtype=dtype), T(cout, cin // groups, *k, dtype=dtype)]
    shapes = [(2 if not isinstance(n, int) else n, cin, *hw), (cout, cin // groups, *k)]
    if epilogue == "none":
        return (lambda b, x, w: [b.op(Op.CONVOLUTION, [x, w], **attrs)]), types, shapes
    types.append(T(cout, dtype=dtype))
    shapes.append((cout,))
    if epilogue == "bias_relu":
        return (lambda b, x, w, c: [b.op(Op.RELU, [b.op(Op.CONVOLUTION, [x, w, c], **attrs)])]), types, shapes
    assert epilogue == "bias_hardswish"
    return (lambda b, x, w, c: [b.op(Op.HARDSWISH, [b.op(Op.CONVOLUTION, [x, w, c], **attrs)])]), types, shapes


CASES = {
    # name: (conv(...), config, the kernel that must run: implicit GEMM over a flat K ("dot") or
    # over (tap, channel block) ("taps"), or the direct kernel)
    "regular_3x3": (conv(2, 4, 16, (6, 5), (3, 3)), SMALL, "dot"),
    "strided_padded": (conv(2, 8, 16, (7, 6), (3, 3), stride=(2, 1), padding=(1, 1)), SMALL, "dot"),
    "dilated_no_bias": (conv(1, 6, 16, (9, 8), (3, 2), padding=(2, 0), dilation=(2, 3), epilogue="none"),
                        SMALL, "dot"),
    "grouped": (conv(2, 8, 32, (7, 6), (3, 3), stride=(2, 1), padding=(1, 1), groups=2), SMALL, "dot"),
    "pointwise_1x1": (conv(2, 16, 24, (5, 7), (1, 1)), SMALL, "dot"),
    "strided_1x1": (conv(1, 16, 20, (6, 6), (1, 1), stride=(2, 2)), SMALL, "dot"),
    "symbolic_batch": (conv(S0, 4, 16, (5, 5), (3, 3), padding=(1, 1)), SMALL, "dot"),
    "f16_hardswish": (conv(2, 8, 16, (6, 6), (3, 3), padding=(1, 1), epilogue="bias_hardswish",
                           dtype=DType.F16), SMALL, "dot"),
    "chosen_config": (conv(1, 8, 32, (6, 6), (3, 3), padding=(1, 1)), None, "dot"),
    # channels fill K blocks: the loop walks (tap, channel block) [Note: Triton convolution K loop]
    "taps_3x3": (conv(1, 32, 16, (5, 5), (3, 3), padding=(1, 1)), SMALL, "taps"),
    "taps_grouped_strided": (conv(1, 32, 32, (5, 4), (3, 3), stride=(2, 1), padding=(1, 1), groups=2), SMALL, "taps"),
    "taps_ragged_channels_symbolic_batch": (conv(S0, 72, 16, (4, 3), (2, 2), padding=(1, 0), epilogue="none"),
                                            SMALL, "taps"),
    "taps_f16_dilated": (conv(1, 16, 16, (7, 6), (3, 2), padding=(2, 1), dilation=(2, 2), dtype=DType.F16),
                         SMALL, "taps"),
    "depthwise_3x3": (conv(2, 6, 6, (9, 11), (3, 3), padding=(1, 1), groups=6), None, "direct"),
    "depthwise_strided_mult": (conv(1, 2, 4, (7, 6), (5, 5), stride=(2, 2), padding=(2, 2), groups=2,
                                    epilogue="bias_hardswish"), None, "direct"),
    "depthwise_symbolic_batch": (conv(S0, 4, 4, (7, 7), (3, 3), padding=(1, 1), groups=4), None, "direct"),
    "depthwise_f16": (conv(2, 4, 4, (6, 6), (3, 3), padding=(1, 1), groups=4, dtype=DType.F16), None, "direct"),
    "regular_forced_direct": (conv(1, 2, 3, (5, 4), (2, 2), padding=(1, 0)), DirectConfig(128, 2), "direct"),
}


def _kernel(name: str) -> tuple[object, Kernel]:
    (fn, types, _), _, _ = CASES[name]
    return build("conv", fn, types)


@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_template_matches_reference(name: str, tmp_path: Path) -> None:
    (fn, types, shapes), config, kind = CASES[name]
    body, kernel = build("conv", fn, types)
    src = generate_template(kernel, name, config)
    assert ("tl.dot(" in src.source) == (kind != "direct"), src.source
    assert ("tap = it // NCH" in src.source) == (kind == "taps"), src.source
    env = {S0: shapes[0][0]} if S0 in sympy.sympify(types[0].shape[0]).free_symbols else {}
    check(src, body, kernel, shapes, tmp_path, env)  # type: ignore[arg-type]


def test_symbolic_batch_takes_other_values(tmp_path: Path) -> None:
    (fn, types, shapes), _, _ = CASES["depthwise_symbolic_batch"]
    body, kernel = build("conv", fn, types)
    src = generate_template(kernel, "dw")
    for n in (1, 3):
        check(src, body, kernel, [(n, *shapes[0][1:])] + shapes[1:], tmp_path, {S0: n}, seed=n)


def test_ranked_configs_offer_the_right_kernel() -> None:
    _, dw = _kernel("depthwise_3x3")
    ranked = rank_template_configs(dw)
    assert ranked and all(isinstance(c, DirectConfig) for _, c in ranked)
    assert [t for t, _ in ranked] == sorted(t for t, _ in ranked)
    _, reg = _kernel("chosen_config")
    ranked_gemm = rank_template_configs(reg)
    assert len(ranked_gemm) > 3 and all(isinstance(c, GemmConfig) for _, c in ranked_gemm)
    assert f"BLOCK_M={ranked_gemm[0][1].block_m}, BLOCK_N={ranked_gemm[0][1].block_n}" in \
        generate_template(reg, "k").source


def test_large_matmul_ranking_prefers_large_tiles_and_small_prefers_small() -> None:
    _, big = build("matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])],
                   [T(4096, 4096, dtype=DType.F16), T(4096, 4096, dtype=DType.F16)])
    _, small = build("matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])],
                     [T(S0, 4096, dtype=DType.F16), T(4096, 4096, dtype=DType.F16)])
    top = rank_gemm_templates(big)[0][1]
    assert top.block_m * top.block_n >= 128 * 128
    skinny = rank_gemm_templates(small, {S0: 16})[0][1]
    assert skinny.block_m * skinny.block_n < top.block_m * top.block_n


def test_matmul_kernels_are_not_convolution_templates() -> None:
    _, kernel = build("matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [T(4, 4), T(4, 4)])
    with pytest.raises(LoweringError):
        generate_template(kernel, "k")


@pytest.mark.gpu
@pytest.mark.parametrize("groups", [1, 128])
def test_resnet_sized_convolution_on_cuda(groups: int, tmp_path: Path) -> None:
    if INTERPRET:
        pytest.skip("TRITON_INTERPRET=1 in this process: the kernel would not be compiled")
    fn, types, shapes = conv(8, 128, 128, (28, 28), (3, 3), padding=(1, 1), groups=groups, dtype=DType.F16)
    body, kernel = build("conv", fn, types)
    check(generate_template(kernel, "large"), body, kernel, shapes, tmp_path)
