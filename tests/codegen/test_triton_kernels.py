"""The Triton point-wise and reduction generator (codegen/triton.py) agrees with the reference
backend: point-wise bodies with broadcasts, transposes and symbolic sizes, masks where the
extent is not a multiple of the block, persistent and looped reductions (softmax, layer norm,
sums over outer axes, argmax/argmin, any/all), f16 and f64 buffers, and NaN/Inf propagated as
eager does. Kernels run under TRITON_INTERPRET=1 on the CPU (tests/codegen/triton_run.py sets
it before triton is imported); the ``gpu`` test compiles a few on CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest
import sympy
import torch

from tests.codegen.triton_run import DEVICE, build, load  # sets TRITON_INTERPRET first

from effc.backends.reference.program import ReferenceProgram
from effc.codegen.triton import generate
from effc.codegen.triton_abi import TritonConfig, size_symbols
from effc.costmodel.triton_configs import candidates, choose_config, rank_configs
from effc.ir import DType, Op, TensorType, size_symbol
from effc.ir.kernel import LoweringError
from effc.tolerance import assert_equivalent

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

S0, S1 = size_symbol("s0"), size_symbol("s1")
F32, F16, F64 = DType.F32, DType.F16, DType.F64


def T(*shape: object, dtype: DType = F32) -> TensorType:
    return TensorType(dtype, shape)  # type: ignore[arg-type]


def inputs(types: Sequence[TensorType], env: dict, seed: int = 0, special: bool = False) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    xs = []
    for t in types:
        shape = tuple(int(sympy.sympify(d).subs(env)) for d in t.shape)
        if t.dtype.is_float:
            x = torch.randn(shape, generator=gen, dtype=torch.float64)
            if special and x.numel():
                flat = x.view(-1)
                pick = torch.randint(0, 6, flat.shape, generator=gen)
                flat[pick == 0] = float("nan")
                flat[pick == 1] = float("inf")
                flat[pick == 2] = float("-inf")
        elif t.dtype is DType.BOOL:
            x = torch.randint(0, 2, shape, generator=gen).bool()
        else:
            x = torch.randint(-5, 6, shape, generator=gen)
        xs.append(x.to(t.dtype.to_torch()))
    return xs


def run(kind: str, fn, types: Sequence[TensorType],  # type: ignore[no-untyped-def]
        config: TritonConfig | None, tmp_path: Path, env: dict | None = None,
        xs: list[torch.Tensor] | None = None, name: str = "k0") -> str:
    """Generate ``fn``'s kernel under ``config``, run it on ``xs`` (random by default) and assert
    the tolerance policy against the reference backend; returns the generated source."""
    env = env or {}
    body, kernel = build(kind, fn, types, name)
    src = generate(kernel, kernel.name, config)
    xs = xs if xs is not None else inputs(types, env)
    eager = ReferenceProgram(body)(*xs)
    ref = ReferenceProgram(body, upcast=True)(*xs)
    outs = [torch.full(e.shape, float("nan") if e.is_floating_point() else -7, dtype=e.dtype, device=DEVICE)
            for e in eager]
    sizes = [int(env[s]) for s in size_symbols(kernel)]
    load(src, tmp_path)([x.to(DEVICE) for x in xs], outs, sizes)
    assert_equivalent([o.cpu() for o in outs], eager, ref, f"{kernel}\n{src.source}")
    return src.source


PW = TritonConfig(64, 1, 2)


# -- point-wise ---------------------------------------------------------------------------------

def test_bias_gelu_symbolic_rows_masked(tmp_path):
    fn = lambda b, x, c: [b.op(Op.GELU, [b.op(Op.ADD, [x, c])], approximate="none")]  # noqa: E731
    src = run("pointwise", fn, [T(S0, 24), T(24)], PW, tmp_path, {S0: 5})
    assert "xmask = x < XNUMEL" in src and "IDX64" in src


def test_static_multiple_of_block_has_no_mask(tmp_path):
    fn = lambda b, x, y: [b.op(Op.MUL, [x, y])]  # noqa: E731
    src = run("pointwise", fn, [T(4, 32), T(4, 32)], PW, tmp_path)
    assert "xmask" not in src and "IDX64" not in src
    assert "tl.load(in0 + (x))" in src   # contiguous: the flat index itself, vectorisable


def test_broadcast_and_transpose_index_arithmetic(tmp_path):
    def fn(b, x, y, z):  # type: ignore[no-untyped-def]
        xt = b.op(Op.PERMUTE, [x], dims=(0, 2, 1))             # [3, 7, 5] read transposed
        return [b.op(Op.SUB, [b.op(Op.ADD, [xt, y]), z])]       # y: [7, 1], z: [5]
    run("pointwise", fn, [T(3, 5, 7), T(7, 1), T(5)], TritonConfig(32, 1, 1), tmp_path)


def test_two_symbolic_sizes_and_two_outputs(tmp_path):
    fn = lambda b, x, y: [b.op(Op.ADD, [x, y]), b.op(Op.RELU, [x])]  # noqa: E731
    run("pointwise", fn, [T(S0, S1), T(1, S1)], PW, tmp_path, {S0: 3, S1: 11})


def test_empty_domain_returns_without_launching(tmp_path):
    fn = lambda b, x: [b.op(Op.EXP, [x])]  # noqa: E731
    run("pointwise", fn, [T(S0, 8)], PW, tmp_path, {S0: 0})


@pytest.mark.parametrize("op,attrs", [(Op.TANH, {}), (Op.SIGMOID, {}), (Op.SILU, {}),
                                      (Op.GELU, {"approximate": "tanh"}), (Op.RSQRT, {}), (Op.LOG1P, {}),
                                      (Op.HARDSWISH, {}), (Op.ERF, {})])
def test_unary_math(op, attrs, tmp_path):
    def fn(b, x):  # type: ignore[no-untyped-def]
        if op in (Op.RSQRT, Op.LOG1P):
            x = b.op(Op.ABS, [x])
        return [b.op(op, [x], **attrs)]
    run("pointwise", fn, [T(6, 33)], PW, tmp_path)


def test_f16_buffers_compute_in_f32_and_round_on_store(tmp_path):
    fn = lambda b, x, y: [b.op(Op.MUL, [b.op(Op.ADD, [x, y]), x]), b.op(Op.CAST, [x], dtype=F32)]  # noqa: E731
    src = run("pointwise", fn, [T(S0, 40, dtype=F16), T(40, dtype=F16)], PW, tmp_path, {S0: 3})
    assert ".to(tl.float32)" in src and ".to(tl.float16)" in src


def test_f64_and_integer_division(tmp_path):
    fn = lambda b, x, i, j: [b.op(Op.DIV, [x, x], rounding_mode=None),  # noqa: E731
                             b.op(Op.DIV, [i, j], rounding_mode="floor"), b.op(Op.DIV, [i, j], rounding_mode="trunc")]
    types = [T(5, 9, dtype=F64), T(5, 9, dtype=DType.I32), T(9, dtype=DType.I32)]
    xs = inputs(types, {}, seed=6)
    xs[2] = torch.tensor([-4, -3, -2, -1, 1, 2, 3, 5, 7], dtype=torch.int32)  # no division by zero in eager
    run("pointwise", fn, types, PW, tmp_path, xs=xs)


@pytest.mark.parametrize("dtype", [F16, F32])
def test_small_integer_powers_are_products(dtype, tmp_path):
    """GPT-2's GELU cubes its input: a product, not the float64 exp(y log|x|), with NaN and
    infinities as pow gives them; a non-integer exponent still takes the general pow."""
    fn = lambda b, x: [b.op(Op.POW, [x, b.scalar(3.0, F64)]), b.op(Op.POW, [x, b.scalar(2, DType.I64)]),  # noqa: E731
                       b.op(Op.POW, [b.op(Op.ABS, [x]), b.scalar(1.5, F64)])]
    types = [T(4, 50, dtype=dtype)]
    src = run("pointwise", fn, types, PW, tmp_path, xs=inputs(types, {}, seed=3, special=True))
    assert src.count("effc_pow_f(") == 2, src   # its definition and the x ** 1.5 call
    assert " * " in src


def test_nan_and_inf_propagate_pointwise(tmp_path):
    fn = lambda b, x, y: [b.op(Op.MAXIMUM, [x, y]), b.op(Op.MINIMUM, [x, y]),  # noqa: E731
                          b.op(Op.CLAMP, [x], min=-1.0, max=1.0), b.op(Op.RELU, [x])]
    types = [T(4, 50), T(4, 50)]
    run("pointwise", fn, types, PW, tmp_path, xs=inputs(types, {}, seed=1, special=True))


def test_model_names_never_reach_the_source(tmp_path):
    fn = lambda b, x: [b.op(Op.NEG, [x])]  # noqa: E731
    src = run("pointwise", fn, [T(8)], PW, tmp_path, name="k0; import os #")
    assert "import os" not in src and "effc_k0__import_os__" in src


# -- reductions ---------------------------------------------------------------------------------

SOFTMAX = lambda b, x: [b.op(Op.SOFTMAX, [x], dim=-1)]  # noqa: E731


def layer_norm(b, x, w, c):  # type: ignore[no-untyped-def]
    return [b.op(Op.LAYER_NORM, [x, w, c], normalized_shape=(48,), eps=1e-5, has_weight=True, has_bias=True)]


@pytest.mark.parametrize("config", [TritonConfig(4, 64, 2), TritonConfig(2, 16, 1, looped=True)],
                         ids=["persistent", "looped"])
def test_softmax(config, tmp_path):
    src = run("reduction", SOFTMAX, [T(S0, 37)], config, tmp_path, {S0: 7})
    assert ("for roff in range" in src) == config.looped


@pytest.mark.parametrize("config", [TritonConfig(2, 64, 2), TritonConfig(4, 16, 2, looped=True)],
                         ids=["persistent", "looped"])
def test_layer_norm_f16(config, tmp_path):
    types = [T(S0, 48, dtype=F16), T(48, dtype=F16), T(48, dtype=F16)]
    run("reduction", layer_norm, types, config, tmp_path, {S0: 5})


def test_persistent_config_with_symbolic_r_runs_its_looped_twin(tmp_path):
    """R is symbolic: the persistent kernel for R <= rblock, the looped twin beyond."""
    for r in (13, 45):
        src = run("reduction", SOFTMAX, [T(3, S0)], TritonConfig(2, 16, 1), tmp_path, {S0: r})
    assert "_looped" in src and "if rnumel <= 16" in src


@pytest.mark.parametrize("looped", [False, True])
def test_sum_mean_var_over_outer_and_inner_axes(looped, tmp_path):
    def fn(b, x):  # type: ignore[no-untyped-def]
        return [b.op(Op.SUM, [x], dims=(0, 2), keepdim=False, dtype=None),
                b.op(Op.MEAN, [x], dims=(0, 2), keepdim=True),
                b.op(Op.VAR, [x], dims=(0, 2), correction=1, keepdim=False)]
    config = TritonConfig(2, 8, 1, looped=True) if looped else TritonConfig(4, 64, 2)
    run("reduction", fn, [T(3, 6, 10)], config, tmp_path)


@pytest.mark.parametrize("looped", [False, True])
def test_arg_and_extreme_reductions_with_nan_and_ties(looped, tmp_path):
    def fn(b, x):  # type: ignore[no-untyped-def]
        return [b.op(Op.AMAX, [x], dims=(1,), keepdim=True), b.op(Op.AMIN, [x], dims=(1,), keepdim=False),
                b.op(Op.ARGMAX, [x], dim=1, keepdim=False), b.op(Op.ARGMIN, [x], dim=1, keepdim=False)]
    (x,) = inputs([T(6, 29)], {}, seed=2)
    x[0, 3] = float("nan")
    x[1, :] = float("-inf")
    x[2, 4:] = 7.0                 # ties: the first position wins
    x[3, 10] = float("inf")
    config = TritonConfig(2, 8, 1, looped=True) if looped else TritonConfig(2, 32, 1)
    run("reduction", fn, [T(6, 29)], config, tmp_path, xs=[x])


def test_softmax_nan_and_all_minus_inf_rows(tmp_path):
    (x,) = inputs([T(5, 20)], {}, seed=4, special=True)
    x[0] = float("-inf")
    run("reduction", SOFTMAX, [T(5, 20)], TritonConfig(1, 32, 1), tmp_path, xs=[x])


def test_any_all_and_integer_sums(tmp_path):
    def fn(b, m, i):  # type: ignore[no-untyped-def]
        return [b.op(Op.ANY, [m], dims=(1,), keepdim=False), b.op(Op.ALL, [m], dims=(1,), keepdim=False),
                b.op(Op.SUM, [i], dims=(1,), keepdim=False, dtype=None)]
    types = [T(7, 19, dtype=DType.BOOL), T(7, 19, dtype=DType.I32)]
    xs = inputs(types, {}, seed=5)
    xs[0][2] = True
    xs[0][3] = False
    run("reduction", fn, types, TritonConfig(2, 32, 1), tmp_path, xs=xs)
    run("reduction", fn, types, TritonConfig(1, 8, 1, looped=True), tmp_path, xs=xs)


# -- embedding (a node kernel with a Triton form) -------------------------------------------------

@pytest.mark.parametrize("dtype", [F32, F16])
def test_embedding_lookup_with_symbolic_rows(dtype, tmp_path):
    fn = lambda b, w, i: [b.op(Op.EMBEDDING, [w, i], padding_idx=-1)]  # noqa: E731
    types = [T(11, 40, dtype=dtype), T(2, S0, dtype=DType.I64)]
    xs = inputs(types, {S0: 7})
    xs[1] = torch.randint(0, 11, (2, 7), generator=torch.Generator().manual_seed(8))
    xs[1][0, 0], xs[1][1, 6] = 0, 10          # the first and last rows of the table
    src = run("op", fn, types, None, tmp_path, {S0: 7}, xs=xs)
    assert "for off in range(0, D, BLOCK_D)" in src


def test_embedding_wider_than_one_block(tmp_path):
    fn = lambda b, w, i: [b.op(Op.EMBEDDING, [w, i], padding_idx=-1)]  # noqa: E731
    types = [T(5, 1500), T(3, dtype=DType.I64)]
    xs = inputs(types, {})
    xs[1] = torch.tensor([4, 0, 2])
    run("op", fn, types, None, tmp_path, xs=xs)


# -- configs and refusals -----------------------------------------------------------------------

def test_cost_model_configs_are_valid_and_run(tmp_path):
    _, k = build("reduction", SOFTMAX, [T(S0, 3000)])
    ranked = rank_configs(k, {"s0": 4096})
    assert ranked and all(t > 0 for t, _ in ranked)
    assert [t for t, _ in ranked] == sorted(t for t, _ in ranked)
    assert any(c.looped for c in candidates(k, {"s0": 4096})) and any(not c.looped for c in candidates(k, {"s0": 4096}))
    small = choose_config(build("reduction", SOFTMAX, [T(S0, 40)])[1], {"s0": 3})
    run("reduction", SOFTMAX, [T(S0, 40)], small, tmp_path, {S0: 3})
    assert generate(k, k.name).source   # None: the cost model's pick


def test_node_kernels_are_refused_with_a_reason():
    b_fn = lambda b, x: [b.op(Op.CUMSUM, [x], dim=1, dtype=None)]  # noqa: E731
    _, k = build("op", b_fn, [T(3, 4)])
    with pytest.raises(LoweringError, match="cumsum"):
        generate(k, k.name, None)


@pytest.mark.gpu
def test_kernels_compile_on_cuda(tmp_path):
    run("reduction", SOFTMAX, [T(S0, 1000)], TritonConfig(1, 1024, 4), tmp_path, {S0: 300})
    run("reduction", layer_norm, [T(S0, 48, dtype=F16), T(48, dtype=F16), T(48, dtype=F16)],
        TritonConfig(4, 16, 2, looped=True), tmp_path, {S0: 999})
    run("pointwise", lambda b, x, c: [b.op(Op.GELU, [b.op(Op.ADD, [x, c])], approximate="tanh")],
        [T(S0, 768, dtype=F16), T(768, dtype=F16)], TritonConfig(1024, 1, 4), tmp_path, {S0: 1000})
