"""Scalar helper functions of generated Triton kernels: ``@triton.jit`` source, included in a
kernel's module only where its statements use them (``helper_source``).

[Note: Triton math without libdevice]
``triton.language`` has exp, exp2, log, log2, sin, cos, sqrt, erf, floor, ceil, abs and fma;
everything else a torch op needs (expm1, log1p, tanh, the inverse and hyperbolic
trigonometric functions, fmod, pow, round-half-even, erfinv) is libdevice's on a GPU, and
libdevice calls cannot run under TRITON_INTERPRET=1, where CI tests every kernel. So these
are formulas over the core functions, written to be accurate to a few ulp wherever their
building blocks are (and no worse than eager's own error allows by the tolerance policy):
- Cancellation is avoided, not hoped away: expm1 near 0 is a Taylor polynomial (degree 8
  for float32, 17 for float64 below |x| = 1/2), log1p near 0 the series of
  ``2 atanh(x / (2 + x))``; tanh, sinh, asinh, acosh, atanh are built on those two.
- atan is Cephes's (``atanf``'s polynomial for float32, ``atan``'s rational function for
  float64) after the usual range reduction; asin, acos and atan2 reduce to it, with
  atan2's signed zeros and infinities as torch gives them.
- fmod is ``x - trunc(x / y) * y`` with one fused multiply-add and a sign/magnitude fix-up,
  computed in float64 for float32 operands: exact while the quotient stays below about
  2**29 (beyond it the result is the rounded one). pow is ``exp(y log |x|)`` in float64 with
  torch's special cases (x = 1 or y = 0 give 1, negative x needs an integer y).
- Every clamp and select is a ``tl.where`` whose condition is false for NaN, so NaN flows
  through (``tl.minimum``/``tl.maximum`` would drop it on a GPU).
``F64`` parameters are constexpr: the generator knows each temporary's dtype, so a helper
compiles one branch.
"""

from __future__ import annotations

from typing import Iterable

_HELPERS: dict[str, tuple[tuple[str, ...], str]] = {}  # name -> (needs, source)


def _helper(name: str, source: str, needs: tuple[str, ...] = ()) -> None:
    _HELPERS[name] = (needs, "@triton.jit\n" + source.strip() + "\n")


_helper("floordiv_i", """
def effc_floordiv_i(a, b):
    bs = tl.where((b == 0) | (b == -1), 1, b)
    q = a // bs
    q = tl.where(((a % bs) != 0) & ((a < 0) != (bs < 0)), q - 1, q)
    q = tl.where(b == -1, 0 - a, q)
    return tl.where(b == 0, 0, q)
""")
_helper("truncdiv_i", """
def effc_truncdiv_i(a, b):
    bs = tl.where((b == 0) | (b == -1), 1, b)
    q = tl.where(b == -1, 0 - a, a // bs)
    return tl.where(b == 0, 0, q)
""")
_helper("fmod_i", """
def effc_fmod_i(a, b):
    bs = tl.where((b == 0) | (b == -1), 1, b)
    return tl.where((b == 0) | (b == -1), 0, a % bs)
""")
_helper("mod_i", """
def effc_mod_i(a, b):
    r = effc_fmod_i(a, b)
    return tl.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)
""", ("fmod_i",))
_helper("ipow", """
def effc_ipow(a, b):
    r = a * 0 + 1
    base = a
    e = tl.where(b < 0, 0, b)
    for _ in range(63):
        r = tl.where((e & 1) != 0, r * base, r)
        base = base * base
        e = e >> 1
    neg = tl.where(a == 1, 1, tl.where(a == -1, tl.where((b & 1) != 0, -1, 1), 0))
    return tl.where(b < 0, neg, r).to(a.dtype)
""")
_helper("round", """
def effc_round(x):
    r = tl.floor(x)
    f = x - r
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0
    return tl.where(f > 0.5, r + 1.0, tl.where(f < 0.5, r, tl.where(odd, r + 1.0, r)))
""")
_helper("expm1", """
def effc_expm1(x, F64: tl.constexpr):
    if F64:
        p = x * (1.0 / 355687428096000.0) + (1.0 / 20922789888000.0)
        p = p * x + (1.0 / 1307674368000.0)
        p = p * x + (1.0 / 87178291200.0)
        p = p * x + (1.0 / 6227020800.0)
        p = p * x + (1.0 / 479001600.0)
        p = p * x + (1.0 / 39916800.0)
        p = p * x + (1.0 / 3628800.0)
        p = p * x + (1.0 / 362880.0)
    else:
        p = tl.zeros_like(x) + (1.0 / 362880.0)
    p = p * x + (1.0 / 40320.0)
    p = p * x + (1.0 / 5040.0)
    p = p * x + (1.0 / 720.0)
    p = p * x + (1.0 / 120.0)
    p = p * x + (1.0 / 24.0)
    p = p * x + (1.0 / 6.0)
    p = p * x + 0.5
    small = x + (x * x) * p
    return tl.where((x < 0.5) & (x > -0.5), small, tl.exp(x) - 1.0)
""")
_helper("log1p", """
def effc_log1p(x, F64: tl.constexpr):
    s = x / (x + 2.0)
    z = s * s
    if F64:
        p = z * (1.0 / 33.0) + (1.0 / 31.0)
        p = p * z + (1.0 / 29.0)
        p = p * z + (1.0 / 27.0)
        p = p * z + (1.0 / 25.0)
        p = p * z + (1.0 / 23.0)
        p = p * z + (1.0 / 21.0)
        p = p * z + (1.0 / 19.0)
        p = p * z + (1.0 / 17.0)
        p = p * z + (1.0 / 15.0)
    else:
        p = tl.zeros_like(z) + (1.0 / 15.0)
    p = p * z + (1.0 / 13.0)
    p = p * z + (1.0 / 11.0)
    p = p * z + (1.0 / 9.0)
    p = p * z + (1.0 / 7.0)
    p = p * z + (1.0 / 5.0)
    p = p * z + (1.0 / 3.0)
    small = 2.0 * s + (2.0 * s) * (z * p)
    return tl.where((x < 0.5) & (x > -0.5), small, tl.log(x + 1.0))
""")
_helper("tanh", """
def effc_tanh(x, F64: tl.constexpr):
    a = tl.where(x < 0, -x, x)
    a = tl.where(a > 20.0, 20.0, a)
    t = effc_expm1(a + a, F64)
    r = t / (t + 2.0)
    return tl.where(x < 0, -r, r)
""", ("expm1",))
_helper("sinh", """
def effc_sinh(x, F64: tl.constexpr):
    a = tl.where(x < 0, -x, x)
    t = effc_expm1(a, F64)
    h = tl.exp(a * 0.5)
    if F64:
        lim = 700.0
    else:
        lim = 88.0
    r = tl.where(a > lim, (0.5 * h) * h, 0.5 * (t + t / (t + 1.0)))
    return tl.where(x < 0, -r, r)
""", ("expm1",))
_helper("cosh", """
def effc_cosh(x, F64: tl.constexpr):
    a = tl.where(x < 0, -x, x)
    u = tl.exp(a)
    h = tl.exp(a * 0.5)
    if F64:
        lim = 700.0
    else:
        lim = 88.0
    return tl.where(a > lim, (0.5 * h) * h, 0.5 * (u + 1.0 / u))
""")
_helper("asinh", """
def effc_asinh(x, F64: tl.constexpr):
    a = tl.where(x < 0, -x, x)
    big = tl.log(a) + 0.6931471805599453
    r = tl.where(a > 268435456.0, big, effc_log1p(a + a * a / (1.0 + tl.sqrt(1.0 + a * a)), F64))
    return tl.where(x < 0, -r, r)
""", ("log1p",))
_helper("acosh", """
def effc_acosh(x, F64: tl.constexpr):
    t = x - 1.0
    big = tl.log(x) + 0.6931471805599453
    return tl.where(x > 268435456.0, big, effc_log1p(t + tl.sqrt(t + t + t * t), F64))
""", ("log1p",))
_helper("atanh", """
def effc_atanh(x, F64: tl.constexpr):
    return 0.5 * effc_log1p((x + x) / (1.0 - x), F64)
""", ("log1p",))
_helper("atan", """
def effc_atan(x, F64: tl.constexpr):
    a = tl.where(x < 0, -x, x)
    if F64:
        hi = a > 2.414213562373095
        mid = (a > 0.66) & (a <= 2.414213562373095)
        y0 = tl.where(hi, 1.5707963267948966, tl.where(mid, 0.7853981633974483, 0.0))
        more = tl.where(hi, 6.123233995736766e-17, tl.where(mid, 3.061616997868383e-17, 0.0))
        v = tl.where(hi, -1.0 / a, tl.where(mid, (a - 1.0) / (a + 1.0), a))
        z = v * v
        p = z * -8.750608600031904122785e-1 - 1.615753718733365076637e1
        p = p * z - 7.500855792314704667340e1
        p = p * z - 1.228866684490136173410e2
        p = p * z - 6.485021904942025371773e1
        q = z + 2.485846490142306297962e1
        q = q * z + 1.650270098316988542046e2
        q = q * z + 4.328810604912902668951e2
        q = q * z + 4.853903996359136964868e2
        q = q * z + 1.945506571482613964425e2
        r = y0 + ((v * (z * p / q) + v) + more)
    else:
        hi = a > 2.414213562373095
        mid = (a > 0.4142135623730950) & (a <= 2.414213562373095)
        y0 = tl.where(hi, 1.5707963267948966, tl.where(mid, 0.7853981633974483, 0.0))
        v = tl.where(hi, -1.0 / a, tl.where(mid, (a - 1.0) / (a + 1.0), a))
        z = v * v
        p = z * 8.05374449538e-2 - 1.38776856032e-1
        p = p * z + 1.99777106478e-1
        p = p * z - 3.33329491539e-1
        r = y0 + (p * z * v + v)
    return tl.where(x < 0, -r, r)
""")
_helper("atan2", """
def effc_atan2(y, x, F64: tl.constexpr):
    r = effc_atan(y / x, F64)
    yneg = (y < 0) | ((y == 0) & ((1.0 / y) < 0))
    xneg = (x < 0) | ((x == 0) & ((1.0 / x) < 0))
    r = tl.where(x < 0, tl.where(yneg, r - 3.141592653589793, r + 3.141592653589793), r)
    zero = tl.where(xneg, tl.where(yneg, -3.141592653589793, 3.141592653589793), y)
    r = tl.where((y == 0) & (x == 0), zero, r)
    both = ((y == EFFC_INF) | (y == -EFFC_INF)) & ((x == EFFC_INF) | (x == -EFFC_INF))
    corner = tl.where(x > 0, 0.7853981633974483, 2.356194490192345)
    return tl.where(both, tl.where(y < 0, -corner, corner), r)
""", ("atan",))
_helper("asin", """
def effc_asin(x, F64: tl.constexpr):
    return effc_atan(x / tl.sqrt((1.0 - x) * (1.0 + x)), F64)
""", ("atan",))
_helper("acos", """
def effc_acos(x, F64: tl.constexpr):
    return 2.0 * effc_atan(tl.sqrt((1.0 - x) / (1.0 + x)), F64)
""", ("atan",))
_helper("fmod_f", """
def effc_fmod_f(x, y, F64: tl.constexpr):
    a = x.to(tl.float64)
    b = y.to(tl.float64)
    q = a / b
    t = tl.where(q < 0, tl.ceil(q), tl.floor(q))
    r = tl.fma(-t, b, a)
    ab = tl.where(b < 0, -b, b)
    r = tl.where((a > 0) & (r < 0), r + ab, r)
    r = tl.where((a < 0) & (r > 0), r - ab, r)
    r = tl.where(r >= ab, r - ab, r)
    r = tl.where(r <= -ab, r + ab, r)
    r = tl.where((ab == EFFC_INF) & (a == a) & (a != EFFC_INF) & (a != -EFFC_INF), a, r)
    if F64:
        return r
    else:
        return r.to(tl.float32)
""")
_helper("remainder_f", """
def effc_remainder_f(x, y, F64: tl.constexpr):
    m = effc_fmod_f(x, y, F64)
    return tl.where((m != 0) & ((m < 0) != (y < 0)), m + y, m)
""", ("fmod_f",))
_helper("floordiv_f", """
def effc_floordiv_f(a, b, F64: tl.constexpr):
    m = effc_fmod_f(a, b, F64)
    if F64:
        d = (a - m) / b
        q = a / b
    else:
        d = tl.math.div_rn(a - m, b)
        q = tl.math.div_rn(a, b)
    d = tl.where((m != 0) & ((b < 0) != (m < 0)), d - 1.0, d)
    fl = tl.floor(d)
    r = tl.where(d - fl > 0.5, fl + 1.0, fl)
    r = tl.where(d == 0, tl.where(q < 0, -0.0, 0.0), r)
    return tl.where(b == 0, q, r)
""", ("fmod_f",))
_helper("pow_f", """
def effc_pow_f(x, y, F64: tl.constexpr):
    a = x.to(tl.float64)
    b = y.to(tl.float64)
    ax = tl.where(a < 0, -a, a)
    r = tl.exp(b * tl.log(ax))
    finite = (b == b) & (b != EFFC_INF) & (b != -EFFC_INF)
    integral = tl.floor(b) == b
    odd = finite & integral & ((b - 2.0 * tl.floor(b * 0.5)) != 0)
    r = tl.where((a < 0) & odd, -r, r)
    r = tl.where((a < 0) & finite & (integral == 0), EFFC_NAN, r)
    r = tl.where((ax == 1) & ((b == EFFC_INF) | (b == -EFFC_INF)), 1.0, r)
    r = tl.where((b == 0) | (a == 1), 1.0, r)
    if F64:
        return r
    else:
        return r.to(tl.float32)
""")
_helper("erfinv", """
def effc_erfinv(y0, F64: tl.constexpr):
    y = y0.to(tl.float64)
    inside = (y > -1.0) & (y < 1.0)
    yc = tl.where(inside, y, 0.0)
    w = -tl.log((1.0 - yc) * (1.0 + yc))
    u = w - 2.5
    p = u * 2.81022636e-08 + 3.43273939e-07
    p = p * u - 3.5233877e-06
    p = p * u - 4.39150654e-06
    p = p * u + 0.00021858087
    p = p * u - 0.00125372503
    p = p * u - 0.00417768164
    p = p * u + 0.246640727
    p = p * u + 1.50140941
    v = tl.sqrt(w) - 3.0
    g = v * -0.000200214257 + 0.000100950558
    g = g * v + 0.00134934322
    g = g * v - 0.00367342844
    g = g * v + 0.00573950773
    g = g * v - 0.0076224613
    g = g * v + 0.00943887047
    g = g * v + 1.00167406
    g = g * v + 2.83297682
    x = tl.where(w < 5.0, p, g) * yc
    x = x - (tl.erf(x) - yc) / (1.1283791670955126 * tl.exp(-x * x))
    x = x - (tl.erf(x) - yc) / (1.1283791670955126 * tl.exp(-x * x))
    edge = tl.where(y == 1.0, EFFC_INF, tl.where(y == -1.0, -EFFC_INF, EFFC_NAN))
    r = tl.where(inside, x, edge)
    if F64:
        return r
    else:
        return r.to(tl.float32)
""")


# the module-level constants every kernel module defines (literal() prints them)
CONSTANTS = ('EFFC_INF = tl.constexpr(float("inf"))\n'
             'EFFC_NAN = tl.constexpr(float("nan"))\n')


def helper_source(names: Iterable[str]) -> str:
    """The jit source of helpers ``names`` and of every helper they call, callees first."""
    order: list[str] = []

    def visit(n: str) -> None:
        if n in order:
            return
        for m in _HELPERS[n][0]:
            visit(m)
        order.append(n)
    for n in sorted(set(names)):
        visit(n)
    return "\n\n".join(_HELPERS[n][1] for n in order)


def known(name: str) -> bool:
    return name in _HELPERS
