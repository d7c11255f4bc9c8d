"""The C pooling functions [Note: C pooling] (codegen/c_pool.py) agree with torch: max pool
(padding, dilation, ceil_mode, -inf and NaN inputs: bit for bit), avg pool (count_include_pad
both ways, divisor_override, ceil_mode), adaptive avg pool (1x1, divisible and non-divisible
sizes), f32 and f64, static and symbolic sizes; they allocate nothing and decline the rest."""

from __future__ import annotations

import ctypes
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from effc.codegen.c_abi import PRELUDE, c_name, symbol_order
from effc.codegen.c_pool import pool_function
from effc.ir import DType, GraphBuilder, Op, TensorType
from effc.ir.kernel import Kernel
from effc.ir.kernel_lower import lower
from effc.ir.kernel_node import add_kernel, extract_body
from effc.ir.types import size_symbol

from tests.codegen.strict_build import build_strict

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")

_ALLOC = re.compile(r"\b(malloc|calloc|realloc|aligned_alloc|posix_memalign|free)\s*\(")
_TORCH_DT = {DType.F32: torch.float32, DType.F64: torch.float64}


class Case:
    """One op kernel holding a single pool node over an input of ``shape``; ``sym`` makes
    the listed input dims (by position) size symbols ``s<pos>``."""

    def __init__(self, name: str, op: Op, shape: tuple[int, ...], dtype: DType = DType.F32,
                 sym: tuple[int, ...] = (), fill: str = "randn", **attrs: Any) -> None:
        self.name, self.op, self.shape, self.dtype, self.attrs, self.fill = name, op, shape, dtype, attrs, fill
        self.syms = {pos: size_symbol(f"s{pos}") for pos in sym}
        dims = tuple(self.syms.get(i, d) for i, d in enumerate(shape))
        b = GraphBuilder()
        x = b.input("x", TensorType(dtype, dims))  # type: ignore[arg-type]
        y = b.op(op, [x], **attrs)
        body, outer_vals = extract_body(b.nodes, [y])
        outer = GraphBuilder()
        node = add_kernel(outer, "op", name, [outer.input(v.name or "x", v.type) for v in outer_vals], body)
        self.kernel: Kernel = lower(node)
        self.symbols = symbol_order(self.syms.values())

    def source(self) -> str:
        src = pool_function(self.kernel, self.symbols)
        assert src is not None, f"{self.kernel} has no C pool function"
        return src

    def want(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attrs
        if self.op is Op.MAX_POOL:
            return F.max_pool2d(x, a["kernel"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])
        if self.op is Op.AVG_POOL:
            return F.avg_pool2d(x, a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                                a["count_include_pad"], a["divisor_override"])
        return F.adaptive_avg_pool2d(x, a["output_size"])

    def input(self, gen: torch.Generator) -> torch.Tensor:
        x = torch.randn(self.shape, generator=gen, dtype=_TORCH_DT[self.dtype])
        if self.fill == "special":  # -inf everywhere in some windows, NaN and +inf sprinkled
            u = torch.rand(self.shape, generator=gen)
            x[u < 0.3] = float("-inf")
            x[(u > 0.3) & (u < 0.38)] = float("nan")
            x[(u > 0.38) & (u < 0.42)] = float("inf")
            x[..., :2, :] = float("-inf")
        elif self.fill == "ties":  # signed zeros and repeated values: ties keep the first
            x = torch.randint(-2, 3, self.shape, generator=gen).to(_TORCH_DT[self.dtype]) * 0.0
            x = torch.where(torch.rand(self.shape, generator=gen) < 0.5, -x, x)
        return x


def run(cases: list[Case], tmp: Path) -> str:
    src = PRELUDE + "\n".join(c.source() for c in cases)
    lib = build_strict(src, tmp)
    gen = torch.Generator().manual_seed(0)
    for c in cases:
        x = c.input(gen)
        want = c.want(x)
        got = torch.full_like(want, 12345.0)
        order = c.symbols
        sizes = (ctypes.c_int64 * max(1, len(order)))(*[c.shape[int(s.name[1:])] for s in order])
        getattr(lib, c_name(c.kernel.name))(ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(got.data_ptr()),
                                            sizes, ctypes.c_void_p(None))
        msg = lambda m, c=c: f"{c.kernel}\n{m}"  # noqa: E731
        if c.op is Op.MAX_POOL:  # exact, NaN in the same places
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True, msg=msg)
            assert torch.equal(torch.signbit(got), torch.signbit(want)), c.kernel
        else:
            torch.testing.assert_close(got, want, equal_nan=True, msg=msg)
    assert not _ALLOC.search(src) and "stdlib.h" not in src
    return src


def mp(name: str, shape: tuple[int, ...], k: tuple[int, int], s: tuple[int, int] | None = None,
       p: tuple[int, int] = (0, 0), d: tuple[int, int] = (1, 1), ceil: bool = False, **kw: Any) -> Case:
    return Case(name, Op.MAX_POOL, shape, kernel=k, stride=s or k, padding=p, dilation=d, ceil_mode=ceil, **kw)


def ap(name: str, shape: tuple[int, ...], k: tuple[int, int], s: tuple[int, int] | None = None,
       p: tuple[int, int] = (0, 0), ceil: bool = False, include: bool = True, div: int | None = None,
       **kw: Any) -> Case:
    return Case(name, Op.AVG_POOL, shape, kernel=k, stride=s or k, padding=p, ceil_mode=ceil,
                count_include_pad=include, divisor_override=div, **kw)


def aap(name: str, shape: tuple[int, ...], out: tuple[int, int], **kw: Any) -> Case:
    return Case(name, Op.ADAPTIVE_AVG_POOL, shape, output_size=out, **kw)


def test_max_pools_match_torch_exactly(tmp_path: Path) -> None:
    cases = [
        mp("m_resnet", (2, 8, 17, 16), (3, 3), (2, 2), (1, 1)),            # ResNet stem pool
        mp("m_2x2", (1, 3, 8, 9), (2, 2)),
        mp("m_dil", (1, 4, 13, 15), (3, 2), (1, 2), (1, 1), (2, 3)),
        mp("m_ceil", (2, 3, 10, 11), (3, 3), (2, 2), (1, 0), ceil=True),
        mp("m_ceil_cut", (1, 2, 5, 5), (2, 2), (2, 2), (1, 1), ceil=True),  # a last window dropped
        mp("m_tiny", (1, 2, 1, 1), (3, 3), (1, 1), (1, 1)),                # padding all round
        mp("m_special", (2, 5, 12, 13), (3, 3), (2, 2), (1, 1), fill="special"),
        mp("m_ties", (1, 4, 9, 9), (3, 3), (1, 1), (1, 1), fill="ties"),
        mp("m_f64", (1, 3, 9, 10), (3, 2), (2, 1), (1, 1), (1, 2), dtype=DType.F64, fill="special"),
        mp("m_wide", (1, 2, 6, 300), (3, 3), (1, 1), (1, 1)),              # a long simd interior
        mp("m_sym", (2, 3, 14, 15), (3, 3), (2, 2), (1, 1), sym=(0, 2, 3)),
        mp("m_sym_dil", (1, 3, 11, 12), (2, 3), (1, 2), (1, 1), (2, 2), sym=(2, 3), fill="special"),
    ]
    src = run(cases, tmp_path)
    assert src.count("#pragma omp simd") >= len(cases)
    assert src.count("collapse(3)") == len(cases)


def test_avg_pools_match_torch(tmp_path: Path) -> None:
    cases = [
        ap("a_2x2", (2, 4, 8, 10), (2, 2)),
        ap("a_pad_incl", (1, 3, 9, 11), (3, 3), (2, 2), (1, 1)),
        ap("a_pad_excl", (1, 3, 9, 11), (3, 3), (2, 2), (1, 1), include=False),
        ap("a_div", (2, 3, 7, 8), (3, 2), (1, 2), (1, 1), div=5),
        ap("a_ceil_incl", (1, 2, 10, 9), (3, 3), (2, 2), (1, 1), ceil=True),
        ap("a_ceil_excl", (1, 2, 10, 9), (3, 3), (2, 2), (0, 1), ceil=True, include=False),
        ap("a_ceil_cut", (1, 2, 5, 5), (2, 2), (2, 2), (1, 1), ceil=True),
        ap("a_ceil_nopad", (1, 2, 7, 8), (3, 3), (2, 2), ceil=True),        # the last window hangs off
        ap("a_f64", (1, 3, 9, 10), (3, 2), (2, 1), (1, 1), include=False, dtype=DType.F64),
        ap("a_tiny", (1, 2, 1, 2), (3, 3), (1, 1), (1, 1), include=False),
        ap("a_sym", (2, 3, 12, 13), (3, 3), (2, 2), (1, 1), include=False, sym=(0, 2, 3)),
        ap("a_sym_div", (1, 3, 12, 13), (2, 2), (2, 2), div=3, sym=(2, 3)),
        ap("a_inf", (1, 2, 8, 8), (2, 2), fill="special"),
    ]
    src = run(cases, tmp_path)
    assert src.count("#pragma omp simd") >= len(cases)


def test_adaptive_avg_pools_match_torch(tmp_path: Path) -> None:
    cases = [
        aap("g_1x1", (2, 16, 7, 7), (1, 1)),                      # global average pool
        aap("g_1x1_big", (1, 3, 33, 65), (1, 1), dtype=DType.F64),
        aap("g_div", (2, 3, 8, 12), (4, 3)),
        aap("g_nondiv", (1, 3, 10, 11), (3, 4)),
        aap("g_up", (1, 2, 3, 5), (7, 6)),                        # more outputs than inputs
        aap("g_mixed", (1, 2, 9, 12), (4, 4), dtype=DType.F64),   # rows uneven, columns even
        aap("g_sym", (2, 3, 13, 10), (5, 3), sym=(0, 2, 3)),
        aap("g_sym1", (1, 4, 9, 6), (1, 1), sym=(2, 3)),
    ]
    run(cases, tmp_path)


def test_adaptive_matches_torch_bit_for_bit_off_the_mean_path(tmp_path: Path) -> None:
    cases = [aap("e_nondiv", (1, 3, 10, 11), (3, 4)), aap("e_div", (2, 3, 8, 12), (4, 3)),
             ap("e_excl", (1, 3, 9, 11), (3, 3), (2, 2), (1, 1), include=False, ceil=True)]
    lib = build_strict(PRELUDE + "\n".join(c.source() for c in cases), tmp_path)
    gen = torch.Generator().manual_seed(1)
    for c in cases:
        x = c.input(gen)
        want = c.want(x)
        got = torch.empty_like(want)
        getattr(lib, c_name(c.kernel.name))(ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(got.data_ptr()),
                                            (ctypes.c_int64 * 1)(0), ctypes.c_void_p(None))
        assert torch.equal(got, want), c.kernel


def test_declines_what_it_does_not_cover() -> None:
    assert pool_function(mp("i_int", (1, 2, 4, 4), (2, 2), dtype=DType.I32).kernel, []) is None
    assert pool_function(mp("h_f16", (1, 2, 4, 4), (2, 2), dtype=DType.F16).kernel, []) is None
    assert pool_function(Case("m1d", Op.MAX_POOL, (1, 2, 8), kernel=(2,), stride=(2,), padding=(0,),
                              dilation=(1,), ceil_mode=False).kernel, []) is None
    assert pool_function(Case("m3d", Op.MAX_POOL, (1, 1, 4, 4, 4), kernel=(2, 2, 2), stride=(2, 2, 2),
                              padding=(0, 0, 0), dilation=(1, 1, 1), ceil_mode=False).kernel, []) is None
    assert pool_function(Case("amax", Op.ADAPTIVE_MAX_POOL, (1, 2, 6, 6), output_size=(2, 2)).kernel, []) is None
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (4, 5)))  # type: ignore[arg-type]
    sm = b.op(Op.SOFTMAX, [x], dim=1)
    body, vals = extract_body(b.nodes, [sm])
    outer = GraphBuilder()
    k = lower(add_kernel(outer, "op", "sm", [outer.input("x", v.type) for v in vals], body))
    assert pool_function(k, []) is None


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["max", "avg", "adaptive"]), st.integers(1, 2), st.integers(1, 3),
       st.integers(1, 14), st.integers(1, 14), st.integers(1, 4), st.integers(1, 4),
       st.integers(1, 3), st.integers(1, 3), st.integers(0, 2), st.integers(0, 2),
       st.integers(1, 2), st.integers(1, 2), st.booleans(), st.booleans(), st.booleans())
def test_random_pools_match_torch(tmp_path_factory: pytest.TempPathFactory, kind: str, n: int, c: int,
                                  h: int, w: int, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
                                  dh: int, dw: int, ceil: bool, flag: bool, sym: bool) -> None:
    ph, pw = min(ph, kh // 2), min(pw, kw // 2)  # torch: padding at most half the kernel
    dims = (0, 2, 3) if sym else ()
    if kind == "adaptive":
        case = aap("r", (n, c, h, w), (kh + sh - 1, kw + sw - 1), sym=dims)
    else:
        d = (dh, dw) if kind == "max" else (1, 1)
        h = max(h, d[0] * (kh - 1) + 1 - 2 * ph)
        w = max(w, d[1] * (kw - 1) + 1 - 2 * pw)
        if sym and ceil:  # the symbolic shape rule omits torch's last-window correction
            ceil = False
        if kind == "max":
            case = mp("r", (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), d, ceil, sym=dims,
                      fill="special" if flag else "randn")
        else:
            case = ap("r", (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), ceil, include=flag,
                      div=3 if (not flag and ceil) else None, sym=dims)
    run([case], tmp_path_factory.mktemp("p"))
