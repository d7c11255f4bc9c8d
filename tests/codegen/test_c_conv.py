"""The im2col convolution of the C backend [Note: C im2col convolution] (codegen/c_conv.py)
agrees with torch: strided, padded, dilated, grouped and 1x1 strided convolutions with a
bias + relu epilogue, the weight read as is or prepacked; it allocates nothing and stays
within its scratch bound. So does the depthwise convolution [Note: C depthwise convolution]
(strides, paddings, dilations, 3x3 and 5x5 taps, channel multipliers, a bias + clamp
epilogue)."""

from __future__ import annotations

import ctypes
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from effc.codegen.c_abi import PRELUDE, c_name, symbol_order
from effc.codegen.c_conv import conv_function, conv_scratch, depthwise_conv_function
from effc.codegen.c_im2col import im2col_conv_function, im2col_prepack, im2col_scratch_bytes
from effc.ir import DType, GraphBuilder, Op, TensorType
from effc.ir.kernel import Kernel
from effc.ir.kernel_lower import lower
from effc.ir.kernel_node import add_kernel

from tests.codegen.strict_build import build_strict

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")

CANARY = 256
_ALLOC = re.compile(r"\b(malloc|calloc|realloc|aligned_alloc|posix_memalign|free)\s*\(")


def f32(*shape: int) -> TensorType:
    return TensorType(DType.F32, shape)  # type: ignore[arg-type]


class ConvCase:
    def __init__(self, name: str, n: int, cin: int, cout: int, hw: tuple[int, int], k: tuple[int, int],
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                 dilation: tuple[int, int] = (1, 1), groups: int = 1, const: bool = False,
                 clamp: tuple[float, float] | None = None) -> None:
        self.attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        self.shapes = [(n, cin, *hw), (cout, cin // groups, *k), (cout,)]
        self.clamp = clamp
        types = [f32(*s) for s in self.shapes]
        b = GraphBuilder()
        x, w, c = (b.input(f"a{i}", t) for i, t in enumerate(types))
        conv = b.op(Op.CONVOLUTION, [x, w, c], transposed=False, output_padding=(0, 0), **self.attrs)
        act = (b.op(Op.RELU, [conv]) if clamp is None else
               b.op(Op.CLAMP, [conv], min=clamp[0], max=clamp[1]))
        body = b.build([act])
        outer = GraphBuilder()
        node = add_kernel(outer, "conv", name, [outer.input(f"x{i}", t) for i, t in enumerate(types)], body)
        self.kernel: Kernel = lower(node)
        self.const = frozenset({1, 2}) if const else frozenset()

    def source(self) -> str:
        from effc.codegen.c import emit_statements
        k = self.kernel
        src = im2col_conv_function(k, symbol_order([]), lambda axes, ind: emit_statements(k, k.body, axes, ind),
                                   constant_inputs=self.const)
        assert src is not None, f"{k} has no im2col form"
        return src

    def want(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.conv2d(x, w, bias, **self.attrs)  # type: ignore[arg-type]
        return torch.relu(y) if self.clamp is None else y.clamp(*self.clamp)

    def scratch(self) -> int:
        return int(im2col_scratch_bytes(self.kernel, self.const))  # type: ignore[arg-type]


class DepthwiseCase(ConvCase):
    """A depthwise convolution (groups == input channels, ``mult`` output channels each) with a
    bias + clamp (relu6-like) epilogue, through ``conv_function``."""

    def __init__(self, name: str, n: int, c: int, hw: tuple[int, int], k: tuple[int, int], mult: int = 1,
                 **kw: Any) -> None:
        super().__init__(name, n, c, c * mult, hw, k, groups=c, clamp=(-0.5, 1.5), **kw)

    def source(self) -> str:
        from effc.codegen.c import emit_statements
        k = self.kernel
        src = conv_function(k, symbol_order([]), lambda axes, ind: emit_statements(k, k.body, axes, ind))
        assert src is not None and depthwise_conv_function(k, [], lambda a, i: "") is not None, \
            f"{k} has no depthwise form"
        return src

    def scratch(self) -> int:
        return int(conv_scratch(self.kernel))  # type: ignore[arg-type]


def run(cases: list[ConvCase], tmp: Path) -> str:
    src = PRELUDE + "\n".join(c.source() for c in cases)
    lib = build_strict(src, tmp)
    gen = torch.Generator().manual_seed(0)
    for c in cases:
        x, w, bias = (torch.randn(s, generator=gen) for s in c.shapes)
        want = c.want(x, w, bias)
        got = torch.full_like(want, float("nan"))
        need = c.scratch()
        raw = torch.full((need + CANARY + 64,), 0xAB, dtype=torch.uint8)
        shift = (-raw.data_ptr()) % 64
        scratch = raw[shift:shift + need + CANARY]
        args = [x, w, bias]
        packs = im2col_prepack(c.kernel, c.const) if c.const else {}
        assert set(packs) == ({1} if c.const else set())
        for pos, pack in packs.items():
            args[pos] = pack(args[pos])
        getattr(lib, c_name(c.kernel.name))(*[ctypes.c_void_p(t.data_ptr()) for t in args + [got]],
                                            (ctypes.c_int64 * 1)(0), ctypes.c_void_p(scratch.data_ptr()))
        assert (scratch[need:] == 0xAB).all(), f"{c.kernel.name} wrote past its {need} scratch bytes"
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale, msg=lambda m: f"{c.kernel}\n{m}")
    assert not _ALLOC.search(src) and "stdlib.h" not in src
    return src


def test_im2col_convolutions_match_torch(tmp_path: Path) -> None:
    cases = [
        ConvCase("c3", 2, 5, 7, (8, 9), (3, 3), padding=(1, 1)),
        ConvCase("c3s2", 1, 16, 24, (15, 14), (3, 3), stride=(2, 2), padding=(1, 1)),
        ConvCase("pw2", 1, 24, 40, (13, 13), (1, 1), stride=(2, 2)),
        ConvCase("pwpad", 1, 8, 12, (5, 6), (1, 1), padding=(1, 2)),
        ConvCase("dil", 1, 3, 8, (12, 10), (3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 3)),
        ConvCase("stem", 1, 3, 16, (23, 23), (7, 7), stride=(2, 2), padding=(3, 3)),
        ConvCase("grp", 2, 8, 12, (7, 9), (3, 3), stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2),
        ConvCase("wide", 1, 9, 70, (40, 37), (3, 3), padding=(1, 1)),   # several pixel tiles, channel blocks
        ConvCase("deepk", 1, 130, 13, (6, 6), (3, 3), padding=(1, 1)),  # K over several KC blocks
        ConvCase("one", 1, 4, 5, (1, 1), (3, 3), padding=(1, 1)),        # one pixel, mostly padding
        ConvCase("c3const", 2, 5, 7, (8, 9), (3, 3), padding=(1, 1), const=True),
        ConvCase("grpconst", 1, 12, 18, (9, 8), (3, 3), stride=(2, 2), padding=(1, 1), groups=3, const=True),
        ConvCase("deepconst", 1, 130, 29, (5, 7), (3, 3), padding=(1, 1), const=True),
    ]
    src = run(cases, tmp_path)
    assert "effc_gemm_ukr_" in src


def test_im2col_declines_depthwise_and_transposed_kernels() -> None:
    dw = ConvCase("dw", 1, 6, 6, (9, 9), (3, 3), padding=(1, 1), groups=6)
    assert im2col_conv_function(dw.kernel, [], lambda a, i: "") is None
    assert im2col_scratch_bytes(dw.kernel) is None and im2col_prepack(dw.kernel, {1}) == {}


def test_scratch_bound_covers_every_thread_and_shrinks_when_prepacked() -> None:
    c = ConvCase("b", 1, 64, 64, (56, 56), (3, 3), padding=(1, 1))
    full, packed = im2col_scratch_bytes(c.kernel), im2col_scratch_bytes(c.kernel, {1, 2})
    assert full is not None and packed is not None
    assert int(packed) < int(full) and int(full) % 64 == 0
    assert int(im2col_scratch_bytes(c.kernel, threads=4)) == 2 * int(im2col_scratch_bytes(c.kernel, threads=2))


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 2), st.integers(1, 9), st.integers(4, 20), st.sampled_from([1, 2]),
       st.integers(1, 3), st.integers(1, 2), st.integers(0, 2), st.integers(1, 2), st.integers(3, 13),
       st.booleans())
def test_random_im2col_convolutions_match_torch(tmp_path_factory: pytest.TempPathFactory, n: int, cin_g: int,
                                                cout_g: int, groups: int, kh: int, s: int, p: int, d: int,
                                                size: int, const: bool) -> None:
    kw = kh + 1 if kh < 3 else kh
    p = min(p, kh // 2 + 1)
    if size + 2 * p < d * (kh - 1) + 1:
        size = d * (kh - 1) + 1
    case = ConvCase("h", n, cin_g * groups, cout_g * groups, (size, size + 2), (kh, kw), stride=(s, 1),
                    padding=(p, p), dilation=(d, 1), groups=groups, const=const)
    run([case], tmp_path_factory.mktemp("c"))


def test_depthwise_convolutions_match_torch(tmp_path: Path) -> None:
    cases = [
        DepthwiseCase("dw1", 2, 6, (9, 11), (3, 3), padding=(1, 1)),
        DepthwiseCase("dw2", 1, 8, (15, 14), (3, 3), stride=(2, 2), padding=(1, 1)),     # MobileNet's s2
        DepthwiseCase("dw0", 1, 5, (7, 8), (3, 3)),                                      # no padding
        DepthwiseCase("dw5", 1, 4, (12, 13), (5, 5), stride=(2, 2), padding=(2, 2)),
        DepthwiseCase("dwdil", 1, 3, (12, 10), (3, 5), stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
        DepthwiseCase("dwm2", 1, 4, (9, 9), (3, 3), mult=2, padding=(1, 1)),
        DepthwiseCase("dwtiny", 1, 3, (1, 1), (3, 3), padding=(1, 1)),                   # every tap but one padded
        DepthwiseCase("dwnarrow", 1, 3, (6, 2), (3, 3), stride=(2, 1), padding=(2, 2)),  # no interior column
    ]
    src = run(cases, tmp_path)
    assert src.count("#pragma omp simd") >= 3 * len(cases)


def test_depthwise_form_declines_grouped_and_keeps_row_scratch() -> None:
    grp = ConvCase("g", 1, 8, 8, (9, 9), (3, 3), padding=(1, 1), groups=4)
    assert depthwise_conv_function(grp.kernel, [], lambda a, i: "") is None
    dw = DepthwiseCase("dwb", 1, 96, (112, 112), (3, 3), stride=(2, 2), padding=(1, 1))
    need = conv_scratch(dw.kernel, threads=2)
    assert need is not None and int(need) == 2 * 256  # one 56-float row per thread


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 2), st.integers(1, 6), st.sampled_from([1, 2]), st.sampled_from([3, 5]),
       st.sampled_from([3, 5]), st.integers(1, 2), st.integers(1, 2), st.integers(0, 2), st.integers(1, 2),
       st.integers(1, 40), st.integers(1, 12))
def test_random_depthwise_convolutions_match_torch(tmp_path_factory: pytest.TempPathFactory, n: int, c: int,
                                                   mult: int, kh: int, kw: int, sh: int, sw: int, p: int,
                                                   d: int, width: int, height: int) -> None:
    height = max(height, d * (kh - 1) + 1 - 2 * p)
    width = max(width, d * (kw - 1) + 1 - 2 * p)
    case = DepthwiseCase("r", n, c, (height, width), (kh, kw), mult=mult, stride=(sh, sw), padding=(p, p),
                         dilation=(d, d))
    run([case], tmp_path_factory.mktemp("d"))
