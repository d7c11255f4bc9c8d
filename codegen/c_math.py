"""Vectorisable float32 math for generated kernels: ``MATH_PRELUDE``, C source that follows
``c_abi.PRELUDE`` (it uses ``EFFC_INLINE`` and the ``effc_f32_bits`` / ``effc_bits_f32`` casts).

    effc_expf  effc_expm1f  effc_logf  effc_log1pf  effc_tanhf  effc_erff
    effc_sigmoidf  effc_siluf

[Note: C vector math]
gcc vectorises a loop only when every call in it has a vector variant, and glibc declares
those of expf/logf/... only under ``-ffast-math``, which [Note: C kernel ABI] rules out. So
softmax's exp loop and GELU/tanh/sigmoid epilogues ran one element at a time. These
functions are branch-free C (selects, no calls, no tables) that gcc inlines into a
``#pragma omp simd`` loop and vectorises; each is also ``omp declare simd`` so an
out-of-line use gets a vector clone.
- Method: range reduction plus a polynomial, scaling by 2^n built from integer bits.
  ``x = n ln2 + r`` (Cody-Waite: ``n * 0.693359375`` is exact, the small part of ln2 is
  subtracted separately), ``|r| <= ln2/2``; ``n`` comes from the round-to-nearest of
  ``x log2e + 1.5 * 2^23`` (no float-to-int conversion, so NaN is not undefined behaviour).
  2^n is applied as two factors ``2^(n>>1) * 2^(n - n>>1)`` so that results which overflow
  give inf and results in the subnormal range are rounded once, as torch's exp.
  log splits ``x = m 2^e`` with ``m`` in [sqrt(1/2), sqrt(2)) (subnormals scaled by 2^23
  first) and uses Cephes's polynomial for log(1 + f). erf is ``x + x P(x^2)`` below 0.921875
  and ``1 - exp(G(|x| - 2.5) - x^2)`` above, ``G`` a fit of ``log(erfc(a)) + a^2``; tanh is
  ``t / (t + 2)`` with ``t = expm1(2|x|)``; log1p is Goldberg's ``log(u) * x / (u - 1)``.
- Coefficients: exp/expm1/erf fitted here (Lawson's iteration towards minimax against mpmath,
  then rounded to float and re-checked); log's are Cephes's ``logf``.
- Accuracy (tests/codegen/test_c_math.py measures it against float64 torch rounded to float):
  at most a few ulp over the whole float range; NaN propagates, ±inf and ±0 give what torch
  gives (``exp(-inf) = 0``, ``log(-0) = -inf``, ``tanh(-0) = -0``, ``erf(±inf) = ±1``), exp
  overflows to inf above 88.72 and goes through the subnormals to 0 below -103.97.
- sigmoid and silu keep torch's formulas (``1 / (1 + exp(-x))``, ``x / (1 + exp(-x))``), so
  they reach 0 (and -0) where torch's do, below -88.7, rather than the tiny true values.
- Needs ``-ffp-contract=off`` or not: every step is written to be correct with or without
  contraction; needs round-to-nearest (the default) for the rounding trick.
"""

from __future__ import annotations

# Functions the scalar table emits for float temporaries instead of libm's (c_scalar._fn).
VECTOR_MATH = frozenset({"exp", "expm1", "log", "log1p", "tanh", "erf"})

MATH_PRELUDE = r"""
/* -- vectorisable float math: [Note: C vector math] in codegen/c_math.py -- */
#pragma omp declare simd notinbranch
EFFC_INLINE float effc__pow2i(int32_t n) {  /* 2^n for -126 <= n <= 127 */
    return effc_bits_f32((uint32_t)(n + 127) << 23);
}
#pragma omp declare simd notinbranch
EFFC_INLINE float effc__expm1_poly(float r) {  /* e^r - 1 for |r| <= ln2/2 */
    float p = 0x1.a08906p-13f;
    p = p * r + 0x1.6d10e2p-10f;
    p = p * r + 0x1.11112cp-7f;
    p = p * r + 0x1.55551ap-5f;
    p = p * r + 0x1.555556p-3f;
    float r2 = r * r;
    return r + (0.5f * r2 + (r2 * r) * p);
}
/* e^x = 2^n e^r with x = n ln2 + r; x clamped to where the result is neither 0 nor inf */
#pragma omp declare simd notinbranch
EFFC_INLINE float effc_expf(float x) {
    float xc = x > 89.0f ? 89.0f : x;
    xc = xc < -104.0f ? -104.0f : xc;
    float t = xc * 1.44269504f + 0x1.8p23f, nf = t - 0x1.8p23f;
    int32_t n = (int32_t)(effc_f32_bits(t) - 0x4b400000u), n1 = n >> 1;
    float r = (xc - nf * 0.693359375f) - nf * -2.12194440e-4f;
    float p = 1.0f + effc__expm1_poly(r);
    return p * effc__pow2i(n1) * effc__pow2i(n - n1);
}
/* e^x - 1 = 2^n (expm1(r) + 1 - 2^-n); 1 - 2^-n is exact for n <= 24 and rounds to 1 above */
#pragma omp declare simd notinbranch
EFFC_INLINE float effc_expm1f(float x) {
    float xc = x > 89.0f ? 89.0f : x;
    xc = xc < -18.0f ? -18.0f : xc;
    float t = xc * 1.44269504f + 0x1.8p23f, nf = t - 0x1.8p23f;
    int32_t n = (int32_t)(effc_f32_bits(t) - 0x4b400000u), n1 = n >> 1;
    float r = (xc - nf * 0.693359375f) - nf * -2.12194440e-4f;
    float c = 1.0f - effc__pow2i(n < 25 ? -n : -25);
    float y = (effc__expm1_poly(r) + c) * effc__pow2i(n1) * effc__pow2i(n - n1);
    return fabsf(x) < 0x1p-25f ? x : y;  /* tiny: x itself, keeping -0 */
}
/* log x = e ln2 + log(1 + f), x = (1 + f) 2^e, 1 + f in [sqrt(1/2), sqrt(2)) */
#pragma omp declare simd notinbranch
EFFC_INLINE float effc_logf(float x) {
    int sub = x < 0x1p-126f;
    uint32_t u = effc_f32_bits(sub ? x * 0x1p23f : x);
    int32_t e = (int32_t)((u >> 23) & 0xffu) - (sub ? 126 + 23 : 126);
    float m = effc_bits_f32((u & 0x7fffffu) | 0x3f000000u);  /* [0.5, 1) */
    int lo = m < 0.707106781f;
    float f = lo ? (m + m) - 1.0f : m - 1.0f;
    float fe = (float)(lo ? e - 1 : e), z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = (f * z) * p + fe * -2.12194440e-4f;
    y = y - 0.5f * z;
    float r = (f + y) + fe * 0.693359375f;
    r = x == INFINITY ? x : r;
    r = x == 0.0f ? -INFINITY : r;
    r = x < 0.0f ? NAN : r;
    return x != x ? x : r;
}
/* log1p x = log(u) * x / (u - 1), u = 1 + x rounded (Goldberg) */
#pragma omp declare simd notinbranch
EFFC_INLINE float effc_log1pf(float x) {
    float u = 1.0f + x, d = u - 1.0f;
    float r = effc_logf(u) * (x / d);
    r = d == 0.0f ? x : r;
    return x == INFINITY ? x : r;
}
#pragma omp declare simd notinbranch
EFFC_INLINE float effc_tanhf(float x) {
    float a = fabsf(x);
    a = a > 10.0f ? 10.0f : a;  /* tanh(10) rounds to 1 */
    float t = effc_expm1f(a + a);
    return copysignf(t / (t + 2.0f), x);
}
#pragma omp declare simd notinbranch
EFFC_INLINE float effc_erff(float x) {
    float s = x * x;
    float p = 0x1.603ab6p-14f;
    p = p * s - 0x1.ab48dep-11f;
    p = p * s + 0x1.54e652p-8f;
    p = p * s - 0x1.b811c2p-6f;
    p = p * s + 0x1.ce2e30p-4f;
    p = p * s - 0x1.812744p-2f;
    p = p * s + 0x1.06eba8p-3f;
    float small = x + x * p;
    float a = fabsf(x);
    a = a > 4.0f ? 4.0f : a;  /* erf(4) rounds to 1 */
    float v = a - 2.5f;
    float g = -0x1.d56d26p-26f;
    g = g * v + 0x1.aeb386p-20f;
    g = g * v - 0x1.b9bbeep-17f;
    g = g * v + 0x1.44c7f6p-14f;
    g = g * v - 0x1.b8d282p-12f;
    g = g * v + 0x1.1bc910p-9f;
    g = g * v - 0x1.63ce6ep-7f;
    g = g * v + 0x1.cb9f9ap-5f;
    g = g * v - 0x1.692522p-2f;
    g = g * v - 0x1.8e8b72p+0f;
    float big = copysignf(1.0f - effc_expf(g - a * a), x);
    return fabsf(x) < 0.921875f ? small : big;
}
#pragma omp declare simd notinbranch
EFFC_INLINE float effc_sigmoidf(float x) { return 1.0f / (1.0f + effc_expf(-x)); }
#pragma omp declare simd notinbranch
EFFC_INLINE float effc_siluf(float x) { return x / (1.0f + effc_expf(-x)); }
"""
