"""The Triton pooling kernels [Note: Triton pooling] (codegen/triton_pool.py) agree with the
reference backend under the tolerance policy: max pool (padding, dilation, ceil_mode, windows
of -inf, NaN and +inf, ties and signed zeros: bit for bit in f32), avg pool (count_include_pad
both ways, divisor_override, ceil_mode), adaptive avg pool (non-divisible and upsampling sizes,
the 1x1 global pool as a reduction), f32/f16/bf16/f64, static and symbolic sizes, windows too
large to unroll, several programs with masked tails; the rest is declined with a reason.
Kernels run under TRITON_INTERPRET=1 on the CPU (tests/codegen/triton_run.py sets it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.codegen.triton_run import DEVICE, build, load  # sets TRITON_INTERPRET first

from effc.backends.reference.program import ReferenceProgram
from effc.codegen.triton import generate
from effc.codegen.triton_abi import TritonConfig, size_symbols
from effc.ir import DType, Op, TensorType, size_symbol
from effc.ir.kernel import LoweringError
from effc.tolerance import assert_equivalent

from tests.strategies import examples

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # numpy on NaN and inf inputs

F32, F16, BF16, F64 = DType.F32, DType.F16, DType.BF16, DType.F64


class Case:
    """One op kernel holding a single pool node over an input of ``shape``; ``sym`` makes the
    listed input dims (by position) size symbols ``s<pos>``."""

    def __init__(self, op: Op, shape: tuple[int, ...], dtype: DType = F32, sym: tuple[int, ...] = (),
                 fill: str = "randn", config: TritonConfig | None = None, **attrs: Any) -> None:
        self.op, self.shape, self.dtype, self.fill, self.config = op, shape, dtype, fill, config
        self.syms = {pos: size_symbol(f"s{pos}") for pos in sym}
        dims = tuple(self.syms.get(i, d) for i, d in enumerate(shape))
        fn = lambda b, x: [b.op(op, [x], **attrs)]  # noqa: E731
        self.body, self.kernel = build("op", fn, [TensorType(dtype, dims)])  # type: ignore[arg-type]
        self.env = {s: shape[pos] for pos, s in self.syms.items()}

    def input(self, gen: torch.Generator) -> torch.Tensor:
        x = torch.randn(self.shape, generator=gen, dtype=torch.float64)
        if self.fill == "special":  # -inf everywhere in some windows, NaN and +inf sprinkled
            u = torch.rand(self.shape, generator=gen, dtype=torch.float64)
            x[u < 0.3] = float("-inf")
            x[(u > 0.3) & (u < 0.38)] = float("nan")
            x[(u > 0.38) & (u < 0.42)] = float("inf")
            x[..., :2, :] = float("-inf")
        elif self.fill == "ties":  # signed zeros and repeated values: ties keep the first
            x = torch.randint(-2, 3, self.shape, generator=gen).double() * 0.0
            x = torch.where(torch.rand(self.shape, generator=gen) < 0.5, -x, x)
        return x.to(self.dtype.to_torch())

    def run(self, directory: Path, seed: int = 0) -> str:
        src = generate(self.kernel, self.kernel.name, self.config)
        x = self.input(torch.Generator().manual_seed(seed))
        eager = ReferenceProgram(self.body)(x)
        ref = ReferenceProgram(self.body, upcast=True)(x)
        got = torch.full(eager[0].shape, float("nan"), dtype=eager[0].dtype, device=DEVICE)
        load(src, directory)([x.to(DEVICE)], [got], [self.env[s] for s in size_symbols(self.kernel)])
        got = got.cpu()
        assert_equivalent([got], eager, ref, f"{self.kernel}\n{src.source}")
        if self.op is Op.MAX_POOL:  # a max is exact: the same values, NaNs and signs as eager
            torch.testing.assert_close(got, eager[0], rtol=0, atol=0, equal_nan=True,
                                       msg=lambda m: f"{self.kernel}\n{m}")
            assert torch.equal(torch.signbit(got), torch.signbit(eager[0])), self.kernel
        return src.source


def mp(shape: tuple[int, ...], k: tuple[int, int], s: tuple[int, int] | None = None, p: tuple[int, int] = (0, 0),
       d: tuple[int, int] = (1, 1), ceil: bool = False, **kw: Any) -> Case:
    return Case(Op.MAX_POOL, shape, kernel=k, stride=s or k, padding=p, dilation=d, ceil_mode=ceil, **kw)


def ap(shape: tuple[int, ...], k: tuple[int, int], s: tuple[int, int] | None = None, p: tuple[int, int] = (0, 0),
       ceil: bool = False, include: bool = True, div: int | None = None, **kw: Any) -> Case:
    return Case(Op.AVG_POOL, shape, kernel=k, stride=s or k, padding=p, ceil_mode=ceil,
                count_include_pad=include, divisor_override=div, **kw)


def aap(shape: tuple[int, ...], out: tuple[int, int], **kw: Any) -> Case:
    return Case(Op.ADAPTIVE_AVG_POOL, shape, output_size=out, **kw)


MAX_POOLS = {
    "resnet_stem": mp((2, 8, 17, 16), (3, 3), (2, 2), (1, 1)),
    "2x2": mp((1, 3, 8, 9), (2, 2)),
    "dilated": mp((1, 4, 13, 15), (3, 2), (1, 2), (1, 1), (2, 3)),
    "ceil": mp((2, 3, 10, 11), (3, 3), (2, 2), (1, 0), ceil=True),
    "ceil_cut": mp((1, 2, 5, 5), (2, 2), (2, 2), (1, 1), ceil=True),    # a last window dropped
    "tiny": mp((1, 2, 1, 1), (3, 3), (1, 1), (1, 1)),                  # padding all round
    "special": mp((2, 5, 12, 13), (3, 3), (2, 2), (1, 1), fill="special"),
    "ties": mp((1, 4, 9, 9), (3, 3), (1, 1), (1, 1), fill="ties"),
    "f16": mp((2, 3, 11, 10), (3, 3), (2, 2), (1, 1), dtype=F16, fill="special"),
    "bf16": mp((1, 3, 9, 9), (2, 3), (2, 1), (1, 1), dtype=BF16),
    "f64": mp((1, 3, 9, 10), (3, 2), (2, 1), (1, 1), (1, 2), dtype=F64, fill="special"),
    "big_window": mp((1, 2, 12, 11), (9, 9), (3, 2), (4, 4)),          # 81 taps: a range loop
    "unbatched": mp((3, 10, 9), (3, 3), (2, 2), (1, 1)),
    "sym_batch": mp((3, 4, 10, 9), (3, 3), (2, 2), (1, 1), sym=(0,)),
    "sym_all": mp((2, 3, 14, 15), (3, 3), (2, 2), (1, 1), sym=(0, 2, 3)),
    "sym_dilated": mp((1, 3, 11, 12), (2, 3), (1, 2), (1, 1), (2, 2), sym=(2, 3), fill="special"),
    "blocks": mp((2, 3, 13, 14), (3, 3), (1, 1), (1, 1), config=TritonConfig(64, num_warps=1)),
}


@pytest.mark.parametrize("case", MAX_POOLS.values(), ids=MAX_POOLS.keys())
def test_max_pool(case: Case, tmp_path: Path) -> None:
    src = case.run(tmp_path)
    taps = case.kernel.template.node.attrs["kernel"]  # type: ignore[union-attr]
    assert ("tl.static_range" in src) == (taps[0] * taps[1] <= 64)


AVG_POOLS = {
    "2x2": ap((2, 4, 8, 10), (2, 2)),
    "pad_incl": ap((1, 3, 9, 11), (3, 3), (2, 2), (1, 1)),
    "pad_excl": ap((1, 3, 9, 11), (3, 3), (2, 2), (1, 1), include=False),
    "divisor": ap((2, 3, 7, 8), (3, 2), (1, 2), (1, 1), div=5),
    "neg_divisor": ap((1, 2, 6, 6), (2, 2), div=-3),
    "ceil_incl": ap((1, 2, 10, 9), (3, 3), (2, 2), (1, 1), ceil=True),
    "ceil_excl": ap((1, 2, 10, 9), (3, 3), (2, 2), (0, 1), ceil=True, include=False),
    "ceil_cut": ap((1, 2, 5, 5), (2, 2), (2, 2), (1, 1), ceil=True),
    "ceil_nopad": ap((1, 2, 7, 8), (3, 3), (2, 2), ceil=True),          # the last window hangs off
    "tiny_excl": ap((1, 2, 1, 2), (3, 3), (1, 1), (1, 1), include=False),
    "f16": ap((2, 4, 12, 12), (3, 3), (2, 2), (1, 1), dtype=F16),
    "bf16": ap((1, 3, 8, 8), (2, 2), dtype=BF16),
    "f64": ap((1, 3, 9, 10), (3, 2), (2, 1), (1, 1), include=False, dtype=F64),
    "big_window": ap((1, 2, 14, 14), (14, 14)),                         # 196 taps: a range loop
    "sym_excl": ap((2, 3, 12, 13), (3, 3), (2, 2), (1, 1), include=False, sym=(0, 2, 3)),
    "sym_div": ap((1, 3, 12, 13), (2, 2), (2, 2), div=3, sym=(2, 3)),
    "inf": ap((1, 2, 8, 8), (2, 2), fill="special"),
}


@pytest.mark.parametrize("case", AVG_POOLS.values(), ids=AVG_POOLS.keys())
def test_avg_pool(case: Case, tmp_path: Path) -> None:
    case.run(tmp_path)


ADAPTIVE = {
    "global": aap((2, 16, 7, 7), (1, 1)),
    "global_f16": aap((2, 8, 9, 9), (1, 1), dtype=F16),
    "global_f64": aap((1, 3, 33, 65), (1, 1), dtype=F64),
    "global_sym": aap((3, 4, 9, 6), (1, 1), sym=(0, 2, 3)),
    "global_of_1x1": aap((2, 3, 1, 1), (1, 1), sym=(2, 3)),           # H*W = 1 arrives as an int 1
    "global_looped": aap((2, 5, 11, 13), (1, 1), config=TritonConfig(4, 16, 1)),   # H*W in 9 steps
    "global_nan": aap((2, 4, 5, 5), (1, 1), fill="special"),
    "divisible": aap((2, 3, 8, 12), (4, 3)),
    "non_divisible": aap((1, 3, 10, 11), (3, 4)),
    "upsample": aap((1, 2, 3, 5), (7, 6)),                             # more outputs than inputs
    "mixed_f64": aap((1, 2, 9, 12), (4, 4), dtype=F64),
    "f16": aap((2, 3, 10, 7), (3, 2), dtype=F16),
    "big_window": aap((1, 2, 20, 20), (2, 2)),                         # 100 taps: a range loop
    "sym": aap((2, 3, 13, 10), (5, 3), sym=(0, 2, 3)),
    "sym_batch": aap((3, 4, 7, 9), (2, 4), sym=(0,)),
}


@pytest.mark.parametrize("case", ADAPTIVE.values(), ids=ADAPTIVE.keys())
def test_adaptive_avg_pool(case: Case, tmp_path: Path) -> None:
    src = case.run(tmp_path)
    global_pool = tuple(case.kernel.template.node.attrs["output_size"]) == (1, 1)  # type: ignore[union-attr]
    assert ("tl.sum(acc, 1)" in src) == global_pool


def test_declines_what_it_does_not_cover() -> None:
    declined = [
        mp((1, 2, 4, 4), (2, 2), dtype=DType.I32),
        Case(Op.MAX_POOL, (1, 2, 8), kernel=(2,), stride=(2,), padding=(0,), dilation=(1,), ceil_mode=False),
        Case(Op.MAX_POOL, (1, 1, 4, 4, 4), kernel=(2, 2, 2), stride=(2, 2, 2), padding=(0, 0, 0),
             dilation=(1, 1, 1), ceil_mode=False),
        Case(Op.ADAPTIVE_MAX_POOL, (1, 2, 6, 6), output_size=(2, 2)),
        Case(Op.ADAPTIVE_AVG_POOL, (1, 2, 6, 6, 6), output_size=(2, 2, 2)),
    ]
    for case in declined:
        with pytest.raises(LoweringError, match=r"\w"):
            generate(case.kernel, case.kernel.name)


@examples(6)
@given(st.sampled_from(["max", "avg", "adaptive"]), st.integers(1, 2), st.integers(1, 3),
       st.integers(1, 12), st.integers(1, 12), st.integers(1, 4), st.integers(1, 4),
       st.integers(1, 3), st.integers(1, 3), st.integers(0, 2), st.integers(0, 2),
       st.integers(1, 2), st.integers(1, 2), st.booleans(), st.booleans(), st.booleans())
def test_random_pools(tmp_path_factory: pytest.TempPathFactory, kind: str, n: int, c: int, h: int, w: int,
                      kh: int, kw: int, sh: int, sw: int, ph: int, pw: int, dh: int, dw: int,
                      ceil: bool, flag: bool, sym: bool) -> None:
    ph, pw = min(ph, kh // 2), min(pw, kw // 2)  # torch: padding at most half the kernel
    dims = (0, 2, 3) if sym else ()
    if kind == "adaptive":
        case = aap((n, c, h, w), (kh + sh - 1, kw + sw - 1), sym=dims)
    else:
        d = (dh, dw) if kind == "max" else (1, 1)
        h = max(h, d[0] * (kh - 1) + 1 - 2 * ph)
        w = max(w, d[1] * (kw - 1) + 1 - 2 * pw)
        ceil = ceil and not sym  # the symbolic shape rule omits torch's last-window correction
        if kind == "max":
            case = mp((n, c, h, w), (kh, kw), (sh, sw), (ph, pw), d, ceil, sym=dims,
                      fill="special" if flag else "randn")
        else:
            case = ap((n, c, h, w), (kh, kw), (sh, sw), (ph, pw), ceil, include=flag,
                      div=3 if (not flag and ceil) else None, sym=dims)
    case.run(tmp_path_factory.mktemp("p"))
