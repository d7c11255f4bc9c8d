"""Convolution templates of the C backend that are not GEMMs (see c_templates.py).

[Note: C row convolution]
A convolution whose input operand is affine along the innermost output axis (the output
width ``ow``) and whose weight does not depend on it runs as rows: for each point of the outer
output axes (batch, channel, height; OpenMP over them) a row accumulator ``acc[OW]`` is
zeroed, then for every reduce point (input channel of the group, kh, kw) the weight is one
scalar and the input is a strided run,

    for (ow = lo; ow < hi; ow++) row[ow] += w * x[base + ow * sx];

which GCC vectorises over ``ow`` (contiguous for stride 1). The padding mask is not tested per
element: each of its relations is linear in ``ow`` and becomes a bound of ``[lo, hi)``;
relations not involving ``ow`` (the padded rows) skip the whole run. The epilogue then runs
along the finished row while it is in L1. It serves float64 depthwise convolutions (float32
ones get [Note: C depthwise convolution]) and the grouped and general convolutions
c_im2col.py declines; 1x1 stride-1
convolutions never get here (they are GEMMs).
The row buffer (one per thread) is carved from the caller's ``scratch``: ``conv_scratch``
bytes [Note: C template scratch].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy

from effc.ir.kernel import Kernel
from effc.ir.kernel_templates import stride

from .c_abi import buffer_params, kernel_signature
from .c_gemm import SCRATCH_HELPERS, Epilogue, align64, c_index, effc_threads, size_decls

CONV_HELPERS = SCRATCH_HELPERS + """
#ifndef EFFC_CONV_HELPERS
#define EFFC_CONV_HELPERS
static inline int64_t effc_fdiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int64_t effc_cdiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
#endif
"""


def mask_bounds(mask: sympy.Basic | None, ax: sympy.Symbol) -> tuple[list[str], list[str], list[str]] | None:
    """(lower bounds, upper bounds (exclusive), conditions without ``ax``) of ``ax`` under
    ``mask``, as C; None where a relation is not linear in ``ax`` with an integer slope."""
    lo: list[str] = []
    hi: list[str] = []
    other: list[str] = []
    if mask is None or mask is sympy.true:
        return lo, hi, other
    rels = mask.args if isinstance(mask, sympy.And) else (mask,)
    for r in rels:
        if not isinstance(r, sympy.core.relational.Relational):
            if ax in r.free_symbols:
                return None
            other.append(c_index(r))
            continue
        if isinstance(r, (sympy.GreaterThan, sympy.StrictLessThan)):
            f, ge = r.lhs - r.rhs, isinstance(r, sympy.GreaterThan)      # f >= 0 / f < 0
        elif isinstance(r, (sympy.LessThan, sympy.StrictGreaterThan)):
            f, ge = r.rhs - r.lhs, isinstance(r, sympy.LessThan)         # -f >= 0 / -f < 0
        else:
            return None
        f = sympy.expand(f)
        if ax not in f.free_symbols:
            other.append(c_index(r))
            continue
        a = stride(f, ax)
        if a is None or not a.is_Integer or a == 0:
            return None
        b = c_index(sympy.expand(f - a * ax))
        a = int(a)
        if ge and a > 0:
            lo.append(f"effc_cdiv(-({b}), {a})")
        elif ge:
            hi.append(f"effc_fdiv({b}, {-a}) + 1")
        elif a > 0:
            hi.append(f"effc_cdiv(-({b}), {a})")
        else:
            lo.append(f"effc_fdiv({b}, {-a}) + 1")
    return lo, hi, other


def _row_form(kernel: Kernel) -> tuple[Any, ...] | None:
    """(input operand, weight operand, input index, its stride along the output width, the
    width's bounds) of a row convolution, or None where the kernel does not have that form."""
    from effc.ir import DType
    t = kernel.template
    if t is None or t.op != "conv" or not kernel.domain or len(t.operands) != 2:
        return None
    if t.dtype not in (DType.F32, DType.F64):
        return None
    if any(kernel.buffer(o.buffer).dtype is not t.dtype for o in t.operands):
        return None
    last = kernel.domain[-1].symbol
    x, w = t.operands
    if w.mask is not None or last in sympy.sympify(w.index).free_symbols:
        return None
    xi = sympy.sympify(x.index)
    sx = stride(xi, last)
    if sx is None or any(a.symbol in sx.free_symbols for a in kernel.domain + kernel.reduce):
        return None
    b = mask_bounds(x.mask, last)
    if b is None:
        return None
    return x, w, xi, sx, b


def _elem_bytes(kernel: Kernel) -> int:
    from effc.ir import DType
    assert kernel.template is not None
    return 8 if kernel.template.dtype is DType.F64 else 4


def conv_scratch(kernel: Kernel, threads: int | None = None) -> sympy.Expr | None:
    """Scratch bytes of ``conv_function(kernel, ..)``: one row accumulator per thread (64-byte
    aligned), or None where the kernel is not a row convolution. The depthwise convolution
    [Note: C depthwise convolution] needs the same."""
    if _depthwise_form(kernel) is None and _row_form(kernel) is None:
        return None
    row = sympy.Max(sympy.sympify(kernel.domain[-1].size), 1) * _elem_bytes(kernel)
    return (threads or effc_threads()) * align64(row)


def conv_function(kernel: Kernel, symbols: Any, epilogue: Epilogue, threads: int | None = None) -> str | None:
    """The row convolution [Note: C row convolution] of a float conv template, or None where
    its operands do not have that form. It uses at most ``conv_scratch(kernel, threads)`` bytes
    of ``scratch``. A float32 depthwise convolution gets the dedicated kernel
    [Note: C depthwise convolution] instead."""
    dw = depthwise_conv_function(kernel, symbols, epilogue, threads)
    if dw is not None:
        return dw
    form = _row_form(kernel)
    if form is None:
        return None
    x, w, xi, sx, (lo, hi, other) = form
    last = kernel.domain[-1].symbol
    T = "double" if _elem_bytes(kernel) == 8 else "float"
    ow = c_index(kernel.domain[-1].size)
    outer, red = kernel.domain[:-1], kernel.reduce
    names = buffer_params(kernel)
    L = [CONV_HELPERS + f"{kernel_signature(kernel)} {{", *size_decls(kernel, symbols),
         f"    const int64_t OW = {ow};",
         f"    const int64_t ROW_BYTES = effc_align64((OW > 0 ? OW : 1) * {_elem_bytes(kernel)});",
         f"    #pragma omp parallel num_threads(effc_team({threads or effc_threads()}))",
         "    {",
         f"        {T} *EFFC_RESTRICT ROW = ({T} *)(scratch + (int64_t)effc_thread_id() * ROW_BYTES);"]
    ind = "        "
    if outer:
        L.append(f"{ind}#pragma omp for collapse({len(outer)}) schedule(static)")
    for a in outer:
        L.append(f"{ind}for (int64_t {a.name} = 0; {a.name} < {c_index(a.size)}; {a.name}++)")
    L.append(f"{ind}{{")
    body = ind + "    "
    L.append(f"{body}for (int64_t J = 0; J < OW; J++) ROW[J] = 0;")
    for a in red:
        L.append(f"{body}for (int64_t {a.name} = 0; {a.name} < {c_index(a.size)}; {a.name}++)")
    L.append(f"{body}{{")
    inner = body + "    "
    if other:
        L.append(f"{inner}if (!({' && '.join(f'({c}) ' for c in other)})) continue;")
    L.append(f"{inner}int64_t LO = 0, HI = OW;")
    L += [f"{inner}{{ const int64_t V = {e}; if (V > LO) LO = V; }}" for e in lo]
    L += [f"{inner}{{ const int64_t V = {e}; if (V < HI) HI = V; }}" for e in hi]
    L += [f"{inner}const {T} WV = {names[w.buffer]}[{c_index(w.index)}];",
          f"{inner}const int64_t XB = {c_index(xi.subs(last, 0))}, SX = {c_index(sx)};",
          f"{inner}if (SX == 1) {{",
          f"{inner}    for (int64_t J = LO; J < HI; J++) ROW[J] += WV * {names[x.buffer]}[XB + J];",
          f"{inner}}} else {{",
          f"{inner}    for (int64_t J = LO; J < HI; J++) ROW[J] += WV * {names[x.buffer]}[XB + J * SX];",
          f"{inner}}}",
          f"{body}}}",
          f"{body}for (int64_t {last.name} = 0; {last.name} < OW; {last.name}++) {{",
          f"{body}    const {T} acc = ROW[{last.name}];",
          epilogue({a.name: a.name for a in kernel.domain}, body + "    ").rstrip("\n"),
          f"{body}}}",
          f"{ind}}}",
          "    }",
          "}", ""]
    return "\n".join(L)


# -- depthwise convolution ---------------------------------------------------------------------

"""[Note: C depthwise convolution]
A float32 2-D convolution with one input channel per group (``groups == C_in``, ``C_out = M *
C_in`` for a channel multiplier M >= 1; MobileNet's 3x3 layers) runs a dedicated direct
kernel instead of the row convolution. It is recognised from the template's attributes and
buffer shapes, and accepted only where the operands' indices are exactly the dense NCHW forms
(``x[n, co / M, oh*SH + kh*DH - PH, ow*SW + kw*DW - PW]``, ``w[co, 0, kh, kw]``) and the mask
holds nothing but the padding bounds. OpenMP runs over (batch, output channel, output row),
collapsed, statically scheduled (so a thread's rows are consecutive rows of few planes). Per
output row:
- rows whose KH taps all lie inside the input (``T <= oh < B``, found once per call): the
  taps' row pointers and the KH*KW weights are hoisted into locals and the output row is
  split into a left border ``[0, L)``, an interior ``[L, R)`` and a right border ``[R, OW)``,
  with L and R the first and past-last columns whose KW taps are all inside the row. The
  interior is one ``#pragma omp simd`` loop over output columns with the taps unrolled and
  no bounds tests (stride 1: contiguous loads; other strides: strided loads, which GCC turns
  into permutes of contiguous ones); the borders (ceil(PW/SW) columns or so) test each tap;
- the padded top and bottom rows accumulate over the valid taps only, each tap a run over its
  valid column range, as the row convolution does.
Padding is never multiplied in (a weight of inf gives what torch gives). The epilogue then
runs along the finished row (``#pragma omp simd``) while it is in L1. The row (OW floats per
thread) is the only scratch, the same bound as the row convolution's (``conv_scratch``).
Kernels with more than ``DEPTHWISE_MAX_TAPS`` taps keep the row convolution.
"""

DEPTHWISE_MAX_TAPS = 64


@dataclass(frozen=True)
class _Depthwise:
    x: Any
    w: Any
    c: int                      # input channels (= groups)
    m: int                      # channel multiplier
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    h: sympy.Expr               # input height, width
    wd: sympy.Expr


def _ge_zero(r: Any) -> sympy.Expr | None:
    """An integer relation as ``f`` with ``f >= 0`` (expanded), None where not a relation."""
    if isinstance(r, sympy.GreaterThan):
        f = r.lhs - r.rhs
    elif isinstance(r, sympy.StrictGreaterThan):
        f = r.lhs - r.rhs - 1
    elif isinstance(r, sympy.LessThan):
        f = r.rhs - r.lhs
    elif isinstance(r, sympy.StrictLessThan):
        f = r.rhs - r.lhs - 1
    else:
        return None
    return sympy.expand(f)


def _depthwise_form(kernel: Kernel) -> _Depthwise | None:
    from effc.ir import DType
    t = kernel.template
    if t is None or t.op != "conv" or t.dtype is not DType.F32 or len(t.operands) != 2:
        return None
    if any(kernel.buffer(o.buffer).dtype is not DType.F32 for o in t.operands):
        return None
    attrs = dict(t.attrs)
    try:
        st, pd, dl = (tuple(int(v) for v in attrs[k]) for k in ("stride", "padding", "dilation"))
        groups = int(attrs["groups"])
    except (KeyError, TypeError, ValueError):
        return None
    if len(st) != 2 or len(pd) != 2 or len(dl) != 2 or min(st) < 1 or min(dl) < 1 or min(pd) < 0:
        return None
    if len(kernel.domain) != 4 or len(kernel.reduce) != 3:
        return None
    n, co, oh, ow = (a.symbol for a in kernel.domain)
    rh, rw = (a.symbol for a in kernel.reduce[1:])
    if sympy.sympify(kernel.reduce[0].size) != 1:
        return None
    for x, w in (t.operands, t.operands[::-1]):
        xs, ws = kernel.buffer(x.buffer).shape, kernel.buffer(w.buffer).shape
        if len(xs) != 4 or len(ws) != 4 or (w.mask is not None and w.mask is not sympy.true):
            continue
        ws_ = [sympy.sympify(d) for d in ws]
        if not all(d.is_Integer for d in ws_):
            continue
        cout, one, kh, kw = (int(d) for d in ws_)
        c = sympy.sympify(xs[1])
        if one != 1 or not c.is_Integer or int(c) != groups or groups < 1 or cout % groups != 0:
            continue
        c = int(c)
        m = cout // c
        if sympy.sympify(kernel.domain[1].size) != cout or [sympy.sympify(a.size) for a in kernel.reduce[1:]] != [kh, kw]:
            continue
        if kh * kw > DEPTHWISE_MAX_TAPS:
            continue
        h, wd = sympy.sympify(xs[2]), sympy.sympify(xs[3])
        ih = oh * st[0] + rh * dl[0] - pd[0]
        iw = ow * st[1] + rw * dl[1] - pd[1]
        cin = 0 if c == 1 else co if m == 1 else sympy.floor(co / m)
        want_x = ((n * c + cin) * h + ih) * wd + iw
        want_w = co * (kh * kw) + rh * kw + rw
        ones = {a.symbol: 0 for a in kernel.domain + kernel.reduce if sympy.sympify(a.size) == 1}
        ih, iw, want_x, want_w = (sympy.sympify(e).subs(ones) for e in (ih, iw, want_x, want_w))
        xi = sympy.sympify(x.index).subs(ones)
        wi = sympy.sympify(w.index).subs(ones)
        if sympy.expand(xi - want_x) != 0 or sympy.expand(wi - want_w) != 0:
            continue
        if x.mask is not None and x.mask is not sympy.true:
            mask = x.mask.subs(ones)
            allowed = {sympy.expand(ih), sympy.expand(iw), sympy.expand(h - 1 - ih), sympy.expand(wd - 1 - iw)}
            rels = mask.args if isinstance(mask, sympy.And) else (mask,)
            if mask is sympy.false or any(_ge_zero(r) not in allowed for r in rels):
                continue
        return _Depthwise(x, w, c, m, kh, kw, st, pd, dl, h, wd)  # type: ignore[arg-type]
    return None


def depthwise_conv_function(kernel: Kernel, symbols: Any, epilogue: Epilogue, threads: int | None = None
                            ) -> str | None:
    """The depthwise convolution [Note: C depthwise convolution] of a float32 conv template, or
    None where the kernel does not have that form. It uses at most ``conv_scratch(kernel,
    threads)`` bytes of ``scratch``."""
    f = _depthwise_form(kernel)
    if f is None:
        return None
    names = buffer_params(kernel)
    X, Wt = names[f.x.buffer], names[f.w.buffer]
    n, co, oh, ow = (a.name for a in kernel.domain)
    (SH, SW), (PH, PW), (DH, DW) = f.stride, f.padding, f.dilation
    KH, KW, C, M = f.kh, f.kw, f.c, f.m
    cin = co if M == 1 else f"({co} / {M})"

    def border(lo: str, hi: str) -> list[str]:  # output columns [lo, hi) of a full row, each tap tested
        return [f"                for (int64_t J = {lo}; J < {hi}; J++) {{",
                "                    float a = 0.0f;",
                f"                    for (int64_t KX = 0; KX < {KW}; KX++) {{",
                f"                        const int64_t IW = J * {SW} + KX * {DW} - {PW};",
                "                        if (IW < 0 || IW >= WI) continue;",
                *[f"                        a += WP[{kh * KW} + KX] * X{kh}[IW];" for kh in range(KH)],
                "                    }",
                "                    ROW[J] = a;",
                "                }"]

    taps = [f"X{kh}[B_ + {kw * DW}]" for kh in range(KH) for kw in range(KW)]
    wts = [f"W{kh}_{kw}" for kh in range(KH) for kw in range(KW)]
    sumexpr = [f"                    float a = {wts[0]} * {taps[0]};",
               *[f"                    a += {w_} * {x_};" for w_, x_ in zip(wts[1:], taps[1:])]]
    L = [CONV_HELPERS + f"{kernel_signature(kernel)} {{", *size_decls(kernel, symbols),
         f"    const int64_t NB = {c_index(kernel.domain[0].size)}, HI = {c_index(f.h)}, WI = {c_index(f.wd)};",
         f"    const int64_t OH = {c_index(kernel.domain[2].size)}, OW = {c_index(kernel.domain[3].size)};",
         "    const int64_t ROW_BYTES = effc_align64((OW > 0 ? OW : 1) * 4);",
         # rows [T, B) and columns [L, R) whose taps all lie inside the input
         f"    int64_t T_ = effc_cdiv({PH}, {SH}), B_ROWS = effc_fdiv(HI - 1 - {(KH - 1) * DH} + {PH}, {SH}) + 1;",
         f"    int64_t L_ = effc_cdiv({PW}, {SW}), R_ = effc_fdiv(WI - 1 - {(KW - 1) * DW} + {PW}, {SW}) + 1;",
         "    if (T_ > OH) T_ = OH;",
         "    if (B_ROWS > OH) B_ROWS = OH;",
         "    if (B_ROWS < T_) B_ROWS = T_;",
         "    if (L_ > OW) L_ = OW;",
         "    if (R_ > OW) R_ = OW;",
         "    if (R_ < L_) R_ = L_;",
         f"    #pragma omp parallel num_threads(effc_team({threads or effc_threads()}))",
         "    {",
         "        float *EFFC_RESTRICT ROW = (float *)(scratch + (int64_t)effc_thread_id() * ROW_BYTES);",
         "        #pragma omp for collapse(3) schedule(static)",
         f"        for (int64_t {n} = 0; {n} < NB; {n}++)",
         f"        for (int64_t {co} = 0; {co} < {C * M}; {co}++)",
         f"        for (int64_t {oh} = 0; {oh} < OH; {oh}++) {{",
         f"            const float *EFFC_RESTRICT XP = {X} + ({n} * {C} + {cin}) * HI * WI;",
         f"            const float *EFFC_RESTRICT WP = {Wt} + {co} * {KH * KW};",
         f"            if ({oh} >= T_ && {oh} < B_ROWS) {{",
         *[f"                const float *EFFC_RESTRICT X{kh} = XP + ({oh} * {SH} + {kh * DH - PH}) * WI;"
           for kh in range(KH)],
         *[f"                const float {wts[i]} = WP[{i}];" for i in range(KH * KW)],
         *border("0", "L_"),
         "                #pragma omp simd",
         "                for (int64_t J = L_; J < R_; J++) {",
         f"                    const int64_t B_ = J * {SW} - {PW};",
         *sumexpr,
         "                    ROW[J] = a;",
         "                }",
         *border("R_", "OW"),
         "            } else {",
         "                for (int64_t J = 0; J < OW; J++) ROW[J] = 0.0f;",
         f"                for (int64_t KY = 0; KY < {KH}; KY++) {{",
         f"                    const int64_t IH = {oh} * {SH} + KY * {DH} - {PH};",
         "                    if (IH < 0 || IH >= HI) continue;",
         "                    const float *EFFC_RESTRICT XR = XP + IH * WI;",
         f"                    for (int64_t KX = 0; KX < {KW}; KX++) {{",
         f"                        const float WV = WP[KY * {KW} + KX];",
         f"                        int64_t LO = effc_cdiv({PW} - KX * {DW}, {SW}), HIW = effc_fdiv(WI - 1 - KX * {DW} + {PW}, {SW}) + 1;",
         "                        if (LO < 0) LO = 0;",
         "                        if (HIW > OW) HIW = OW;",
         "                        #pragma omp simd",
         f"                        for (int64_t J = LO; J < HIW; J++) ROW[J] += WV * XR[J * {SW} + KX * {DW} - {PW}];",
         "                    }",
         "                }",
         "            }",
         "            #pragma omp simd",
         f"            for (int64_t {ow} = 0; {ow} < OW; {ow}++) {{",
         f"                const float acc = ROW[{ow}];",
         epilogue({a.name: a.name for a in kernel.domain}, "                ").rstrip("\n"),
         "            }",
         "        }",
         "    }",
         "}", ""]
    return "\n".join(L)
