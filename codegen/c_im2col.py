"""Implicit-GEMM convolutions of the C backend (see c_templates.py for the dispatch).

[Note: C im2col convolution]
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

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy

from effc.ir.kernel import Kernel
from effc.ir.kernel_templates import stride

from .c_abi import buffer_params, c_expr, kernel_signature, size_name
from .c_conv import CONV_HELPERS, mask_bounds
from .c_gemm import Epilogue, PackLayout, align64, core_source, effc_threads, size_decls
from .c_gemm_tiles import Tiles, gemm_tiles, host_caches


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
        b = mask_bounds(mask, last)
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
        core_source(t) + CONV_HELPERS,
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
