"""codegen/c_math.py's vectorisable float math ([Note: C vector math]): accuracy in ulp against
torch (float64 rounded to float, and eager float32), exact special values, and gcc vectorising
loops that call it, both hand-written loops and generated softmax / GELU kernels."""

from __future__ import annotations

import ctypes
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effc.backends.c import build, compiler_available
from effc.backends.c.build import toolchain
from effc.codegen.c import generate
from effc.codegen.c_abi import PRELUDE
from effc.codegen.c_math import MATH_PRELUDE
from effc.codegen.c_scalar import scalar_expr
from effc.ir import DType, GraphBuilder, Op, TensorType, size_symbol
from effc.ir.kernel import Kernel
from effc.ir.kernel_lower import lower
from effc.ir.kernel_node import add_kernel

pytestmark = pytest.mark.skipif(not compiler_available(), reason="no C compiler")
F32 = DType.F32
MAX_ULP = 4

# name -> (C expression of float v, torch function); the composite ops go through the scalar table
OPS = {
    "exp": ("effc_expf(v)", torch.exp),
    "expm1": ("effc_expm1f(v)", torch.expm1),
    "log": ("effc_logf(v)", torch.log),
    "log1p": ("effc_log1pf(v)", torch.log1p),
    "tanh": ("effc_tanhf(v)", torch.tanh),
    "erf": ("effc_erff(v)", torch.erf),
    "sigmoid": ("effc_sigmoidf(v)", torch.sigmoid),
    "silu": ("effc_siluf(v)", F.silu),
    "gelu": (scalar_expr("gelu", ["v"], [F32], F32, {"approximate": "none"}), F.gelu),
    "gelu_tanh": (scalar_expr("gelu", ["v"], [F32], F32, {"approximate": "tanh"}),
                  lambda x: F.gelu(x, approximate="tanh")),
    "softplus": (scalar_expr("softplus", ["v"], [F32], F32, {"beta": 1.0, "threshold": 20.0}), F.softplus),
}
ELEMENTARY = ["exp", "expm1", "log", "log1p", "tanh", "erf"]
# where each op does something: dense ranges checked besides the whole float line
DENSE = {"exp": [(-104, 89)], "expm1": [(-20, 89)], "log": [(0, 4), (0, 1e-36)], "log1p": [(-1, 4)],
         "tanh": [(-10, 10)], "erf": [(-5, 5)], "sigmoid": [(-20, 20)], "silu": [(-20, 20)],
         "gelu": [(-20, 20)], "gelu_tanh": [(-20, 20)], "softplus": [(-20, 20)]}
SPECIAL = [0.0, -0.0, math.inf, -math.inf, math.nan, 1.0, -1.0, 100.0, -100.0, 1e-45, -1e-45, 1.1754944e-38,
           3.4028235e38, -3.4028235e38, 88.72283, 88.72284, -87.33655, -103.97208, -103.98, 0.5, 20.0, -20.0]


def prelude() -> str:
    return PRELUDE if MATH_PRELUDE in PRELUDE else PRELUDE + MATH_PRELUDE


def loops() -> str:
    return "".join(f"void run_{k}(const float *EFFC_RESTRICT x, float *EFFC_RESTRICT y, int64_t n) {{\n"
                   "    #pragma omp simd\n"
                   f"    for (int64_t i = 0; i < n; i++) {{ const float v = x[i]; y[i] = {e}; }}\n}}\n"
                   for k, (e, _) in OPS.items())


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory):
    return build(prelude() + loops(), "c_math", cache_dir=tmp_path_factory.mktemp("effc-cache"))


def run(lib, name: str, x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    fn = getattr(lib, f"run_{name}")
    fn.restype = None
    fn(ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()), ctypes.c_int64(x.numel()))
    return y


def ulps(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Distance in floats between ``a`` and ``b`` (+0 and -0 are neighbours); 0 where both are
    NaN, 2^40 where one is."""
    def ordered(t: torch.Tensor) -> np.ndarray:
        i = t.numpy().view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF) - 1, i)
    d = np.abs(ordered(a) - ordered(b))
    na, nb = a.isnan().numpy(), b.isnan().numpy()
    d[na & nb] = 0
    d[na ^ nb] = 1 << 40
    return d


def whole_line(n: int = 1 << 20) -> torch.Tensor:
    """``n`` random bit patterns (every exponent, NaNs, infinities, subnormals) and SPECIAL."""
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(-2**31, 2**31, (n,), generator=g, dtype=torch.int64).to(torch.int32)
    return torch.cat([bits.view(torch.float32), torch.tensor(SPECIAL)])


def dense(lo: float, hi: float, n: int = 1 << 20) -> torch.Tensor:
    return torch.linspace(lo, hi, n, dtype=torch.float64).float()


def worst(got: torch.Tensor, want: torch.Tensor, x: torch.Tensor) -> tuple[int, str]:
    u = ulps(got, want)
    k = int(u.argmax())
    return int(u[k]), f"x={float(x[k])!r}: got {float(got[k])!r}, want {float(want[k])!r}"


@pytest.mark.parametrize("name", ELEMENTARY)
def test_elementary_within_4_ulp_of_the_rounded_float64_result(lib, name):
    fn = OPS[name][1]
    for x in [whole_line()] + [dense(lo, hi) for lo, hi in DENSE[name]]:
        u, where = worst(run(lib, name, x), fn(x.double()).float(), x)
        assert u <= MAX_ULP, f"{name}: {u} ulp at {where}"


@pytest.mark.parametrize("name", [n for n in OPS if not n.startswith("gelu")])
def test_within_4_ulp_of_eager_float32(lib, name):
    fn = OPS[name][1]
    for x in [whole_line()] + [dense(lo, hi) for lo, hi in DENSE[name]]:
        u, where = worst(run(lib, name, x), fn(x), x)
        assert u <= MAX_ULP, f"{name}: {u} ulp at {where}"


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh"])
def test_gelu_error_is_the_formulas(lib, name):
    """gelu keeps torch's ``0.5 x (1 + erf(x / sqrt 2))``, whose ``1 +`` cancels for x < 0:
    an ulp of erf near -1 is 2^-24 |x| / 2 of gelu, and gelu flushes to -0 below about -5.5.
    So: within 4 ulp of the float64 result for x >= 0, and within 4 * 2^-24 |x| of it
    everywhere. Torch's own float32 gelu (its erf is an A&S-style approximation) is off by
    6 * 2^-24 |x|, so against it the bound is 8."""
    ap = "tanh" if name == "gelu_tanh" else "none"
    x = torch.cat([dense(-20, 20), whole_line()[:-len(SPECIAL)]])
    x = x[x.isfinite() & (x.abs() < 1e30)]
    got = run(lib, name, x).double()
    for want, bound in ((F.gelu(x.double(), approximate=ap), MAX_ULP), (F.gelu(x, approximate=ap).double(), 8)):
        err = (got - want).abs() / (x.double().abs() * 2**-24 + 2**-149)  # subnormal x: 0.5 x rounds
        k = int(err.argmax())
        assert float(err[k]) <= bound, f"{name}: x={float(x[k])!r}: got {float(got[k])!r}, want {float(want[k])!r}"
    pos = x >= 0
    u, where = worst(run(lib, name, x[pos]), F.gelu(x[pos].double(), approximate=ap).float(), x[pos])
    assert u <= MAX_ULP, f"{name}: {u} ulp at {where}"


def test_sigmoid_and_silu_are_accurate_where_torchs_formula_does_not_flush_to_zero(lib):
    x = dense(-87.0, 20.0)
    for name in ("sigmoid", "silu"):
        u, where = worst(run(lib, name, x), OPS[name][1](x.double()).float(), x)
        assert u <= MAX_ULP, f"{name}: {u} ulp at {where}"


@pytest.mark.parametrize("name", list(OPS))
def test_special_values_match_torch_exactly(lib, name):
    x = torch.tensor(SPECIAL)
    if name.startswith("gelu"):  # torch's gelu(+-inf) is NaN, its gelu(FLT_MAX) inf; the formula's
        x = x[x.abs() < 1e38]     # order of products, not a math function, decides those
    got, want = run(lib, name, x), OPS[name][1](x)
    # where torch's float32 flushes a subnormal (log1p(1e-45) = 0), the rounded true value also passes
    u = np.minimum(ulps(got, want), ulps(got, OPS[name][1](x.double()).float()))
    # a finite nonzero result of a finite argument (exp(-100), a subnormal) may be an ulp off
    regular = (want.isfinite() & (want != 0) & (want.abs() != 1)).numpy()
    bad = [(float(a), float(g), float(w)) for a, g, w, d, r in zip(x, got, want, u, regular) if d > (1 if r else 0)]
    assert not bad, f"{name}: (x, got, want) {bad}"


@pytest.mark.parametrize("name,x,want", [
    ("exp", 100.0, math.inf), ("exp", -100.0, 3.783505853677006e-44), ("exp", -104.0, 0.0), ("exp", -math.inf, 0.0),
    ("expm1", -0.0, -0.0), ("expm1", -math.inf, -1.0), ("log", -0.0, -math.inf), ("log", -1.0, math.nan),
    ("log", 1.0, 0.0), ("log1p", -0.0, -0.0), ("log1p", -1.0, -math.inf), ("log1p", math.inf, math.inf),
    ("tanh", -0.0, -0.0), ("tanh", -math.inf, -1.0), ("erf", -0.0, -0.0), ("erf", math.inf, 1.0),
    ("sigmoid", -math.inf, 0.0), ("silu", -0.0, -0.0), ("exp", math.nan, math.nan), ("erf", math.nan, math.nan),
])
def test_signs_overflow_and_nan(lib, name, x, want):
    got = float(run(lib, name, torch.tensor([x]))[0])
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want and math.copysign(1, got) == math.copysign(1, want), (got, want)


# -- vectorisation ---------------------------------------------------------------------------------

def vectorized_lines(source: str, tmp: Path) -> set[int]:
    """The source lines of the loops gcc reports as vectorised, compiling with the build's flags."""
    tc = toolchain()
    if "Free Software Foundation" not in tc.version or "-fopenmp" not in tc.flags:
        pytest.skip("needs gcc with OpenMP for -fopt-info-vec")
    src = tmp / "v.c"
    src.write_text(source)
    r = subprocess.run([tc.compiler, *tc.flags, "-fopt-info-vec-optimized", str(src), "-o", str(tmp / "v.so")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return {int(m) for m in re.findall(r"v\.c:(\d+):\d+: optimized: loop vectorized", r.stderr)}


def test_gcc_vectorizes_every_math_loop(tmp_path):
    source = prelude() + loops()
    got = vectorized_lines(source, tmp_path)
    lines = source.splitlines()
    for name in OPS:
        head = next(k for k, line in enumerate(lines) if line.startswith(f"void run_{name}("))
        assert head + 3 in got, f"loop of {name} (line {head + 3}) not vectorized: {sorted(got)}"


def kernel(op: Op, t: TensorType, name: str, **attrs) -> Kernel:
    inner = GraphBuilder()
    x = inner.input("a0", t)
    graph = inner.build([inner.op(op, [x], **attrs)])
    outer = GraphBuilder()
    kind = "reduction" if op is Op.SOFTMAX else "pointwise"
    return lower(add_kernel(outer, kind, name, [outer.input("x0", t)], graph))


@pytest.mark.parametrize("op,attrs", [(Op.GELU, {"approximate": "none"}), (Op.GELU, {"approximate": "tanh"}),
                                      (Op.SIGMOID, {}), (Op.SILU, {}), (Op.TANH, {}),
                                      (Op.SOFTMAX, {"dim": -1})])
def test_generated_kernel_loop_calling_math_is_vectorized(tmp_path, op, attrs):
    s0 = size_symbol("s0")
    k = kernel(op, TensorType(F32, (s0, 3000)), "k", **attrs)
    body = generate(k, [s0])
    assert "effc_" in body and not re.search(r"[^_](expf|erff|tanhf)\(", body), body
    source = prelude() + body
    got = vectorized_lines(source, tmp_path)
    lines = source.splitlines()
    calls = [k + 1 for k, line in enumerate(lines) if re.search(r"effc_(exp|erf|tanh|sigmoid|silu)f\(", line)
             and k > len(prelude().splitlines())]
    assert calls
    for c in calls:  # the loop that holds the call: the nearest ``for`` above it (gcc names
        # the line of its pragma, its ``for`` or its first statement)
        loop = max(k + 1 for k in range(c) if lines[k].lstrip().startswith("for ("))
        assert got & set(range(loop - 1, c + 1)), f"loop at line {loop} (call at {c}) not vectorized: " \
            f"{sorted(got)}\n{body}"
