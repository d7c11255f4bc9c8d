"""Matmul and convolution templates in C (codegen/c_templates.py) agree with torch: GEMM-form
kernels (matmul, addmm, linear, batched matmul, 1x1 convolutions), row convolutions (strided,
padded, dilated, grouped, depthwise) and the direct fallback, with their epilogues. Many
kernels share one translation unit, so a test calls the compiler once."""

from __future__ import annotations

import ctypes
import random
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from effc.backends.reference.program import ReferenceProgram
from effc.codegen.c_abi import PRELUDE, c_name, symbol_order
from effc.codegen.c_gemm import gemm_plan
from effc.codegen.c_gemm_tiles import gemm_tiles, vector_width
from effc.codegen.c_templates import direct_function, prepack, scratch_bytes, store_acc_epilogue, template_function
from effc.ir import DType, GraphBuilder, Op, TensorType, Value, size_symbol
from effc.ir.kernel import Kernel
from effc.ir.kernel_lower import lower
from effc.ir.kernel_node import add_kernel

from tests.codegen.strict_build import build_strict

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")

S0 = size_symbol("s0")
Body = Callable[..., list[Value]]


def f32(*shape: object) -> TensorType:
    return TensorType(DType.F32, shape)  # type: ignore[arg-type]


class Case:
    """One kernel: its graph body, input shapes, and the sizes its symbols take."""

    def __init__(self, name: str, kind: str, fn: Body, types: list[TensorType], shapes: list[tuple[int, ...]],
                 env: dict[sympy.Symbol, int] | None = None, const: frozenset[int] = frozenset()) -> None:
        b = GraphBuilder()
        outs = fn(b, *[b.input(f"a{i}", t) for i, t in enumerate(types)])
        self.body = b.build(outs)
        outer = GraphBuilder()
        node = add_kernel(outer, kind, name, [outer.input(f"x{i}", t) for i, t in enumerate(types)], self.body)
        self.kernel: Kernel = lower(node)
        self.shapes, self.env = shapes, env or {}
        self.const = const  # input positions generated as compile-time constants (prepacked)


def _epilogue(k: Kernel) -> Callable[[dict[str, str], str], str]:
    try:
        from effc.codegen.c import emit_statements
    except ImportError:  # the kernel generator is not there: store acc only
        return store_acc_epilogue(k)
    return lambda axes, indent: emit_statements(k, k.body, axes, indent)


CANARY = 256  # bytes past the scratch bound that a kernel must leave alone


def scratch_for(kernel: Kernel, env: dict[sympy.Symbol, int], const: frozenset[int] = frozenset()
                ) -> tuple[torch.Tensor, int]:
    """A 64-byte aligned scratch buffer of ``scratch_bytes(kernel, const)`` at ``env``, followed
    by ``CANARY`` bytes of 0xAB; returns it and the bound."""
    need = int(scratch_bytes(kernel, const).xreplace({s: sympy.Integer(v) for s, v in env.items()}))
    raw = torch.full((need + CANARY + 64,), 0xAB, dtype=torch.uint8)
    shift = (-raw.data_ptr()) % 64
    return raw[shift:shift + need + CANARY], need


SOURCES: list[str] = []  # every template source the tests built: none may allocate


def run_cases(cases: list[Case], tmp: Path, source: Callable[[Kernel, list, Callable], str] = template_function,
              rtol: float = 1e-4) -> None:
    symbols = symbol_order([S0])
    src = PRELUDE + "\n".join(source(c.kernel, symbols, _epilogue(c.kernel), **({"constant_inputs": c.const}
                                                                               if c.const else {}))
                              for c in cases)
    SOURCES.append(src)
    lib = build_strict(src, tmp)
    gen = torch.Generator().manual_seed(0)
    for c in cases:
        xs = [torch.randn(s, generator=gen) for s in c.shapes]
        want = ReferenceProgram(c.body)(*xs)
        got = [torch.full_like(w, float("nan")) for w in want]
        sizes = (ctypes.c_int64 * 1)(*[c.env.get(S0, 0)])
        scratch, need = scratch_for(c.kernel, c.env, c.const)
        args = list(xs)
        for pos, pack in prepack(c.kernel, c.const).items():
            args[pos] = _misaligned(pack(xs[pos]))  # the kernel must not assume aligned packed panels
        getattr(lib, c_name(c.kernel.name))(*[ctypes.c_void_p(t.data_ptr()) for t in args + got], sizes,
                                            ctypes.c_void_p(scratch.data_ptr()))
        assert (scratch[need:] == 0xAB).all(), f"{c.kernel.name} wrote past its {need} scratch bytes"
        for g, w in zip(got, want):
            scale = max(1.0, w.abs().max().item())
            torch.testing.assert_close(g, w, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{c.kernel}\n{m}")


def _misaligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` copied to an address 4 bytes past a 64-byte boundary."""
    raw = torch.empty(t.numel() + 32, dtype=t.dtype)
    start = ((-raw.data_ptr()) % 64) // 4 + 1
    out = raw[start:start + t.numel()]
    out.copy_(t.reshape(-1))
    return out


# -- GEMM-form kernels ------------------------------------------------------------------------

def _bias_relu(op: Op, **attrs: object) -> Body:
    return lambda b, x, w, bias: [b.op(Op.RELU, [b.op(op, [bias, x, w] if op is Op.ADDMM else [x, w, bias], **attrs)])]


def gemm_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    dims = [1, 3, 17, 12, 32, 33, 100, 257]
    cases = []
    for i in range(6):
        m, n, k = (rng.choice(dims) for _ in range(3))
        cases.append(Case(f"mm{i}", "matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])],
                          [f32(m, k), f32(k, n)], [(m, k), (k, n)]))
        cases.append(Case(f"addmm{i}", "matmul", _bias_relu(Op.ADDMM, beta=0.5, alpha=2.0),
                          [f32(m, k), f32(k, n), f32(n)], [(m, k), (k, n), (n,)]))
        cases.append(Case(f"lin{i}", "matmul", _bias_relu(Op.LINEAR),
                          [f32(m, k), f32(n, k), f32(n)], [(m, k), (n, k), (n,)]))
        bt = rng.choice([1, 2, 5])
        cases.append(Case(f"bmm{i}", "matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])],
                          [f32(bt, m, k), f32(bt, k, n)], [(bt, m, k), (bt, k, n)]))
        cases.append(Case(f"bcast{i}", "matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])],
                          [f32(2, bt, m, k), f32(bt, k, n)], [(2, bt, m, k), (bt, k, n)]))
        cases.append(Case(f"lin3d{i}", "matmul", lambda b, x, w: [b.op(Op.LINEAR, [x, w])],
                          [f32(bt, m, k), f32(n, k)], [(bt, m, k), (n, k)]))
    # a transposed left operand, vectors, a symbolic row count
    cases.append(Case("ta", "matmul", lambda b, x, w: [b.op(Op.MATMUL, [b.op(Op.PERMUTE, [x], dims=(1, 0)), w])],
                      [f32(19, 23), f32(19, 40)], [(19, 23), (19, 40)]))
    cases.append(Case("vm", "matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [f32(7), f32(7, 5)], [(7,), (7, 5)]))
    cases.append(Case("mv", "matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [f32(6, 7), f32(7)], [(6, 7), (7,)]))
    cases.append(Case("sym", "matmul", _bias_relu(Op.LINEAR), [f32(S0, 40), f32(70, 40), f32(70)],
                      [(37, 40), (70, 40), (70,)], {S0: 37}))
    return cases


def test_matmul_addmm_linear_and_batched_matmul_match_torch(tmp_path: Path) -> None:
    cases = gemm_cases(0)
    assert all(gemm_plan(c.kernel) is not None for c in cases if c.kernel.name not in ("vm", "mv"))
    run_cases(cases, tmp_path)


def test_gemm_blocks_over_k_and_splits_work_past_one_tile(tmp_path: Path) -> None:
    """K beyond one KC block (the C tile accumulates across blocks) and M, N past MC, NC."""
    t = gemm_tiles(600, 700, 1100)
    assert t.kc < 1100 or t.mc < 600 or t.nc < 700
    cases = [Case("big", "matmul", _bias_relu(Op.LINEAR), [f32(600, 1100), f32(700, 1100), f32(700)],
                  [(600, 1100), (700, 1100), (700,)]),
             Case("bigmm", "matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [f32(131, 1500), f32(1500, 90)],
                  [(131, 1500), (1500, 90)])]
    run_cases(cases, tmp_path)


@settings(max_examples=8)
@given(st.integers(1, 70), st.integers(1, 70), st.integers(1, 70), st.booleans(), st.integers(0, 2), st.booleans())
def test_random_matmul_shapes_match_torch(tmp_path_factory: pytest.TempPathFactory, m: int, n: int, k: int,
                                          linear: bool, batch: int, const: bool) -> None:
    lead = (batch + 1,) if batch else ()
    x, w = f32(*lead, m, k), f32(n, k) if linear else f32(*lead, k, n)
    case = Case("h", "matmul", lambda b, x, w: [b.op(Op.LINEAR if linear else Op.MATMUL, [x, w])],
                [x, w], [tuple(x.shape), tuple(w.shape)], const=frozenset({1}) if const else frozenset())  # type: ignore
    run_cases([case], tmp_path_factory.mktemp("h"))


# -- gathered (non-affine) operands ------------------------------------------------------------

def _head_merge(x: Value, b: GraphBuilder, heads: int, seq: object, dim: int, split: bool = True) -> Value:
    """BERT's head merge: ``[heads, seq, dim] -> [seq, heads * dim]`` through views, from a
    ``[heads, seq * dim]`` input (``split``) or a ``[heads, seq, dim]`` one."""
    if split:
        x = b.op(Op.RESHAPE, [x], shape=(heads, seq, dim))
    x = b.op(Op.PERMUTE, [x], dims=(1, 0, 2))
    return b.op(Op.RESHAPE, [x], shape=(seq, heads * dim))


def _noncontig_b(w: Value, b: GraphBuilder, p: int, q: int, n: int) -> Value:
    """``[q, p, n] -> [p, q, n] -> [p * q, n]``: a reshape of a permuted view."""
    return b.op(Op.RESHAPE, [b.op(Op.PERMUTE, [w], dims=(1, 0, 2))], shape=(p * q, n))


def gathered_cases() -> list[Case]:
    """GEMMs whose operands reach the matmul through views folded into floor/Mod indices
    [Note: GEMM gathered operands]: A a head merge, B a reshaped permuted view, both, with an
    epilogue, symbolic rows, K over several KC blocks, a 3-D linear, a constant gathered B."""
    mm = lambda b, x, w: [b.op(Op.MATMUL, [_head_merge(x, b, 3, 13, 7), w])]  # noqa: E731
    both = lambda b, x, w, c: [b.op(Op.RELU, [b.op(Op.ADDMM, [c, _head_merge(x, b, 3, 13, 7),  # noqa: E731
                                                              _noncontig_b(w, b, 3, 7, 45)], beta=0.5, alpha=2.0)])]
    sym = lambda b, x, w: [b.op(Op.MATMUL, [_head_merge(x, b, 4, S0, 5, split=False), w])]  # noqa: E731
    bonly = lambda b, x, w: [b.op(Op.MATMUL, [x, _noncontig_b(w, b, 5, 4, 6)])]  # noqa: E731
    bigk = lambda b, x, w: [b.op(Op.MATMUL, [_head_merge(x, b, 10, 37, 110), w])]  # noqa: E731

    def lin3d(b: GraphBuilder, x: Value, w: Value, c: Value) -> list[Value]:
        a = b.op(Op.RESHAPE, [b.op(Op.PERMUTE, [x], dims=(0, 2, 1, 3))], shape=(2, 11, 24))
        return [b.op(Op.LINEAR, [a, w, c])]
    return [
        Case("ghm", "matmul", mm, [f32(3, 13 * 7), f32(21, 20)], [(3, 91), (21, 20)]),
        Case("gboth", "matmul", both, [f32(3, 13 * 7), f32(7, 3, 45), f32(45)], [(3, 91), (7, 3, 45), (45,)]),
        Case("gsym", "matmul", sym, [f32(4, S0, 5), f32(20, 33)], [(4, 37, 5), (20, 33)], {S0: 37}),
        Case("gb", "matmul", bonly, [f32(9, 20), f32(4, 5, 6)], [(9, 20), (4, 5, 6)]),
        Case("gbconst", "matmul", bonly, [f32(9, 20), f32(4, 5, 6)], [(9, 20), (4, 5, 6)], const=frozenset({1})),
        Case("gbigk", "matmul", bigk, [f32(10, 37 * 110), f32(1100, 50)], [(10, 4070), (1100, 50)]),
        Case("glin3d", "matmul", lin3d, [f32(2, 3, 11, 8), f32(30, 24), f32(30)],
             [(2, 3, 11, 8), (30, 24), (30,)]),
    ]


def test_non_affine_operands_are_gathered_into_the_gemm(tmp_path: Path) -> None:
    """A head-merged A and a reshaped non-contiguous B are gathered into scratch panels and
    run the packed micro-kernel, not the direct loop; results match torch."""
    symbols = symbol_order([S0])
    cases = gathered_cases()
    assert gemm_tiles(37, 50, 1100).kc < 1100  # several K blocks read the gathered panel
    for c in cases:
        plan = gemm_plan(c.kernel)
        assert plan is not None, c.kernel.name
        assert (plan.a_gather is not None) == (c.kernel.name not in ("gb", "gbconst")), c.kernel.name
        assert (plan.b_gather is not None) == (c.kernel.name in ("gb", "gbconst", "gboth")), c.kernel.name
        body = template_function(c.kernel, symbols, _epilogue(c.kernel), constant_inputs=c.const)
        body = body.split(f"void {c_name(c.kernel.name)}(")[-1]
        assert "effc_gemm_ukr_" in body and "acc +=" not in body, c.kernel.name
    gb = next(c for c in cases if c.kernel.name == "gbconst")
    assert prepack(gb.kernel, gb.const) == {}  # a gathered constant is read as it is
    gsym = next(c for c in cases if c.kernel.name == "gsym")
    grows = [int(scratch_bytes(gsym.kernel).subs(S0, v)) for v in (1, 37, 1000)]
    assert grows[0] < grows[1] < grows[2]
    run_cases(cases, tmp_path)


# -- prepacked constant operands ---------------------------------------------------------------

def _pos(kernel: Kernel, which: str) -> int:
    plan = gemm_plan(kernel)
    assert plan is not None
    return [b.name for b in kernel.inputs].index(plan.b if which == "b" else plan.a)


def prepacked_cases() -> list[Case]:
    """GEMMs with a constant operand: linear (the weight read transposed), matmul with a
    constant right (or left) operand, addmm, batched matmuls with a shared or per-batch constant,
    a 1x1 convolution's weight, sizes off the tiles, K over several KC blocks, symbolic M."""
    mm = lambda b, x, w: [b.op(Op.MATMUL, [x, w])]  # noqa: E731
    cases = [
        Case("plin", "matmul", _bias_relu(Op.LINEAR), [f32(37, 45), f32(71, 45), f32(71)],
             [(37, 45), (71, 45), (71,)]),
        Case("pmm", "matmul", mm, [f32(33, 17), f32(17, 100)], [(33, 17), (17, 100)]),
        Case("paddmm", "matmul", _bias_relu(Op.ADDMM, beta=0.5, alpha=2.0), [f32(12, 33), f32(33, 257), f32(257)],
             [(12, 33), (33, 257), (257,)]),
        Case("plin3d", "matmul", lambda b, x, w: [b.op(Op.LINEAR, [x, w])], [f32(3, 5, 19), f32(40, 19)],
             [(3, 5, 19), (40, 19)]),
        Case("pshared", "matmul", mm, [f32(2, 3, 7, 9), f32(9, 35)], [(2, 3, 7, 9), (9, 35)]),
        Case("pbmm", "matmul", mm, [f32(3, 13, 20), f32(3, 20, 33)], [(3, 13, 20), (3, 20, 33)]),
        Case("pbcast", "matmul", mm, [f32(2, 3, 11, 8), f32(3, 8, 21)], [(2, 3, 11, 8), (3, 8, 21)]),
        Case("pbig", "matmul", _bias_relu(Op.LINEAR), [f32(150, 1100), f32(300, 1100), f32(300)],
             [(150, 1100), (300, 1100), (300,)]),
        Case("psym", "matmul", _bias_relu(Op.LINEAR), [f32(S0, 40), f32(70, 40), f32(70)],
             [(37, 40), (70, 40), (70,)], {S0: 37}),
        Case("pleft", "matmul", mm, [f32(29, 31), f32(31, 50)], [(29, 31), (31, 50)]),
        conv_case("ppw", 2, 8, 16, (5, 7), (1, 1), (1, 1), (0, 0), (1, 1), 1),
    ]
    out = []
    for c in cases:
        if c.kernel.name == "pleft":  # the left operand is the constant
            c.const = frozenset({_pos(c.kernel, "a")})
        elif c.kernel.name == "ppw":  # the weight (input 1) is A of the GEMM
            c.const = frozenset({1, 2})
        else:  # the weight, and the bias too (which nothing packs)
            c.const = frozenset(range(1, len(c.kernel.inputs)))
        out.append(c)
    return out


def test_prepacked_constant_operands_match_torch(tmp_path: Path) -> None:
    cases = prepacked_cases()
    for c in cases:
        packs = prepack(c.kernel, c.const)
        which = "a" if c.kernel.name in ("pleft", "ppw") else "b"
        assert set(packs) == {_pos(c.kernel, which)}, c.kernel.name
        env = {s: sympy.Integer(v) for s, v in c.env.items()}
        assert scratch_bytes(c.kernel, c.const).xreplace(env) < scratch_bytes(c.kernel).xreplace(env)
        src = template_function(c.kernel, symbol_order([S0]), _epilogue(c.kernel), constant_inputs=c.const)
        if which == "b":
            assert "effc_gemm_pack_b_" not in src.split(c_name(c.kernel.name))[-1]
        else:
            assert "effc_gemm_pack_a_" not in src.split(c_name(c.kernel.name))[-1]
    big = next(c for c in cases if c.kernel.name == "pbig")
    assert gemm_tiles(150, 300, 1100).kc < 1100  # several K blocks in the packed layout
    run_cases(cases, tmp_path)
    # the same kernels without constants still read their operands as they are
    for c in cases:
        c.const = frozenset()
    (tmp_path / "plain").mkdir()
    run_cases(cases, tmp_path / "plain")
    assert prepack(big.kernel, frozenset()) == {}


def test_prepack_is_a_permutation_with_zero_padding() -> None:
    c = Case("perm", "matmul", lambda b, x, w: [b.op(Op.LINEAR, [x, w])], [f32(5, 70), f32(45, 70)],
             [(5, 70), (45, 70)])
    (pos, pack), = prepack(c.kernel, {1}).items()
    w = torch.arange(1, 45 * 70 + 1, dtype=torch.float32).reshape(45, 70)
    p = pack(w)
    t = gemm_tiles(5, 45, 70)
    np_ = -(-45 // t.nr) * t.nr
    assert p.is_contiguous() and p.numel() == 70 * np_
    assert sorted(p[p != 0].tolist()) == w.reshape(-1).tolist()
    # the first K block's first panel: k-major, NR columns of w's rows
    kc = min(t.kc, 70)
    first = p[:kc * t.nr].reshape(kc, t.nr)
    assert torch.equal(first, w[:min(t.nr, 45), :kc].t() if t.nr <= 45 else
                       torch.nn.functional.pad(w[:, :kc].t(), (0, t.nr - 45)))
    # dynamic shapes of the constant, or no constant at all: nothing is packed
    sym = Case("psym2", "matmul", lambda b, x, w: [b.op(Op.MATMUL, [x, w])], [f32(7, S0), f32(S0, 9)],
               [(7, 4), (4, 9)], {S0: 4})
    assert prepack(sym.kernel, {1}) == {} and prepack(c.kernel, set()) == {}


def test_the_tile_model_keeps_blocks_inside_the_caches() -> None:
    for m, n, k in [(1024, 1024, 1024), (128, 3072, 768), (1, 3, 17), (4096, 64, 64)]:
        t = gemm_tiles(m, n, k)
        assert t.mc % t.mr == 0 and t.nc % t.nr == 0 and 1 <= t.kc <= max(k, 1)
        assert t.nr == 2 * t.width == 2 * vector_width()


# -- convolutions -----------------------------------------------------------------------------

def conv_case(name: str, n: int, cin: int, cout: int, hw: tuple[int, int], kernel: tuple[int, int],
              stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int,
              bias: bool = True) -> Case:
    x, w = f32(n, cin, *hw), f32(cout, cin // groups, *kernel)
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, transposed=False,
                 output_padding=(0, 0))
    if bias:
        fn: Body = lambda b, x, w, c: [b.op(Op.SILU, [b.op(Op.CONVOLUTION, [x, w, c], **attrs)])]
        return Case(name, "conv", fn, [x, w, f32(cout)], [tuple(x.shape), tuple(w.shape), (cout,)])  # type: ignore
    return Case(name, "conv", lambda b, x, w: [b.op(Op.CONVOLUTION, [x, w], **attrs)], [x, w],
                [tuple(x.shape), tuple(w.shape)])  # type: ignore[arg-type]


def test_convolutions_match_torch(tmp_path: Path) -> None:
    cases = [conv_case("pw", 2, 8, 16, (5, 7), (1, 1), (1, 1), (0, 0), (1, 1), 1),
             conv_case("pwnb", 1, 3, 5, (1, 1), (1, 1), (1, 1), (0, 0), (1, 1), 1, bias=False),
             conv_case("dw", 2, 6, 6, (9, 11), (3, 3), (1, 1), (1, 1), (1, 1), 6),
             conv_case("dws2", 1, 4, 4, (10, 9), (3, 3), (2, 2), (1, 1), (1, 1), 4),
             conv_case("dwmult", 1, 3, 6, (8, 8), (5, 5), (1, 1), (2, 2), (1, 1), 3),
             conv_case("c3", 2, 5, 7, (8, 9), (3, 3), (1, 1), (1, 1), (1, 1), 1),
             conv_case("grp", 2, 4, 6, (7, 7), (3, 3), (2, 1), (1, 1), (1, 2), 2),
             conv_case("dil", 1, 3, 4, (12, 10), (3, 2), (1, 2), (2, 0), (2, 3), 1),
             conv_case("s2p1x1", 1, 4, 8, (6, 6), (1, 1), (2, 2), (0, 0), (1, 1), 1)]
    kinds = {c.kernel.name: gemm_plan(c.kernel) is not None for c in cases}
    assert kinds["pw"] and kinds["pwnb"] and not kinds["dw"] and not kinds["c3"]
    run_cases(cases, tmp_path)


@settings(max_examples=10)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 2, 3]),
       st.integers(1, 3), st.integers(1, 2), st.integers(0, 2), st.integers(1, 2), st.integers(4, 12))
def test_random_convolutions_match_torch(tmp_path_factory: pytest.TempPathFactory, n: int, cin_g: int,
                                         cout_g: int, groups: int, kh: int, s: int, p: int, d: int,
                                         size: int) -> None:
    p = min(p, kh // 2 + 1)
    case = conv_case("hc", n, cin_g * groups, cout_g * groups, (size, size + 1), (kh, kh + 1 if kh < 3 else kh),
                     (s, 1), (p, p), (d, 1), groups)
    run_cases([case], tmp_path_factory.mktemp("c"))


def test_the_direct_fallback_serves_any_template(tmp_path: Path) -> None:
    cases = [Case("dmm", "matmul", _bias_relu(Op.LINEAR), [f32(5, 9), f32(4, 9), f32(4)], [(5, 9), (4, 9), (4,)]),
             conv_case("dconv", 1, 4, 6, (6, 5), (3, 3), (2, 1), (1, 1), (1, 1), 2)]
    run_cases(cases, tmp_path, source=lambda k, s, e: direct_function(k, s, e))


# -- no allocation at run time ----------------------------------------------------------------

_ALLOC = re.compile(r"\b(malloc|calloc|realloc|aligned_alloc|posix_memalign|free)\s*\(")


def test_template_sources_allocate_nothing_and_size_their_scratch() -> None:
    """Every template source the tests above built (and those of this module's cases, built
    here in case this test runs alone) carves its scratch from the argument."""
    symbols = symbol_order([S0])
    cases = gemm_cases(0) + [conv_case("dw", 2, 6, 6, (9, 11), (3, 3), (1, 1), (1, 1), (1, 1), 6),
                             conv_case("c3", 2, 5, 7, (8, 9), (3, 3), (1, 1), (1, 1), (1, 1), 1)]
    sources = SOURCES + [template_function(c.kernel, symbols, _epilogue(c.kernel)) for c in cases]
    sources += [direct_function(c.kernel, symbols, _epilogue(c.kernel)) for c in cases[:2]]
    for src in sources:
        assert not _ALLOC.search(src), _ALLOC.search(src)
        assert "stdlib.h" not in src
    for c in cases:
        need = scratch_bytes(c.kernel)
        src = template_function(c.kernel, symbols, _epilogue(c.kernel))
        assert "unsigned char *EFFC_RESTRICT scratch" in src
        if gemm_plan(c.kernel) is not None or c.kernel.name == "dw":
            assert need != 0 and "num_threads(" in src
    sym = next(c for c in cases if c.kernel.name == "sym")
    grows = [int(scratch_bytes(sym.kernel).subs(S0, v)) for v in (1, 37, 10_000)]
    assert grows[0] <= grows[1] <= grows[2] and all(g % 64 == 0 for g in grows)
    assert scratch_bytes(direct_and_pointwise()) == 0


def direct_and_pointwise() -> Kernel:
    return Case("pw", "pointwise", lambda b, x: [b.op(Op.RELU, [x])], [f32(4)], [(4,)]).kernel
