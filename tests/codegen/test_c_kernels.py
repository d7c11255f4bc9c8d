"""Generated C kernels (codegen/c.py), built by backends/c/build.py and called through ctypes,
agree with ``run_kernel`` (the kernel IR's meaning): goldens, random bodies, NaN/Inf, f16/bf16,
and the build cache."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest
import sympy
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

from effc.backends.c import build, compiler_available
from effc.codegen.c import emit_statements, generate, unsupported
from effc.codegen.c_abi import PRELUDE, c_name, symbol_order
from effc.errors import CompileError
from effc.ir import DType, Graph, GraphBuilder, Op, TensorType, size_symbol
from effc.ir.kernel import Compute, Kernel, Load, LoweringError, Store, Template, format_kernel
from effc.ir.kernel_interp import run_kernel
from effc.ir.kernel_lower import lower
from effc.ir.kernel_node import add_kernel

from tests.ir.test_kernel_lower_properties import S0, bodies

pytestmark = pytest.mark.skipif(not compiler_available(), reason="no C compiler")
F32 = DType.F32


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("effc-cache")


def kernel_of(graph: Graph, kind: str, name: str = "k") -> Kernel:
    outer = GraphBuilder()
    node = add_kernel(outer, kind, name, [outer.input(f"x{i}", v.type) for i, v in enumerate(graph.inputs)], graph)
    return lower(node)


def body(kind: str, fn, *types: TensorType, name: str = "k") -> Kernel:
    b = GraphBuilder()
    xs = [b.input(f"a{i}", t) for i, t in enumerate(types)]
    out = fn(b, xs)
    return kernel_of(b.build(out if isinstance(out, list) else [out]), kind, name)


def _shape(dims, env) -> list[int]:
    return [d if isinstance(d, int) else int(sympy.sympify(d).subs(env)) for d in dims]


def compile_all(kernels: Sequence[Kernel], cache: Path, symbols=(S0,)):
    """One translation unit for all ``kernels``; their functions, by kernel name."""
    src = PRELUDE + "\n".join(generate(k, symbols) for k in kernels)
    lib = build(src, "test", cache_dir=cache)
    return lib


def call(lib, kernel: Kernel, xs: Sequence[torch.Tensor], env: dict, symbols=(S0,)) -> list[torch.Tensor]:
    outs = [torch.full(_shape(b.shape, env), 7, dtype=b.dtype.to_torch()) for b in kernel.outputs]
    order = symbol_order(symbols)
    sizes = (ctypes.c_int64 * max(1, len(order)))(*[int(env.get(s, 0)) for s in order])
    fn = getattr(lib, c_name(kernel.name))
    fn.restype = None
    xs = [x.contiguous() for x in xs]
    fn(*[ctypes.c_void_p(t.data_ptr()) for t in list(xs) + outs], sizes, None)  # no scratch: not a template
    return outs


def check(lib, kernel: Kernel, xs, env, exact: bool = False) -> None:
    want = run_kernel(kernel, xs, env)
    got = call(lib, kernel, xs, env)
    for g, w in zip(got, want):
        g = g.reshape(w.shape)
        if exact:
            torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)
        else:
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, equal_nan=True)


def rand_inputs(kernel: Kernel, env, seed: int = 0, special: bool = False) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    xs = []
    for b in kernel.inputs:
        x = torch.rand(_shape(b.shape, env), generator=gen, dtype=torch.float64) * 4 - 2
        if special and x.numel():
            flat = x.reshape(-1)
            pick = torch.randint(0, 4, flat.shape, generator=gen)
            flat[pick == 0] = float("nan")
            flat[pick == 1] = float("inf")
            flat[(pick == 2) & (flat < 0)] = float("-inf")
        xs.append(x.to(b.dtype.to_torch()))
    return xs


# -- goldens ------------------------------------------------------------------------------------

def bias_gelu() -> Kernel:
    return body("pointwise", lambda b, x: b.op(Op.GELU, [b.op(Op.ADD, [x[0], x[1]])], approximate="none"),
                TensorType(F32, (S0, 64)), TensorType(F32, (64,)))


def softmax(n: int = 3000) -> Kernel:
    return body("reduction", lambda b, x: b.op(Op.SOFTMAX, [x[0]], dim=-1), TensorType(F32, (S0, n)),
                name="softmax")


def layer_norm() -> Kernel:
    return body("reduction", lambda b, x: b.op(Op.LAYER_NORM, x, normalized_shape=(64,), eps=1e-5,
                                               has_weight=True, has_bias=True),
                TensorType(F32, (S0, 64)), TensorType(F32, (64,)), TensorType(F32, (64,)), name="ln")


BIAS_GELU = """\
void effc_k(const float *EFFC_RESTRICT a0, const float *EFFC_RESTRICT a1, float *EFFC_RESTRICT out0, const int64_t *EFFC_RESTRICT sizes, unsigned char *EFFC_RESTRICT scratch) {
    (void)scratch;
    const int64_t sz_s0 = sizes[0];
    #pragma omp parallel for if(parallel: 64*sz_s0 >= 32768)
    for (int64_t i0 = 0; i0 < sz_s0; i0++) {
        #pragma omp simd
        for (int64_t i1 = 0; i1 < 64; i1++) {
            const float t0 = a0[64*i0 + i1];
            const float t1 = a1[i1];
            const float t2 = (t0 + t1);
            const float t3 = (t2 * 0.5f * (1.0f + effc_erff(t2 * 0.7071067690849304f)));
            out0[64*i0 + i1] = t3;
        }}
}
"""


def test_bias_gelu_source_is_a_parallel_simd_loop_with_restrict_pointers(cache):
    k = bias_gelu()
    src = generate(k, [S0])
    assert src == BIAS_GELU
    lib = compile_all([k], cache)
    for s0 in (3, 700):  # below and above the parallel threshold
        check(lib, k, rand_inputs(k, {S0: s0}), {S0: s0})


def test_softmax_and_layer_norm_reduce_in_simd_loops_and_agree(cache):
    ks = [softmax(), layer_norm()]
    src = {k.name: generate(k, [S0]) for k in ks}
    sm, ln = src["softmax"], src["ln"]
    assert "#pragma omp parallel for if(parallel: 3000*sz_s0 >= 32768)" in sm
    assert "#pragma omp simd reduction(max:t1) reduction(|:n_t1)" in sm
    assert "#pragma omp simd reduction(+:p_t5)" in sm
    assert "r0_c += 1024" in sm  # the sum is chunked: partial sums, then their total
    assert "if (n_t1) t1 = NAN;" in sm
    assert ln.count("#pragma omp simd reduction(+:") == 2 and "EFFC_RESTRICT a0" in ln
    lib = compile_all(ks, cache)
    for s0 in (1, 20):
        for k in ks:
            check(lib, k, rand_inputs(k, {S0: s0}, seed=s0), {S0: s0})


def test_long_sum_stays_close_to_float64(cache):
    k = body("reduction", lambda b, x: b.op(Op.SUM, [x[0]], dims=(1,), keepdim=False, dtype=None),
             TensorType(F32, (2, 1 << 20)))
    lib = compile_all([k], cache)
    x = torch.rand(2, 1 << 20, generator=torch.Generator().manual_seed(1))
    (got,) = call(lib, k, [x], {})
    exact = x.double().sum(1)
    eager = (x.sum(1).double() - exact).abs()
    assert ((got.double() - exact).abs() <= 4 * eager + 1e-6 * exact).all()


# -- random bodies ------------------------------------------------------------------------------

def _batch(kind: str):
    return st.lists(bodies(kind), min_size=1, max_size=4)


def _check_batch(cases, kind: str, cache: Path) -> None:
    ks = []
    for j, (graph, env) in enumerate(cases):
        note(str(graph))
        k = kernel_of(graph, kind, f"k{j}")
        note(format_kernel(k))
        ks.append(k)
    lib = compile_all(ks, cache)
    for k, (graph, env) in zip(ks, cases):
        check(lib, k, rand_inputs(k, env), env)


@settings(max_examples=20)
@given(cases=_batch("pointwise"))
def test_random_pointwise_bodies_agree_with_run_kernel(cases, cache):
    _check_batch(cases, "pointwise", cache)


@settings(max_examples=20)
@given(cases=_batch("reduction"))
def test_random_reduction_bodies_agree_with_run_kernel(cases, cache):
    _check_batch(cases, "reduction", cache)


# -- NaN and Inf --------------------------------------------------------------------------------

def test_nan_and_inf_propagate_as_in_eager(cache):
    t = TensorType(F32, (S0, 37))
    red = lambda op: (lambda b, x: b.op(op, [x[0]], dims=(1,), keepdim=True))  # noqa: E731
    ks = [
        body("reduction", red(Op.AMAX), t, name="amax"),
        body("reduction", red(Op.AMIN), t, name="amin"),
        body("reduction", lambda b, x: b.op(Op.SOFTMAX, [x[0]], dim=1), t, name="softmax"),
        body("reduction", lambda b, x: b.op(Op.ARGMAX, [x[0]], dim=1, keepdim=False), t, name="argmax"),
        body("reduction", lambda b, x: b.op(Op.ARGMIN, [x[0]], dim=1, keepdim=False), t, name="argmin"),
        body("pointwise", lambda b, x: [b.op(Op.RELU, [x[0]]), b.op(Op.MAXIMUM, x), b.op(Op.MINIMUM, x),
                                       b.op(Op.CLAMP, [x[0]], min=-1.0, max=1.0)], t, t, name="pw"),
    ]
    lib = compile_all(ks, cache)
    env = {S0: 16}
    for k in ks:
        xs = rand_inputs(k, env, seed=3, special=True)
        xs[0][0] = float("-inf")  # an all -inf row: max is -inf, softmax is NaN
        xs[0][1, 5:] = 1.0        # ties: the first index wins
        check(lib, k, xs, env, exact=k.name in ("amax", "amin", "argmax", "argmin", "pw"))


# -- f16 / bf16 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("half", [DType.F16, DType.BF16])
def test_half_types_round_trip_and_round_to_nearest_even(half, cache):
    h = half.to_torch()
    up = body("pointwise", lambda b, x: b.op(Op.CAST, [x[0]], dtype=F32), TensorType(half, (S0,)), name="up")
    down = body("pointwise", lambda b, x: b.op(Op.CAST, [x[0]], dtype=half), TensorType(F32, (S0,)), name="down")
    add = body("pointwise", lambda b, x: b.op(Op.ADD, x), TensorType(half, (S0,)), TensorType(half, (S0,)), name="add")
    lib = compile_all([up, down, add], cache)
    bits = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(h)  # every pattern
    env = {S0: bits.numel()}
    (f,) = call(lib, up, [bits], env)
    torch.testing.assert_close(f, bits.float(), rtol=0, atol=0, equal_nan=True)
    (back,) = call(lib, down, [f], env)
    same = (back.view(torch.int16) == bits.view(torch.int16)) | (back.isnan() & bits.isnan())
    assert same.all()
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(50000, generator=gen) * 10.0 ** torch.randint(-9, 6, (50000,), generator=gen),
                   torch.tensor([65504.0, 65519.0, 65520.0, 1e-8, 2.0**-25, 2.0**-24 * 1.5, -0.0,
                                 float("inf"), float("nan"), 3.0e38, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11])])
    (got,) = call(lib, down, [x], {S0: x.numel()})
    want = x.to(h)
    same = (got.view(torch.int16) == want.view(torch.int16)) | (got.isnan() & want.isnan())
    assert same.all(), x[~same][:5]
    a, b = x[:1000].to(h), x[1000:2000].to(h)
    check(lib, add, [a, b], {S0: 1000}, exact=True)


# -- what is left to others ---------------------------------------------------------------------

def test_view_and_opaque_kernels_have_no_function_and_say_why():
    view = body("view", lambda b, x: b.op(Op.RESHAPE, [x[0]], shape=(6,)), TensorType(F32, (2, 3)))
    assert generate(view, []) is None
    pool = body("op", lambda b, x: b.op(Op.CUMSUM, [x[0]], dim=0, dtype=None), TensorType(F32, (4,)))
    assert "cumsum" in unsupported(pool)
    with pytest.raises(LoweringError, match="cumsum"):
        generate(pool, [])


def test_emit_statements_writes_an_epilogue_at_given_axis_expressions():
    k = Kernel("m", "matmul", bias_gelu().buffers, bias_gelu().domain, (),
               (Load("t0", "a1", sympy.Symbol("i1", integer=True, nonnegative=True), F32),
                Compute("t1", "add", ("acc", "t0"), (), F32),
                Store("out0", 64 * sympy.Symbol("i0", integer=True, nonnegative=True)
                      + sympy.Symbol("i1", integer=True, nonnegative=True), "t1")),
               Template("matmul", (), (), F32))
    text = emit_statements(k, k.body, {"i0": "m", "i1": "n0 + j"}, "  ")
    assert text == ("  const float t0 = a1[(n0 + j)];\n"
                    "  const float t1 = (acc + t0);\n"
                    "  out0[64*(m) + (n0 + j)] = t1;\n")


# -- the build cache ----------------------------------------------------------------------------

SOURCE = PRELUDE + "int effc_answer(void) { return 42; }\n"


def test_second_build_is_a_cache_hit(tmp_path):
    first = build(SOURCE + "/* a */\n", "t", cache_dir=tmp_path)
    second = build(SOURCE + "/* a */\n", "t", cache_dir=tmp_path)
    assert not first.cache_hit and second.cache_hit and first.path == second.path
    assert second.effc_answer() == 42 and second.source_path.read_text().endswith("/* a */\n")


def test_truncated_shared_object_is_rebuilt(tmp_path):
    src = SOURCE + "/* b */\n"
    # the first build in another process, so this one never maps the file it truncates
    code = ("import sys; from effc.backends.c import build; "
            "print(build(sys.stdin.read(), 't', cache_dir=sys.argv[1]).path)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], input=src, capture_output=True,
                         text=True, check=True)
    so = Path(out.stdout.strip())
    data = so.read_bytes()
    so.write_bytes(data[: len(data) // 2])
    lib = build(src, "t", cache_dir=tmp_path)
    assert not lib.cache_hit and lib.path.read_bytes() == data and lib.effc_answer() == 42
    assert build(src, "t", cache_dir=tmp_path).cache_hit


def test_syntax_error_raises_compile_error_naming_the_source(tmp_path):
    with pytest.raises(CompileError) as e:
        build(PRELUDE + "void effc_bad(void) { int x = ; }\n", "bad", cache_dir=tmp_path)
    msg = str(e.value)
    path = Path(msg.split(" failed to compile ")[1].split(":\n")[0])
    assert path.name == "model.c" and path.exists() and "effc_bad" in path.read_text()
    assert "error" in msg


# -- the scalar table, op by op -----------------------------------------------------------------

FLOAT_UNARY = ["neg", "abs", "relu", "floor", "ceil", "round", "trunc", "sign", "exp", "exp2", "expm1",
               "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "tan", "asin",
               "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "sigmoid", "erf", "erfinv",
               "silu", "hardswish", "hardsigmoid", "logical_not", "isnan", "isinf"]
UNARY_ATTRS = {"gelu": [{"approximate": "none"}, {"approximate": "tanh"}],
               "hardtanh": [{"min_val": -0.5, "max_val": 1.5}], "leaky_relu": [{"negative_slope": 0.1}],
               "softplus": [{"beta": 2.0, "threshold": 3.0}], "elu": [{"alpha": 1.5, "scale": 1.1, "input_scale": 0.7}],
               "clamp": [{"min": -1.0, "max": None}, {"min": None, "max": 0.5}, {"min": 1.0, "max": -1.0}]}
BINARY = ["add", "sub", "mul", "pow", "maximum", "minimum", "fmod", "remainder", "atan2", "eq", "ne", "lt",
          "le", "gt", "ge", "logical_and", "logical_or", "logical_xor"]
INT_BINARY = ["add", "sub", "mul", "maximum", "minimum", "fmod", "remainder", "bitwise_and", "bitwise_or",
              "bitwise_xor", "eq", "lt", "logical_xor"]
CASTS = [DType.F64, DType.F32, DType.F16, DType.BF16, DType.I64, DType.I32, DType.I16, DType.I8, DType.U8,
         DType.BOOL]


def _one_op_kernels() -> list[tuple[Kernel, list[torch.Tensor]]]:
    gen = torch.Generator().manual_seed(5)
    n = 257
    xf = torch.cat([torch.randn(n - 7, generator=gen) * 3, torch.tensor([0.0, -0.0, 0.5, -0.5, 2.5, 1.0, -1.0])])
    yf = torch.cat([torch.randn(n - 7, generator=gen) * 3, torch.tensor([1.0, 2.0, 0.0, -2.0, 0.5, -1.0, 3.0])])
    xi = torch.randint(-100, 100, (n,), generator=gen)
    yi = torch.randint(-9, 9, (n,), generator=gen)
    yi[yi == 0] = 3
    t = TensorType(F32, (n,))
    ti = TensorType(DType.I64, (n,))
    out = []

    def add(kind_fn, types, xs):
        out.append((body("pointwise", kind_fn, *types, name=f"op{len(out)}"), xs))
    for op in FLOAT_UNARY:
        add(lambda b, x, op=op: b.op(Op(op), x), [t], [xf])
    for op, variants in UNARY_ATTRS.items():
        for a in variants:
            add(lambda b, x, op=op, a=a: b.op(Op(op), x, **a), [t], [xf])
    for op in BINARY:
        add(lambda b, x, op=op: b.op(Op(op), x), [t, t], [xf, yf])
    for mode in (None, "trunc", "floor"):
        add(lambda b, x, mode=mode: b.op(Op.DIV, x, rounding_mode=mode), [t, t], [xf, yf])
        add(lambda b, x, mode=mode: b.op(Op.DIV, x, rounding_mode=mode), [ti, ti], [xi, yi])
    for op in INT_BINARY:
        add(lambda b, x, op=op: b.op(Op(op), x), [ti, ti], [xi, yi])
    add(lambda b, x: b.op(Op.POW, x), [ti, ti], [xi.clamp(-3, 3), yi.abs() % 5])
    add(lambda b, x: b.op(Op.WHERE, [b.op(Op.GT, x), x[0], x[1]]), [t, t], [xf, yf])
    for src in CASTS:
        for dst in CASTS:
            if src is not dst:
                x = (xf * 40).to(src.to_torch())
                add(lambda b, x, dst=dst: b.op(Op.CAST, x, dtype=dst), [TensorType(src, (n,))], [x])
    return out


def test_every_scalar_op_agrees_with_the_reference(cache):
    cases = _one_op_kernels()
    lib = compile_all([k for k, _ in cases], cache)
    for k, xs in cases:
        want = run_kernel(k, xs, {})
        got = call(lib, k, xs, {})
        for g, w in zip(got, want):
            op = next(s.op for s in k.statements() if isinstance(s, Compute))
            tol = 2e-5 if w.is_floating_point() else 0
            torch.testing.assert_close(g, w, rtol=tol, atol=tol, equal_nan=True, msg=lambda m: f"{op}: {m}\n{k}")
