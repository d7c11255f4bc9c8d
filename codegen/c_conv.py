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
ones get [Note: C depthwise convolution]) and grouped and general convolutions of any
stride, padding and dilation, where implicit GEMM would be faster; 1x1 stride-1
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

from .c_abi import buffer_params, c_expr, c_type, kernel_signature, size_name
from .c_gemm import (SCRATCH_HELPERS, Epilogue, PackLayout, Tiles, align64, c_index, core_source, effc_threads,
                     gemm_tiles, host_caches, size_decls)

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


# -- implicit GEMM through an im2col panel -----------------------------------------------------

"""[Note: C im2col convolution]
A float32 convolution with several output channels per group (3x3, 7x7, strided or padded
1x1, dilated; not depthwise) runs as one GEMM per (batch point, group):

    C[co, p] = sum_k W[g, co, k] * X_col[k, p],    k = (ci, kh, kw) flattened, p = output pixel

with the GEMM core of c_gemm.py [Note: C GEMM template] (``core_source``: packing of the
weight into MR-row panels, the MR x NR micro-kernel). Work items are (batch point, group,
tile of NC consecutive output pixels, span of output channels; the span is all of them unless
threads would idle), one per OpenMP iteration. An item walks K in KC blocks; per block it
gathers its im2col panel straight into the micro-kernel's packed B layout (NR-pixel panels,
``kc x NR`` k-major, zero where the window falls in the padding and past the tile) in its
thread's scratch, then runs the micro-kernel over its channel span into a per-thread C tile.
The gather walks "segments", pieces of the tile that lie in one output row and one NR panel
(computed once per item); for each k and segment the padding mask becomes a range of the
output width (as in the row convolution), so the copy is a strided run with zeros either
side. After the last K block the epilogue runs row by row over the C tile, ``#pragma omp
simd`` along each segment (contiguous output width). A constant weight may arrive packed
(``im2col_prepack``, the layout of [Note: GEMM prepacked operands] with the groups as batch);
otherwise each item packs its weight blocks. Scratch (``im2col_scratch_bytes``): per thread
the B panel, the C tile, the packed weight block and the segment table, 64-byte aligned parts.
"""

IM2COL_MIN_CHANNELS = 4  # fewer output channels per group: the row convolution is better


@dataclass(frozen=True)
class _Im2col:
    x: Any                     # the input operand
    w: Any                     # the weight operand
    co: Any                    # the output-channel axis
    q: sympy.Expr              # output channels per group
    groups: sympy.Expr
    batch: tuple[Any, ...]     # domain axes before ``co``
    pix: tuple[Any, ...]       # domain axes after ``co`` (output pixels), >= 1
    xi: sympy.Expr             # x's index with floor(co / q) as ``gsym``
    gsym: sympy.Symbol
    sx: sympy.Expr             # x's stride along the innermost pixel axis
    bounds: tuple[list[str], list[str], list[str]]
    w_off: sympy.Expr
    a_m: sympy.Expr            # the weight's stride along co
    a_k: sympy.Expr            # ... along flattened k
    k: sympy.Expr


def _affine(e: sympy.Expr, axes: list[sympy.Symbol]) -> dict[sympy.Symbol, sympy.Expr] | None:
    """The stride of ``e`` along each of ``axes`` where ``e`` is affine in them (strides free
    of every axis), else None."""
    out = {}
    for a in axes:
        s = stride(e, a)
        if s is None or any(b in s.free_symbols for b in axes):
            return None
        out[a] = s
    off = e.subs({a: 0 for a in axes})
    if sympy.expand(e - off - sum((out[a] * a for a in axes), sympy.Integer(0))) != 0:
        return None
    return out


def _im2col_form(kernel: Kernel) -> _Im2col | None:
    from effc.ir import DType
    t = kernel.template
    if t is None or t.op != "conv" or t.dtype is not DType.F32 or len(t.operands) != 2 or not kernel.reduce:
        return None
    if any(kernel.buffer(o.buffer).dtype is not DType.F32 for o in t.operands):
        return None
    dom = [a.symbol for a in kernel.domain]
    red = [a.symbol for a in kernel.reduce]
    for x, w in (t.operands, t.operands[::-1]):
        if w.mask is not None and w.mask is not sympy.true:
            continue
        wi = sympy.expand(sympy.sympify(w.index))
        ws = _affine(wi, dom + red)
        if ws is None:
            continue
        cos = [a for a in kernel.domain if ws[a.symbol] != 0]
        if len(cos) != 1:
            continue
        co = cos[0]
        pos = kernel.domain.index(co)
        pix = tuple(kernel.domain[pos + 1:])
        if not pix:
            continue
        size = sympy.sympify(co.size)
        xi = sympy.sympify(x.index)
        gsym = sympy.Symbol("i_group", integer=True, nonnegative=True)
        floors = xi.atoms(sympy.floor)
        q = size
        if floors:
            qs = set()
            for f in floors:
                num, den = sympy.fraction(sympy.together(f.args[0]))
                if num != co.symbol or not den.is_Integer:
                    return None
                qs.add(den)
            if len(qs) != 1:
                return None
            q = qs.pop()
            if not size.is_Integer or int(size) % int(q) != 0:
                return None
            xi = xi.xreplace({f: gsym for f in floors})
        xi = sympy.expand(xi)
        if co.symbol in xi.free_symbols:
            return None
        mask = x.mask if x.mask is not None and x.mask is not sympy.true else None
        if mask is not None and (co.symbol in mask.free_symbols or mask.atoms(sympy.floor, sympy.Mod)):
            return None
        groups = sympy.simplify(size / q)
        if q.is_Integer and int(q) < IM2COL_MIN_CHANNELS:
            return None
        xs = _affine(xi, dom + red + [gsym])
        if xs is None:
            return None
        last = pix[-1].symbol
        if mask is not None:  # width bounds are computed per k, before the rows are known
            rels = mask.args if isinstance(mask, sympy.And) else (mask,)
            if any(last in r.free_symbols and r.free_symbols & {a.symbol for a in pix[:-1]} for r in rels):
                return None
        b = _bounds(mask, last)
        if b is None:
            return None
        # the weight: [co, k] with k (the reduce axes) flattening into one stride
        real = [ax for ax in kernel.reduce if sympy.sympify(ax.size) != 1]  # size-1 axes are always 0
        a_k = ws[real[-1].symbol] if real else sympy.Integer(1)
        inner = sympy.Integer(1)
        for ax in reversed(real):
            if sympy.expand(ws[ax.symbol] - inner * a_k) != 0:
                return None
            inner = inner * sympy.sympify(ax.size)
        if any(ws[a.symbol] != 0 for a in kernel.domain if a is not co):
            return None
        w_off = wi.subs({s: 0 for s in dom + red})
        return _Im2col(x, w, co, q, groups, tuple(kernel.domain[:pos]), pix, xi, gsym, xs[last], b,
                       w_off, ws[co.symbol], a_k, inner)
    return None


def _guess(e: Any) -> int:
    e = sympy.sympify(e)
    return int(e) if e.is_Integer else 512


def _pixels(f: _Im2col) -> sympy.Expr:
    return sympy.prod([sympy.sympify(a.size) for a in f.pix])


def im2col_tiles(kernel: Kernel) -> Tiles | None:
    """MR/NR/KC from ``gemm_tiles`` on (channels per group, pixels, K); NC (pixels per tile)
    capped so that the C tile (all channels of a group) and the B panel share half of L2."""
    f = _im2col_form(kernel)
    if f is None:
        return None
    m, n, k = _guess(f.q), _guess(_pixels(f)), _guess(f.k)
    t = gemm_tiles(m, n, k)
    mp = -(-m // t.mr) * t.mr
    cap = host_caches().l2 // 2 // ((mp + t.kc) * 4) // t.nr * t.nr
    nc = max(t.nr, min(t.nc, cap, -(-n // t.nr) * t.nr))
    return Tiles(t.width, t.mr, t.nr, t.mc, nc, t.kc)


def _prepacked(kernel: Kernel, f: _Im2col, constant_inputs: Any) -> int | None:
    """The position of the weight among the inputs where it arrives packed, else None."""
    names = [b.name for b in kernel.inputs]
    if f.w.buffer not in names or names.index(f.w.buffer) not in set(constant_inputs):
        return None
    if f.x.buffer == f.w.buffer:
        return None
    if not all(sympy.sympify(e).is_Integer for e in (f.q, f.groups, f.k, f.w_off, f.a_m, f.a_k)):
        return None
    return names.index(f.w.buffer)


def im2col_prepack(kernel: Kernel, constant_inputs: Any = frozenset()) -> dict[int, PackLayout]:
    """{weight position: its packed layout} where ``im2col_conv_function(kernel, ..,
    constant_inputs)`` reads the (constant) weight packed; else empty."""
    f = _im2col_form(kernel)
    if f is None:
        return {}
    pos = _prepacked(kernel, f, constant_inputs)
    if pos is None:
        return {}
    t = im2col_tiles(kernel)
    assert t is not None
    k = int(f.k)
    g, q = int(f.groups), int(f.q)
    batch = ((g, q * int(f.a_m)),) if g > 1 else ()
    return {pos: PackLayout(q, k, t.kc if k >= t.kc else max(k, 1), t.mr, int(f.w_off), int(f.a_k), int(f.a_m), batch)}


def im2col_scratch_bytes(kernel: Kernel, constant_inputs: Any = frozenset(), threads: int | None = None
                         ) -> sympy.Expr | None:
    """Scratch bytes of ``im2col_conv_function(kernel, .., constant_inputs)``, None where the
    kernel has no im2col form [Note: C im2col convolution]."""
    f = _im2col_form(kernel)
    if f is None:
        return None
    t = im2col_tiles(kernel)
    assert t is not None
    kc = sympy.Min(t.kc, sympy.Max(f.k, 1))
    mp = sympy.ceiling(f.q / t.mr) * t.mr
    nc = sympy.Min(t.nc, sympy.ceiling(_pixels(f) / t.nr) * t.nr)
    pb = align64(kc * nc * 4)
    ct = align64(mp * nc * 4)
    pa = 0 if _prepacked(kernel, f, constant_inputs) is not None else align64(sympy.Min(t.mc, mp) * kc * 4)
    seg = align64(nc * (len(f.pix) + 3) * 8)
    return (threads or effc_threads()) * (pb + ct + pa + seg)


def im2col_conv_function(kernel: Kernel, symbols: Any, epilogue: Epilogue, constant_inputs: Any = frozenset(),
                         threads: int | None = None) -> str | None:
    """The im2col convolution [Note: C im2col convolution] of a float32 conv template, or None
    where the kernel does not have that form. It uses at most ``im2col_scratch_bytes(kernel,
    constant_inputs, threads)`` bytes of ``scratch``; the weight arrives packed where
    ``im2col_prepack(kernel, constant_inputs)`` names it."""
    f = _im2col_form(kernel)
    if f is None:
        return None
    t = im2col_tiles(kernel)
    assert t is not None
    pre = _prepacked(kernel, f, constant_inputs) is not None
    names = buffer_params(kernel)
    tag = f"{t.mr}x{t.nr}w{t.width}"
    mr, nr = t.mr, t.nr
    X, W = names[f.x.buffer], names[f.w.buffer]
    cnames: dict[sympy.Symbol, str] = {a.symbol: a.name for a in kernel.domain + kernel.reduce}
    cnames[f.gsym] = "GI"

    def cx(e: Any) -> str:
        e = sympy.sympify(e)
        nm = dict(cnames)
        for s in e.free_symbols:
            nm.setdefault(s, size_name(s))
        return c_expr(e, nm)

    pix, last = f.pix, f.pix[-1]
    outer = pix[:-1]
    SW = len(outer) + 3  # segment: j, outer pixel coords..., ow, len
    nb_e = sympy.prod([sympy.sympify(a.size) for a in f.batch]) if f.batch else sympy.Integer(1)
    lo, hi, other = f.bounds
    # batch axes from the flat batch index BT
    bsplit = []
    inner = "1"
    for a in reversed(f.batch):
        bsplit.insert(0, f"        const int64_t {a.name} = (BT / ({inner})) % ({cx(a.size)});")
        inner = f"({inner}) * ({cx(a.size)})"
    # reduce axes from the flat k
    rsplit = []
    inner = "1"
    for a in reversed(kernel.reduce):
        rsplit.insert(0, f"                    const int64_t {a.name} = (KK_ / ({inner})) % ({cx(a.size)});")
        inner = f"({inner}) * ({cx(a.size)})"
    xb = cx(f.xi.subs(last.symbol, 0))
    sx = cx(f.sx)
    seg_read = [f"                        const int64_t {a.name} = SG[{1 + i}];" for i, a in enumerate(outer)]
    carry = []
    for i in reversed(range(len(outer))):
        a = outer[i]
        carry.append(f"                        if (++PC_[{i}] < {cx(a.size)}) break;")
        carry.append(f"                        PC_[{i}] = 0;")
    axis_map = {a.name: a.name for a in f.batch}
    axis_map[f.co.name] = "(GI * Q + EM)"
    for a in outer:
        axis_map[a.name] = a.name
    axis_map[last.name] = "(OW0 + JJ)"
    L = [
        core_source(t) + _HELPERS,
        f"{kernel_signature(kernel)} {{", *size_decls(kernel, symbols),
        f"    const int64_t Q = {cx(f.q)}, NG = {cx(f.groups)}, K = {cx(f.k)}, NB = {cx(nb_e)};",
        f"    const int64_t P = {cx(_pixels(f))}, OW = {cx(last.size)};",
        f"    const int64_t A_M = {cx(f.a_m)}, A_K = {cx(f.a_k)};",
        "    (void)A_M; (void)A_K;",
        "    if (Q <= 0 || P <= 0 || NB <= 0 || NG <= 0) return;",
        f"    const int64_t KC = K < {t.kc} ? (K > 0 ? K : 1) : {t.kc};",
        "    const int64_t NKB = K > 0 ? (K + KC - 1) / KC : 1;",
        f"    const int64_t MPA = (Q + {mr - 1}) / {mr} * {mr};",
        f"    const int NT = effc_team({threads or effc_threads()});",
        # pixel tiles, then channel spans, until every thread has a fair share
        f"    int64_t NC = {t.nc} < (P + {nr - 1}) / {nr} * {nr} ? {t.nc} : (P + {nr - 1}) / {nr} * {nr};",
        "    int64_t NJC = (P + NC - 1) / NC;",
        "    if (NT > 1 && (NB * NG * NJC) % NT != 0 && NB * NG * NJC < 8 * NT && NB * NG * NJC >= NT) {",
        "        const int64_t WANT = (NB * NG * NJC + NT - 1) / NT * NT;",
        "        const int64_t NJ = (WANT / (NB * NG) > NJC ? WANT / (NB * NG) : NJC);",
        f"        NC = ((P + NJ - 1) / NJ + {nr - 1}) / {nr} * {nr};",
        "        NJC = (P + NC - 1) / NC;",
        "    }",
        "    int64_t SPAN = MPA, NIC = 1;",
        f"    if (NT > 1 && NB * NG * NJC < NT && MPA > {mr}) {{",
        "        const int64_t NI = (NT + NB * NG * NJC - 1) / (NB * NG * NJC);",
        f"        SPAN = ((MPA + NI - 1) / NI + {mr - 1}) / {mr} * {mr};",
        "        NIC = (MPA + SPAN - 1) / SPAN;",
        "    }",
        f"    const int64_t LDC = (NC + {nr - 1}) / {nr} * {nr};",
        "    const int64_t PB_BYTES = effc_align64(KC * LDC * 4);",
        "    const int64_t CT_BYTES = effc_align64(MPA * LDC * 4);",
        f"    const int64_t PA_BYTES = {0 if pre else f'effc_align64((MPA < {t.mc} ? MPA : {t.mc}) * KC * 4)'};",
        f"    const int64_t SG_BYTES = effc_align64(LDC * {SW} * 8);",
        "    #pragma omp parallel num_threads(NT)",
        "    {",
        "        unsigned char *MINE = scratch + (int64_t)effc_thread_id() * (PB_BYTES + CT_BYTES + PA_BYTES + SG_BYTES);",
        "        float *EFFC_RESTRICT PBT = (float *)MINE;",
        "        float *EFFC_RESTRICT CT = (float *)(MINE + PB_BYTES);",
        *([] if pre else ["        float *EFFC_RESTRICT PA = (float *)(MINE + PB_BYTES + CT_BYTES);"]),
        "        int64_t *EFFC_RESTRICT SEG = (int64_t *)(MINE + PB_BYTES + CT_BYTES + PA_BYTES);",
        "        #pragma omp for schedule(static)",
        "        for (int64_t T = 0; T < NB * NG * NJC * NIC; T++) {",
        "        const int64_t BT = T / (NG * NJC * NIC), GI = (T / (NJC * NIC)) % NG;",
        "        const int64_t JC = (T / NIC) % NJC * NC, M0 = T % NIC * SPAN;",
        "        const int64_t NCUR = P - JC < NC ? P - JC : NC, M1 = Q < M0 + SPAN ? Q : M0 + SPAN;",
        *bsplit,
        # the segment table: pieces of the tile in one output row and one NR panel
        "        int64_t NSEG = 0;",
        "        {",
        f"            int64_t PC_[{max(len(outer), 1)}] = {{0}};",
        "            int64_t REM = JC / OW, OWC = JC % OW;",
        *[f"            PC_[{i}] = REM % ({cx(outer[i].size)}); REM /= ({cx(outer[i].size)});"
          for i in reversed(range(len(outer)))],
        "            (void)REM;",
        "            for (int64_t J = 0; J < NCUR; ) {",
        f"                int64_t LEN = OW - OWC; const int64_t PN = {nr} - J % {nr};",
        "                if (PN < LEN) LEN = PN;",
        "                if (NCUR - J < LEN) LEN = NCUR - J;",
        f"                int64_t *SG = SEG + NSEG * {SW};",
        "                SG[0] = J;",
        *[f"                SG[{1 + i}] = PC_[{i}];" for i in range(len(outer))],
        f"                SG[{SW - 2}] = OWC; SG[{SW - 1}] = LEN;",
        "                NSEG++; J += LEN; OWC += LEN;",
        "                if (OWC == OW) {",
        "                    OWC = 0;",
        "                    do {",
        *carry,
        "                    } while (0);",
        "                }",
        "            }",
        "        }",
        f"        const float *EFFC_RESTRICT XG = {X};",
        (f"        const float *EFFC_RESTRICT PAB = {W} + GI * K * MPA;" if pre else
         f"        const float *EFFC_RESTRICT ASRC = {W} + {cx(f.w_off)} + GI * Q * A_M;"),
        f"        const int64_t NQ = (NCUR + {nr - 1}) / {nr};",
        "        for (int64_t KB = 0; KB < NKB; KB++) {",
        "            const int64_t PC = KB * KC, KCUR = K - PC < KC ? K - PC : KC;",
        # gather the im2col panel into packed B
        "            for (int64_t KI = 0; KI < KCUR; KI++) {",
        "                const int64_t KK_ = PC + KI;",
        *[s[4:] for s in rsplit],
        f"                float *EFFC_RESTRICT DK = PBT + KI * {nr};",
        "                int64_t LOW = 0, HIW = OW;",
        *[f"                {{ const int64_t V = {e}; if (V > LOW) LOW = V; }}" for e in lo],
        *[f"                {{ const int64_t V = {e}; if (V < HIW) HIW = V; }}" for e in hi],
        "                for (int64_t S = 0; S < NSEG; S++) {",
        f"                    const int64_t *SG = SEG + S * {SW};",
        *[s[4:] for s in seg_read],
        f"                    const int64_t J = SG[0], OW0 = SG[{SW - 2}], LEN = SG[{SW - 1}];",
        f"                    float *EFFC_RESTRICT D = DK + (J / {nr}) * KCUR * {nr} + J % {nr};",
        f"                    int64_t A0 = LOW - OW0, A1 = HIW - OW0;",
        "                    if (A0 < 0) A0 = 0;",
        "                    if (A1 > LEN) A1 = LEN;",
        *([f"                    if (!({' && '.join(f'({c})' for c in other)})) A1 = 0;"] if other else []),
        "                    if (A1 < A0) A1 = A0;",
        "                    for (int64_t JJ = 0; JJ < A0; JJ++) D[JJ] = 0.0f;",
        "                    if (A1 > A0) {",
        f"                        const float *EFFC_RESTRICT SRC = XG + ({xb}) + OW0 * ({sx});",
        (f"                        for (int64_t JJ = A0; JJ < A1; JJ++) D[JJ] = SRC[JJ];" if f.sx == 1 else
         f"                        const int64_t SX = {sx};\n"
         f"                        for (int64_t JJ = A0; JJ < A1; JJ++) D[JJ] = SRC[JJ * SX];"),
        "                    }",
        "                    for (int64_t JJ = A1; JJ < LEN; JJ++) D[JJ] = 0.0f;",
        "                }",
        f"                if (NCUR % {nr}) {{",
        f"                    float *EFFC_RESTRICT D = DK + (NQ - 1) * KCUR * {nr};",
        f"                    for (int64_t JJ = NCUR % {nr}; JJ < {nr}; JJ++) D[JJ] = 0.0f;",
        "                }",
        "            }",
        # the channel span through the micro-kernel
        f"            for (int64_t IC = M0; IC < M1; IC += {t.mc}) {{",
        f"                const int64_t MCUR = M1 - IC < {t.mc} ? M1 - IC : {t.mc};",
        ("                const float *EFFC_RESTRICT PAK = PAB + PC * MPA + IC * KCUR;" if pre else
         f"                effc_gemm_pack_a_{tag}(ASRC + IC * A_M + PC * A_K, A_M, A_K, MCUR, KCUR, PA);\n"
         "                const float *EFFC_RESTRICT PAK = PA;"),
        f"                for (int64_t JQ = 0; JQ < NQ; JQ++) {{",
        f"                    for (int64_t IR = 0; IR < MCUR; IR += {mr}) {{",
        f"                        effc_gemm_ukr_{tag}(KCUR, PAK + IR * KCUR, PBT + JQ * KCUR * {nr},",
        f"                                CT + (IC - M0 + IR) * LDC + JQ * {nr}, LDC, KB > 0);",
        "                    }",
        "                }",
        "            }",
        "        }",
        # the epilogue, row by row along the segments
        "        for (int64_t EM = M0; EM < M1; EM++) {",
        "            const float *EFFC_RESTRICT CR = CT + (EM - M0) * LDC;",
        "            for (int64_t S = 0; S < NSEG; S++) {",
        f"                const int64_t *SG = SEG + S * {SW};",
        *[s[8:] for s in seg_read],
        f"                const int64_t J = SG[0], OW0 = SG[{SW - 2}], LEN = SG[{SW - 1}];",
        "                #pragma omp simd",
        "                for (int64_t JJ = 0; JJ < LEN; JJ++) {",
        "                    const float acc = CR[J + JJ];",
        epilogue(axis_map, " " * 20).rstrip("\n"),
        "                }",
        "            }",
        "        }",
        "        }",
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
    L = [_HELPERS + f"{kernel_signature(kernel)} {{", *size_decls(kernel, symbols),
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
