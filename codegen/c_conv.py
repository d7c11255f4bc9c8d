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
along the finished row while it is in L1. This is the depthwise kernel (memory-bound: one
weight per run, so it streams the input once per tap) and also serves grouped and general
convolutions of any stride, padding and dilation, where implicit GEMM would be faster; 1x1
stride-1 convolutions never get here (they are GEMMs).
The row buffer (one per thread) is carved from the caller's ``scratch``: ``conv_scratch``
bytes [Note: C template scratch].
"""

from __future__ import annotations

from typing import Any

import sympy

from effc.ir.kernel import Kernel
from effc.ir.kernel_templates import stride

from .c_abi import buffer_params, c_type, kernel_signature
from .c_gemm import SCRATCH_HELPERS, Epilogue, align64, c_index, effc_threads, size_decls

_HELPERS = SCRATCH_HELPERS + """
#ifndef EFFC_CONV_HELPERS
#define EFFC_CONV_HELPERS
static inline int64_t effc_fdiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int64_t effc_cdiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
#endif
"""


def _bounds(mask: sympy.Basic | None, ax: sympy.Symbol) -> tuple[list[str], list[str], list[str]] | None:
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
    b = _bounds(x.mask, last)
    if b is None:
        return None
    return x, w, xi, sx, b


def _elem_bytes(kernel: Kernel) -> int:
    from effc.ir import DType
    assert kernel.template is not None
    return 8 if kernel.template.dtype is DType.F64 else 4


def conv_scratch(kernel: Kernel, threads: int | None = None) -> sympy.Expr | None:
    """Scratch bytes of ``conv_function(kernel, ..)``: one row accumulator per thread (64-byte
    aligned), or None where the kernel is not a row convolution."""
    if _row_form(kernel) is None:
        return None
    row = sympy.Max(sympy.sympify(kernel.domain[-1].size), 1) * _elem_bytes(kernel)
    return (threads or effc_threads()) * align64(row)


def conv_function(kernel: Kernel, symbols: Any, epilogue: Epilogue, threads: int | None = None) -> str | None:
    """The row convolution [Note: C row convolution] of a float conv template, or None where
    its operands do not have that form. It uses at most ``conv_scratch(kernel, threads)`` bytes
    of ``scratch``."""
    form = _row_form(kernel)
    if form is None:
        return None
    x, w, xi, sx, (lo, hi, other) = form
    last = kernel.domain[-1].symbol
    T = "double" if _elem_bytes(kernel) == 8 else "float"
    ow = c_index(kernel.domain[-1].size)
    outer, red = kernel.domain[:-1], kernel.reduce
    names = buffer_params(kernel)
    L = [_HELPERS + f"{kernel_signature(kernel)} {{", *size_decls(kernel, symbols),
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
