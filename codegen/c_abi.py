"""The C calling convention shared by the kernel generator, the templates and the host program.

[Note: C kernel ABI]
- One C function per kernel of the kernel IR (ir/kernel.py), named ``c_name(kernel.name)``
  (``effc_k3``), returning void, with parameters in this order:
    1. the kernel's input buffers, in ``kernel.inputs`` order, as ``const T *restrict``;
    2. its output buffers, in ``kernel.outputs`` order, as ``T *restrict``;
    3. ``const int64_t *restrict sizes``: the values of the size symbols, indexed by
       ``symbol_order(symbols)`` (sorted by name), the same array for every kernel of a
       program. A kernel with no symbols still takes the argument.
    4. ``unsigned char *restrict scratch``: 64-byte aligned working memory of at least
       ``c_templates.scratch_bytes(kernel)`` bytes (evaluated at ``sizes``), disjoint from the
       buffers; its contents on entry are anything and on return are garbage. Kernels never
       allocate: templates carve their packed panels and tiles from it [Note: C template
       scratch], every other kernel ignores it (``(void)scratch;``) and may be passed NULL.
  ``T`` is ``c_type(buffer.dtype)``. Buffers are contiguous, row-major, and do not alias one
  another (the memory plan's in-place reuse hands a kernel the same pointer for an input and
  an output only where every element is read before it is written at the same index: for
  such in-place pairs the generator omits ``restrict`` on both; see ``inplace``).
- Index expressions are flat element offsets (sympy), printed with ``c_expr`` as int64
  arithmetic: ``floor(a/b)`` of non-negative integers as ``(a)/(b)``, ``Mod`` as ``%``.
- Float semantics follow eager PyTorch: float32 math in float32 (float64 for f64; f16/bf16
  are computed in float32 and rounded on store), NaN propagates through max/min, integer
  division truncates as torch's ``div(rounding_mode="trunc")``. The only licence taken is
  reassociation of sums in reductions (vector accumulators), which the tolerance policy
  admits; never ``-ffast-math``.
- Every generated translation unit starts with ``PRELUDE`` (headers, the ``restrict`` and
  inline macros, scalar helpers such as ``effc_gelu``), so a kernel's source compiles alone.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

import sympy

from effc.ir import DType
from effc.ir.kernel import LoweringError

if TYPE_CHECKING:
    from effc.ir.kernel import Kernel

PRELUDE = """\
#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <math.h>
#include <string.h>
#define EFFC_RESTRICT __restrict__
"""

_C_TYPES = {
    DType.F64: "double", DType.F32: "float", DType.I64: "int64_t", DType.I32: "int32_t",
    DType.I16: "int16_t", DType.I8: "int8_t", DType.U8: "uint8_t", DType.BOOL: "bool",
}


def c_type(dtype: DType) -> str:
    """The C type a buffer of ``dtype`` is passed as; f16/bf16 travel as raw ``uint16_t``."""
    if dtype in (DType.F16, DType.BF16):
        return "uint16_t"
    try:
        return _C_TYPES[dtype]
    except KeyError:
        raise LoweringError(f"no C type for {dtype}") from None


def c_name(kernel_name: str) -> str:
    """A C identifier for a kernel: ``effc_`` + the name with anything else replaced by ``_``."""
    return "effc_" + re.sub(r"[^A-Za-z0-9_]", "_", kernel_name)


def symbol_order(symbols: Iterable[sympy.Symbol]) -> list[sympy.Symbol]:
    """The size symbols in the order of the ``sizes`` array."""
    return sorted(set(symbols), key=lambda s: s.name)


# -- shared helpers: the scalar prelude, index printing, signatures ------------------------------

# f16/bf16 conversions are integer-only (exact whatever -ffp-contract does); min/max/div/mod
# helpers keep index arithmetic in int64 and correct for negative operands.
PRELUDE += r"""
#define EFFC_INLINE static inline __attribute__((always_inline, unused))
EFFC_INLINE float effc_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
EFFC_INLINE uint32_t effc_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
EFFC_INLINE float effc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu;
    if (em >= 0x7c00u) return effc_bits_f32(sign | 0x7f800000u | ((em & 0x3ffu) << 13));
    if (em >= 0x0400u) return effc_bits_f32(sign | ((em << 13) + 0x38000000u));
    return effc_bits_f32(sign | effc_f32_bits((float)em * 5.9604644775390625e-08f));
}
EFFC_INLINE uint16_t effc_f32_to_f16(float f) {  /* round to nearest even */
    uint32_t x = effc_f32_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) {
        if (ax <= 0x33000000u) return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, s = 126u - e;
        uint32_t r = m >> s, rem = m & ((1u << s) - 1u), half = 1u << (s - 1u);
        r += (rem > half) || (rem == half && (r & 1u));
        return (uint16_t)(sign | r);
    }
    uint32_t r = ax - 0x38000000u;
    return (uint16_t)(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
}
EFFC_INLINE float effc_bf16_to_f32(uint16_t h) { return effc_bits_f32((uint32_t)h << 16); }
EFFC_INLINE uint16_t effc_f32_to_bf16(float f) {  /* round to nearest even */
    uint32_t x = effc_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
EFFC_INLINE float effc_round_f16(float f) { return effc_f16_to_f32(effc_f32_to_f16(f)); }
EFFC_INLINE float effc_round_bf16(float f) { return effc_bf16_to_f32(effc_f32_to_bf16(f)); }
EFFC_INLINE int64_t effc_floordiv(int64_t a, int64_t b) {
    if (b == 0) return 0;
    if (b == -1) return (int64_t)(0u - (uint64_t)a);
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
EFFC_INLINE int64_t effc_truncdiv(int64_t a, int64_t b) {
    if (b == 0) return 0;
    if (b == -1) return (int64_t)(0u - (uint64_t)a);
    return a / b;
}
EFFC_INLINE int64_t effc_fmod_i(int64_t a, int64_t b) { return (b == 0 || b == -1) ? 0 : a % b; }
EFFC_INLINE int64_t effc_mod(int64_t a, int64_t b) {
    int64_t r = effc_fmod_i(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
EFFC_INLINE int64_t effc_min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
EFFC_INLINE int64_t effc_max_i64(int64_t a, int64_t b) { return a > b ? a : b; }
EFFC_INLINE int64_t effc_ipow(int64_t a, int64_t b) {
    if (b < 0) return a == 1 ? 1 : (a == -1 ? ((b & 1) ? -1 : 1) : 0);
    uint64_t r = 1, x = (uint64_t)a;
    while (b) { if (b & 1) r *= x; x *= x; b >>= 1; }
    return (int64_t)r;
}
EFFC_INLINE double effc_floordiv_f64(double a, double b) {  /* torch's div_floor_floating */
    if (b == 0) return a / b;
    double mod = fmod(a, b), div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1;
    if (div == 0) return copysign(0.0, a / b);
    double fl = floor(div);
    return (div - fl > 0.5) ? fl + 1.0 : fl;
}
EFFC_INLINE float effc_floordiv_f32(float a, float b) {
    if (b == 0) return a / b;
    float mod = fmodf(a, b), div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1;
    if (div == 0) return copysignf(0.0f, a / b);
    float fl = floorf(div);
    return (div - fl > 0.5f) ? fl + 1.0f : fl;
}
EFFC_INLINE double effc_remainder_f64(double a, double b) {
    double m = fmod(a, b);
    return (m != 0 && ((b < 0) != (m < 0))) ? m + b : m;
}
EFFC_INLINE float effc_remainder_f32(float a, float b) {
    float m = fmodf(a, b);
    return (m != 0 && ((b < 0) != (m < 0))) ? m + b : m;
}
EFFC_INLINE double effc_erfinv_f64(double y) {
    if (!(y > -1.0 && y < 1.0)) return (y == 1.0) ? INFINITY : ((y == -1.0) ? -INFINITY : NAN);
    double w = -log((1.0 - y) * (1.0 + y)), x;
    if (w < 5.0) {
        w -= 2.5;
        x = 2.81022636e-08; x = 3.43273939e-07 + x * w; x = -3.5233877e-06 + x * w;
        x = -4.39150654e-06 + x * w; x = 0.00021858087 + x * w; x = -0.00125372503 + x * w;
        x = -0.00417768164 + x * w; x = 0.246640727 + x * w; x = 1.50140941 + x * w;
    } else {
        w = sqrt(w) - 3.0;
        x = -0.000200214257; x = 0.000100950558 + x * w; x = 0.00134934322 + x * w;
        x = -0.00367342844 + x * w; x = 0.00573950773 + x * w; x = -0.0076224613 + x * w;
        x = 0.00943887047 + x * w; x = 1.00167406 + x * w; x = 2.83297682 + x * w;
    }
    x *= y;
    for (int k = 0; k < 2; k++)  /* Newton steps on erf(x) = y */
        x -= (erf(x) - y) / (1.1283791670955126 * exp(-x * x));
    return x;
}
"""

from .c_math import MATH_PRELUDE  # noqa: E402 - vectorisable exp/log/tanh/erf, after the bit helpers

PRELUDE += MATH_PRELUDE


_INT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def temp_type(dtype: DType) -> str:
    """The C type a temporary of ``dtype`` is held in: f16/bf16 compute in float."""
    return "float" if dtype in (DType.F16, DType.BF16) else c_type(dtype)


def size_name(symbol: sympy.Symbol) -> str:
    """The local variable that holds a size symbol's value (declared by ``size_locals``)."""
    return "sz_" + re.sub(r"[^A-Za-z0-9_]", "_", symbol.name)


def size_locals(symbols: Iterable[sympy.Symbol], used: Iterable[sympy.Symbol], indent: str = "    ") -> str:
    """``const int64_t sz_s0 = sizes[k];`` for each symbol of ``used``; ``(void)sizes;`` when none."""
    order = symbol_order(symbols)
    pos = {s: k for k, s in enumerate(order)}
    lines = []
    for s in symbol_order(used):
        if s not in pos:
            raise ValueError(f"size {s} is not among the program's symbols {order}")
        lines.append(f"{indent}const int64_t {size_name(s)} = sizes[{pos[s]}];")
    return "\n".join(lines or [f"{indent}(void)sizes;"]) + "\n"


_RESERVED = re.compile(r"^(buf\d+|[A-Z_][A-Z0-9_]*|[irt]\d+|[irt]\d+_\w*|sizes|scratch|acc|sz_\w*|[pnb]v?_\w*|pos|effc_\w*|auto|break|case|char|const|"
                       r"continue|default|do|double|else|enum|extern|float|for|goto|if|inline|int|long|"
                       r"register|restrict|return|short|signed|sizeof|static|struct|switch|typedef|union|"
                       r"unsigned|void|volatile|while|bool|true|false)$")


def buffer_params(kernel: "Kernel") -> dict[str, str]:
    """The C parameter name of each of ``kernel``'s buffers: its own name where that is a C
    identifier clear of the generator's locals, else ``buf<k>`` by position."""
    out = {}
    for k, b in enumerate(kernel.buffers):
        ok = _INT_NAME.match(b.name) and not _RESERVED.match(b.name)
        out[b.name] = b.name if ok else f"buf{k}"
    return out


def kernel_signature(kernel: "Kernel", inplace: Iterable[str] = ()) -> str:
    """``void effc_k(const float *restrict a0, float *restrict out0, const int64_t *restrict sizes,
    unsigned char *restrict scratch)``: the prototype of ``kernel``'s function; buffers named
    in ``inplace`` (an in-place input and output pair) lose ``restrict``."""
    skip, names = set(inplace), buffer_params(kernel)
    params = []
    for b in kernel.inputs + kernel.outputs:
        const = "const " if b.role == "in" else ""
        restrict = "" if b.name in skip else "EFFC_RESTRICT "
        params.append(f"{const}{c_type(b.dtype)} *{restrict}{names[b.name]}")
    params.append("const int64_t *EFFC_RESTRICT sizes")
    params.append("unsigned char *EFFC_RESTRICT scratch")
    return f"void {c_name(kernel.name)}({', '.join(params)})"


def _c_int(n: int) -> str:
    return str(n) if -2**31 < n < 2**31 else f"INT64_C({n})"


def c_expr(e: sympy.Basic, names: dict[sympy.Symbol, str], top: bool = True) -> str:
    """``e`` (an index, extent or mask expression) as int64 C; ``names`` maps every symbol to
    its C expression. ``floor(a/b)`` and ``Mod`` print as plain ``/`` and ``%`` where sympy
    proves the numerator non-negative, else through the floored helpers. A sum is bracketed
    unless ``top``."""
    def sub(x: sympy.Basic) -> str:
        return c_expr(x, names, top=False)

    def arg(x: sympy.Basic) -> str:
        return c_expr(x, names, top=True)
    if e.is_Integer:
        return _c_int(int(e))
    if e is sympy.true or e is sympy.false:
        return "1" if e is sympy.true else "0"
    if e.is_Float:
        return repr(float(e))
    if e.is_Rational:
        return f"((double){e.p} / {e.q})"
    if isinstance(e, sympy.Symbol):
        try:
            return names[e]
        except KeyError:
            raise ValueError(f"no C name for symbol {e}") from None
    if isinstance(e, sympy.Add):
        terms = e.as_ordered_terms()
        out = ""
        for t in terms:
            c, _ = t.as_coeff_Mul()
            if c.is_negative:
                out += f" - {sub(-t)}" if out else f"-{sub(-t)}"
            else:
                out += f" + {sub(t)}" if out else sub(t)
        return out if top else f"({out})"
    if isinstance(e, sympy.Mul):
        c, rest = e.as_coeff_Mul()
        if c == -1:
            return f"(-{sub(rest)})"
        return "*".join(sub(a) for a in e.args)
    if isinstance(e, sympy.Pow) and e.args[1].is_Integer and int(e.args[1]) > 0:
        return "(" + "*".join([sub(e.args[0])] * int(e.args[1])) + ")"
    if isinstance(e, (sympy.floor, sympy.ceiling)):
        num, den = sympy.fraction(sympy.together(e.args[0]))
        if isinstance(e, sympy.ceiling):
            num = -num
        plain = num.is_nonnegative and den.is_positive
        q = f"({sub(sympy.expand(num))} / {sub(den)})" if plain \
            else f"effc_floordiv({arg(sympy.expand(num))}, {arg(den)})"
        return f"(-{q})" if isinstance(e, sympy.ceiling) else q
    if isinstance(e, sympy.Mod):
        n, d = e.args
        if n.is_nonnegative and d.is_positive:
            return f"({sub(n)} % {sub(d)})"
        return f"effc_mod({arg(n)}, {arg(d)})"
    if isinstance(e, (sympy.Min, sympy.Max)):
        fn = "effc_min_i64" if isinstance(e, sympy.Min) else "effc_max_i64"
        out = arg(e.args[0])
        for a in e.args[1:]:
            out = f"{fn}({out}, {arg(a)})"
        return out
    if isinstance(e, sympy.And):
        return "(" + " && ".join(sub(a) for a in e.args) + ")"
    if isinstance(e, sympy.Or):
        return "(" + " || ".join(sub(a) for a in e.args) + ")"
    if isinstance(e, sympy.Not):
        return f"(!{sub(e.args[0])})"
    if isinstance(e, sympy.core.relational.Relational):
        return f"({sub(e.lhs)} {e.rel_op} {sub(e.rhs)})"
    raise ValueError(f"cannot print {e} ({type(e).__name__}) as C")
