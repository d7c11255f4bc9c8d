"""Scaled dot-product attention in C: the function of an ``op`` kernel whose
``Template(op="node")`` node is ``Op.SDPA`` ([Note: C kernel ABI]), tiled with an online
softmax so that the ``Sq x Sk`` score matrix never exists.

    attention_function(kernel, symbols[, blocks]) -> "void effc_k0(const float *q, ...) {...}" or None
    attention_scratch(kernel[, threads, blocks]) -> scratch bytes it needs (a formula in the size symbols)

[Note: C attention]
FlashAttention's loop order on a CPU (TECHNIQUES.md, attention tiling):
- Work items are (leading index, block of BQ query rows) over the output's leading dims
  (batch x heads): ``omp for schedule(dynamic, 1)``, heaviest query block of a head first,
  so a causal head's triangle spreads evenly over the threads.
- Each thread owns a slice of ``scratch`` [Note: C template scratch]: the K of the head it
  works on, packed once per (thread, head) transposed into tiles of NR keys (``d``-major,
  zero-padded: the QK micro-kernel reads NR keys as vectors); V packed row-padded to a whole
  number of vectors only when Dv is not one (else read in place); and per query block the
  ``BQ x BK`` score block, the ``BQ x Dv`` output accumulator and the row max and sum. All
  of it is linear in the sequence length; nothing is allocated.
- Per key block of BK keys: ``S = Q Kt`` (register-blocked MR x NR micro-kernel, one
  broadcast of Q per row and ``d``), then per row ``x = S*scale`` (+ additive mask, or -inf
  where a bool mask is false, as torch adds it; or -inf in place of the score where the key
  lies above the causal diagonal), block max, the
  running max ``m``, ``p = exp(x - m)`` (c_math's vectorisable exp), ``l = l*alpha + sum p``
  and ``O *= alpha`` with ``alpha = exp(m_old - m)``; then ``O += P V`` (MR2 rows x NV2
  vectors of Dv per micro-kernel call). Causal attention (top-left aligned, as torch: query
  ``i`` sees keys ``j <= i``) stops each query block at its last row's diagonal.
- Edge semantics, as torch's math path: NaN anywhere in a row's scores or in V propagates
  (a masked key's NaN score, ``0 * NaN`` of a masked key's value included); a +inf score
  gives NaN. The scores of keys above the causal diagonal are never seen, NaN or not (torch's
  flash kernel skips them too, its math path adds -inf to them, which keeps a NaN). A NaN
  in the *value* of such a key still reaches the rows of a query block whose key range
  covers it (``0 * NaN``), as in torch's flash kernel by its own blocks; the math path has
  it in every row. A row whose every key is masked (bool False or -inf) stores 0, as torch's
  CPU kernels do: its max stays -inf, the exponent is taken against 0 instead (never
  ``-inf - -inf``), so ``l = 0`` and the output is ``O * 0``. torch's flash kernel alone turns a row of NaN scores into 0 when the whole
  row fits its first key block; we keep the NaN.
- Reassociation: each score is one ordered sum over ``d`` (FMA contracted), ``l`` and ``O``
  sum block by block, which the tolerance policy admits.
Declined (LoweringError with the reason, the node runs in Python): other dtypes than
float32 (mask: bool or float32), a mask together with is_causal (torch rejects it), leading
dims of k, v or the mask that neither equal the output's nor are 1 (nor divide the heads
under enable_gqa), a mask of higher rank than q.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

import sympy

from effc.ir import DType, Op
from effc.ir.kernel import Kernel, LoweringError
from effc.ir.types import dims_equal

from .c_abi import buffer_params, c_expr, kernel_signature, size_locals, size_name
from .c_gemm import SCRATCH_HELPERS, align64, effc_threads
from .c_gemm_tiles import vector_width
from .c_loops import PARALLEL_MIN

__all__ = ["attention_function", "attention_scratch", "Blocks", "blocks"]


class Blocks(NamedTuple):
    """Block and micro-kernel sizes for ``w`` float lanes per vector."""
    w: int
    mr: int    # QK micro-kernel rows
    nrv: int   # ... and vectors of keys (NR = nrv * w keys)
    mr2: int   # PV micro-kernel rows
    nv2: int   # ... and vectors of Dv
    bq: int    # query rows per work item
    bk: int    # keys per block (a multiple of NR)

    @property
    def nr(self) -> int:
        return self.nrv * self.w

    @property
    def tag(self) -> str:
        return f"w{self.w}q{self.bq}k{self.bk}"


def blocks(w: int | None = None) -> Blocks:
    """AVX-512 (32 registers): 8x32 scores (16 accumulators), 4 rows x 64 of O. 16 registers
    (AVX2): 6 x 2 vectors for both micro-kernels (12 accumulators), 96 x 256 blocks: measured
    on a 2-core AVX2 host at S=1024, D=64 (benchmarks/cpu_attention.py), 4 x 2 vectors and
    64 x 128 blocks were 15-25% slower."""
    w = w or vector_width()
    if w >= 16:
        return Blocks(w, 8, 2, 4, 4, 64, 256)
    return Blocks(w, 6, 2, 6, 2, 96, 256)


class _Plan(NamedTuple):
    q: str
    k: str
    v: str
    mask: str | None
    out: str
    mask_bool: bool
    causal: bool
    scale: float | None
    lead: tuple[sympy.Expr, ...]                 # the output's leading dims
    offsets: tuple[tuple[tuple[str, int], ...], ...]  # per lead dim: (k|v|m, how) pairs
    strides: dict[str, tuple[sympy.Expr, ...]]   # per k/v/m: the stride of each lead dim
    sq: sympy.Expr
    sk: sympy.Expr
    d: sympy.Expr
    dv: sympy.Expr
    mask_rows: sympy.Expr                        # the mask's row (Sq) stride, 0 if broadcast
    mask_cols: sympy.Expr                        # ... and column (Sk) stride


def _contiguous(shape: tuple[sympy.Expr, ...]) -> list[sympy.Expr]:
    out, acc = [], sympy.Integer(1)
    for n in reversed(shape):
        out.insert(0, acc)
        acc = acc * n
    return out


def _plan(kernel: Kernel) -> _Plan | str | None:
    """None when ``kernel`` is no SDPA op kernel; the reason when this module declines it."""
    t = kernel.template
    if kernel.kind != "op" or t is None or t.op != "node" or t.node is None or t.node.op is not Op.SDPA:
        return None
    node, a = t.node, t.node.attrs
    if len(kernel.outputs) != 1 or any(v.name is None for v in node.inputs):
        return "attention kernel with an unexpected buffer layout"
    bufs = [kernel.buffer(v.name) for v in node.inputs]  # type: ignore[arg-type]
    q, k, v, out = bufs[0], bufs[1], bufs[2], kernel.outputs[0]
    m = bufs[3] if len(bufs) > 3 else None
    if any(b.dtype is not DType.F32 for b in (q, k, v, out)):
        return f"attention in {q.dtype}: the C kernel is float32 only"
    if m is not None and m.dtype not in (DType.BOOL, DType.F32):
        return f"attention mask of {m.dtype}: the C kernel takes bool or float32"
    if m is not None and a.get("is_causal"):
        return "attention with both a mask and is_causal (torch rejects it)"
    dims = {b.name: [sympy.sympify(x) for x in b.shape] for b in (q, k, v, out) + ((m,) if m else ())}
    r = len(dims[out.name])
    lead = tuple(dims[out.name][:-2])
    strides: dict[str, tuple[sympy.Expr, ...]] = {}
    mrows = mcols = sympy.Integer(0)
    how: list[list[tuple[str, int]]] = [[] for _ in lead]
    for role, b in (("k", k), ("v", v)) + ((("m", m),) if m else ()):
        shape = dims[b.name]
        if len(shape) > r:
            return "attention mask of higher rank than q"
        pad = [sympy.Integer(1)] * (r - len(shape)) + shape
        st = [sympy.Integer(0)] * (r - len(shape)) + _contiguous(tuple(shape))
        for p, n in enumerate(lead):
            if dims_equal(pad[p], n):
                way = 1                              # same index
            elif pad[p] == 1:
                way = 0                              # broadcast
            elif role != "m" and a.get("enable_gqa") and p == r - 3:
                way = 2                              # shared kv head: h // (Hq / Hkv)
            else:
                return f"attention {role} dim {p} ({pad[p]}) does not broadcast to {n}"
            if way:
                how[p].append((role, way))
        strides[role] = tuple(st[:-2])
        if role == "m":   # the last two dims: the same as [Sq, Sk], or 1 (stride 0)
            rows_cols = []
            for n, want, st_n in ((pad[-2], dims[out.name][-2], st[-2]), (pad[-1], dims[k.name][-2], st[-1])):
                if n == 1:
                    rows_cols.append(sympy.Integer(0))
                elif dims_equal(n, want):
                    rows_cols.append(st_n)
                else:
                    return f"attention mask dim {n} does not broadcast to {want}"
            mrows, mcols = rows_cols
    scale = a.get("scale")
    if scale is not None and not abs(float(scale)) < float("inf"):
        return f"attention scale {scale}"
    return _Plan(q.name, k.name, v.name, m.name if m else None, out.name,
                 m is not None and m.dtype is DType.BOOL, bool(a.get("is_causal")),
                 None if scale is None else float(scale), lead, tuple(tuple(h) for h in how), strides,
                 dims[q.name][-2], dims[k.name][-2], dims[q.name][-1], dims[v.name][-1],
                 mrows, mcols)


def attention_scratch(kernel: Kernel, threads: int | None = None, b: Blocks | None = None) -> sympy.Expr:
    """Scratch bytes of ``attention_function(kernel)`` [Note: C attention]: per thread the
    packed K of one head, V when Dv is not a whole number of vectors, the score block, the
    output accumulator and the row statistics; 0 for any other kernel."""
    p = _plan(kernel)
    if not isinstance(p, _Plan):
        return sympy.Integer(0)
    b = b or blocks()
    skt = sympy.ceiling(p.sk / b.nr) * b.nr
    dvp = sympy.ceiling(p.dv / b.w) * b.w
    packv = 0 if (p.dv.is_Integer and int(p.dv) % b.w == 0) else align64(p.sk * dvp * 4)
    per = align64(skt * p.d * 4) + packv + align64(b.bq * b.bk * 4) + align64(b.bq * dvp * 4) + align64(2 * b.bq * 4)
    return (threads or effc_threads()) * per


def attention_function(kernel: Kernel, symbols: Iterable[sympy.Symbol],
                       b: Blocks | None = None) -> str | None:
    """The C source (shared helpers, then the ABI function) of an SDPA op kernel per
    [Note: C attention], with the host's ``blocks()`` unless ``b`` is given; None for any
    other kernel; LoweringError with the reason for an SDPA kernel it declines."""
    p = _plan(kernel)
    if p is None:
        return None
    if isinstance(p, str):
        raise LoweringError(p)
    b, symbols = b or blocks(), list(symbols)
    exprs = [*p.lead, p.sq, p.sk, p.d, p.dv, p.mask_rows, p.mask_cols, *(x for s in p.strides.values() for x in s)]
    used = {s for e in exprs for s in e.free_symbols if isinstance(s, sympy.Symbol)}
    if not used <= set(symbols):
        raise LoweringError(f"attention sizes {sorted(map(str, used - set(symbols)))} are not program symbols")
    names = {s: size_name(s) for s in used}
    cx = lambda e: c_expr(e, names)  # noqa: E731
    prm = buffer_params(kernel)
    L = [kernel_signature(kernel) + " {", size_locals(symbols, used).rstrip("\n"),
         "    const int64_t a_L = " + (" * ".join(f"({cx(n)})" for n in p.lead) or "1") + ";",
         f"    const int64_t a_SQ = {cx(p.sq)}, a_SK = {cx(p.sk)}, a_D = {cx(p.d)}, a_DV = {cx(p.dv)};",
         "    if (a_L <= 0 || a_SQ <= 0 || a_DV <= 0) return;",
         "    const float a_scale = " + (f"(float){float(p.scale).hex()}" if p.scale is not None
                                         else "(float)(1.0 / sqrt((double)a_D))") + ";",
         f"    const int64_t a_NQB = (a_SQ + {b.bq - 1}) / {b.bq}, a_NW = a_L * a_NQB;",
         f"    const int64_t a_SKT = (a_SK + {b.nr - 1}) / {b.nr} * {b.nr}, a_DVP = (a_DV + {b.w - 1}) / {b.w} * {b.w};",
         f"    const int a_packv = a_DV % {b.w} != 0;",
         "    const int64_t a_KT = effc_align64(a_SKT * a_D * 4), a_VP = a_packv ? effc_align64(a_SK * a_DVP * 4) : 0;",
         f"    const int64_t a_SB = effc_align64({b.bq * b.bk * 4}), a_OB = effc_align64({b.bq} * a_DVP * 4);",
         f"    const int64_t a_PER = a_KT + a_VP + a_SB + a_OB + effc_align64({2 * b.bq * 4});",
         f"    #pragma omp parallel num_threads(effc_team({effc_threads()})) "
         f"if(parallel: a_L * a_SQ * a_SK * (a_D + a_DV) >= {PARALLEL_MIN})",
         "    {",
         "        unsigned char *a_mine = scratch + effc_thread_id() * a_PER;",
         "        float *a_kt = (float *)a_mine, *a_vp = (float *)(a_mine + a_KT);",
         "        float *a_s = (float *)(a_mine + a_KT + a_VP), *a_o = (float *)(a_mine + a_KT + a_VP + a_SB);",
         f"        float *a_m = (float *)(a_mine + a_KT + a_VP + a_SB + a_OB), *a_l = a_m + {b.bq};",
         "        const float *a_kdone = 0, *a_vdone = 0;",
         "        #pragma omp for schedule(dynamic, 1)",
         "        for (int64_t a_w = 0; a_w < a_NW; a_w++) {",
         "            const int64_t a_ld = a_w / a_NQB, a_q0 = (a_NQB - 1 - a_w % a_NQB) * " + str(b.bq) + ";",
         f"            const int64_t a_nq = a_SQ - a_q0 < {b.bq} ? a_SQ - a_q0 : {b.bq};",
         "            int64_t a_rem = a_ld, a_ko = 0, a_vo = 0, a_mo = 0;",
         "            (void)a_rem; (void)a_mo;"]
    for pos in reversed(range(len(p.lead))):   # the flat leading index, innermost dim first
        n = cx(p.lead[pos])
        L.append(f"            {{ const int64_t a_c = a_rem % {n}; a_rem /= {n}; (void)a_c;")
        for role, way in p.offsets[pos]:
            hk = {"k": p.k, "v": p.v}.get(role)
            c = "a_c" if way == 1 else f"a_c / ({n} / {cx(_dim(kernel, hk, pos))})"
            L.append(f"              a_{role}o += {c} * {cx(p.strides[role][pos])};")
        L.append("            }")
    K, V, Q, O = (prm[x] for x in (p.k, p.v, p.q, p.out))
    mask = "0, 0"
    if p.mask is not None:
        ptr = f"{prm[p.mask]} + a_mo + a_q0 * ({cx(p.mask_rows)})"
        mask = f"{ptr}, 0" if p.mask_bool else f"0, {ptr}"
    L += ["            const float *a_k = " + K + " + a_ko, *a_v = " + V + " + a_vo;",
          f"            if (a_k != a_kdone) {{ effc_att_pack_k_{b.tag}(a_k, a_SK, a_D, a_kt); a_kdone = a_k; }}",
          "            if (a_packv && a_v != a_vdone) {",
          f"                effc_att_pack_v_{b.tag}(a_v, a_SK, a_DV, a_vp); a_vdone = a_v;",
          "            }",
          f"            effc_att_rows_{b.tag}(a_nq, a_q0, a_SK, a_D, a_DV, a_scale, {int(p.causal)},",
          f"                {Q} + (a_ld * a_SQ + a_q0) * a_D, a_kt, a_packv ? a_vp : a_v, a_packv ? a_DVP : a_DV,",
          f"                {mask}, {cx(p.mask_rows)}, {cx(p.mask_cols)},",
          f"                {O} + (a_ld * a_SQ + a_q0) * a_DV, a_s, a_o, a_m, a_l);",
          "        }", "    }", "}"]
    return helpers(b) + "\n" + "\n".join(L) + "\n"


def _dim(kernel: Kernel, name: str | None, pos: int) -> Any:
    assert name is not None
    return sympy.sympify(kernel.buffer(name).shape[pos])


def _ukr_qk(b: Blocks, r: int) -> str:
    """S[r x NR] = Q[r rows] . Kt tile, over d < D."""
    acc = [[f"c{i}_{u}" for u in range(b.nrv)] for i in range(r)]
    V, VU = f"effc_att_vf{b.w}", f"effc_att_vf{b.w}u"
    L = [f"static inline void effc_att_qk{r}_{b.tag}(int64_t D, const float *EFFC_RESTRICT q,",
         "        const float *EFFC_RESTRICT kt, float *EFFC_RESTRICT s) {",
         f"    {V} " + ", ".join(f"{x} = {{0}}" for row in acc for x in row) + ";",
         "    for (int64_t d = 0; d < D; d++) {",
         *(f"        const {V} b{u} = *(const {VU} *)(kt + d * {b.nr} + {u * b.w});" for u in range(b.nrv)),
         *(f"        {{ const float a = q[{i} * D + d]; " + " ".join(f"{acc[i][u]} += a * b{u};" for u in range(b.nrv))
           + " }" for i in range(r)),
         "    }",
         *(f"    *({VU} *)(s + {i * b.bk + u * b.w}) = {acc[i][u]};" for i in range(r) for u in range(b.nrv)),
         "}"]
    return "\n".join(L)


def _ukr_pv(b: Blocks, r: int, nv: int) -> str:
    """O[r rows, nv vectors] += P[r rows, nk] . V[nk rows, nv vectors]."""
    acc = [[f"c{i}_{u}" for u in range(nv)] for i in range(r)]
    V, VU = f"effc_att_vf{b.w}", f"effc_att_vf{b.w}u"
    L = [f"static inline void effc_att_pv{r}x{nv}_{b.tag}(int64_t nk, const float *EFFC_RESTRICT p,",
         "        const float *EFFC_RESTRICT v, int64_t ldv, float *EFFC_RESTRICT o, int64_t ldo) {",
         *(f"    {V} {acc[i][u]} = *({VU} *)(o + {i} * ldo + {u * b.w});" for i in range(r) for u in range(nv)),
         "    for (int64_t j = 0; j < nk; j++) {",
         *(f"        const {V} b{u} = *(const {VU} *)(v + j * ldv + {u * b.w});" for u in range(nv)),
         *(f"        {{ const float a = p[{i * b.bk} + j]; " + " ".join(f"{acc[i][u]} += a * b{u};" for u in range(nv))
           + " }" for i in range(r)),
         "    }",
         *(f"    *({VU} *)(o + {i} * ldo + {u * b.w}) = {acc[i][u]};" for i in range(r) for u in range(nv)),
         "}"]
    return "\n".join(L)


def _switch(var: str, cases: dict[int, str], indent: str) -> str:
    body = " ".join(f"case {n}: {call}; break;" for n, call in cases.items())
    return f"{indent}switch ({var}) {{ {body} default: break; }}"


def helpers(b: Blocks) -> str:
    """The static routines every attention kernel of a translation unit with these blocks
    shares (guarded): packing, the micro-kernels, and one query block's whole pass."""
    fast = '#if defined(__GNUC__) && !defined(__clang__)\n__attribute__((optimize("fp-contract=fast")))\n#endif'
    qk = [fast + "\n" + _ukr_qk(b, r) for r in range(1, b.mr + 1)]
    pv = [fast + "\n" + _ukr_pv(b, r, nv) for r in range(1, b.mr2 + 1) for nv in range(1, b.nv2 + 1)]
    qk_call = _switch("nr", {r: f"effc_att_qk{r}_{b.tag}(D, q + i0 * D, ktile, S + i0 * {b.bk} + t)"
                             for r in range(1, b.mr + 1)}, "                ")
    pv_calls = []
    for nv in range(1, b.nv2 + 1):
        pv_calls.append(f"            if (nv == {nv}) for (int64_t i0 = 0; i0 < nq; i0 += {b.mr2}) {{\n"
                        f"                const int64_t nr = nq - i0 < {b.mr2} ? nq - i0 : {b.mr2};\n"
                        + _switch("nr", {r: f"effc_att_pv{r}x{nv}_{b.tag}(nk, S + i0 * {b.bk}, v + j0 * ldv + d0, "
                                            f"ldv, O + i0 * DVP + d0, DVP)" for r in range(1, b.mr2 + 1)},
                                  "                ") + "\n            }")
    text = _ROWS.replace("QK_CALL", qk_call).replace("PV_CALLS", "\n".join(pv_calls))
    for key, val in (("TAG", b.tag), ("WW", b.w), ("NR", b.nr), ("MR2", b.mr2), ("NV2", b.nv2), ("MR", b.mr),
                     ("BQ", b.bq), ("BK", b.bk)):
        text = text.replace(key, str(val))
    return (f"#ifndef EFFC_ATTENTION_{b.tag}\n#define EFFC_ATTENTION_{b.tag}\n{SCRATCH_HELPERS}\n"
            f"typedef float effc_att_vf{b.w} __attribute__((vector_size({4 * b.w})));\n"
            f"typedef float effc_att_vf{b.w}u __attribute__((vector_size({4 * b.w}), aligned(4)));\n"
            + "\n".join(qk + pv) + "\n" + text + "#endif\n")


# One query block (nq <= BQ rows from q0) against every key it may see [Note: C attention].
# q, o point at the block's first row; the mask (mb bool or mf float, or neither) at its first
# row, with row stride mrs and column stride mcs (each 0 when broadcast).
_ROWS = r"""
/* K rows [0, SK) into tiles of NR keys, d-major inside a tile, zero past SK */
static void effc_att_pack_k_TAG(const float *EFFC_RESTRICT k, int64_t SK, int64_t D,
        float *EFFC_RESTRICT kt) {
    for (int64_t t0 = 0; t0 < SK; t0 += NR) {
        float *EFFC_RESTRICT p = kt + t0 * D;
        const int64_t n = SK - t0 < NR ? SK - t0 : NR;
        for (int64_t j = 0; j < NR; j++)
            for (int64_t d = 0; d < D; d++) p[d * NR + j] = j < n ? k[(t0 + j) * D + d] : 0.0f;
    }
}
/* V rows padded to a whole number of vectors, zero in the padding */
static void effc_att_pack_v_TAG(const float *EFFC_RESTRICT v, int64_t SK, int64_t DV,
        float *EFFC_RESTRICT vp) {
    const int64_t DVP = (DV + WW - 1) / WW * WW;
    for (int64_t j = 0; j < SK; j++)
        for (int64_t d = 0; d < DVP; d++) vp[j * DVP + d] = d < DV ? v[j * DV + d] : 0.0f;
}
static void effc_att_rows_TAG(int64_t nq, int64_t q0, int64_t SK, int64_t D, int64_t DV,
        float scale, int causal, const float *EFFC_RESTRICT q, const float *EFFC_RESTRICT kt,
        const float *EFFC_RESTRICT v, int64_t ldv, const bool *EFFC_RESTRICT mb,
        const float *EFFC_RESTRICT mf, int64_t mrs, int64_t mcs, float *EFFC_RESTRICT o,
        float *EFFC_RESTRICT S, float *EFFC_RESTRICT O, float *EFFC_RESTRICT M,
        float *EFFC_RESTRICT L) {
    const int64_t DVP = (DV + WW - 1) / WW * WW;
    for (int64_t i = 0; i < nq; i++) {
        M[i] = -INFINITY; L[i] = 0.0f;
        for (int64_t d = 0; d < DVP; d++) O[i * DVP + d] = 0.0f;
    }
    /* causal: no row of the block sees a key past its last row */
    const int64_t kend = causal && q0 + nq < SK ? q0 + nq : SK;
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int64_t nk = kend - j0 < BK ? kend - j0 : BK;
        for (int64_t t = 0; t < nk; t += NR) {
            const float *EFFC_RESTRICT ktile = kt + (j0 + t) * D;
            for (int64_t i0 = 0; i0 < nq; i0 += MR) {
                const int64_t nr = nq - i0 < MR ? nq - i0 : MR;
QK_CALL
            }
        }
        for (int64_t i = 0; i < nq; i++) {
            float *EFFC_RESTRICT s = S + i * BK;
            /* keys j > lim are above the causal diagonal */
            const int64_t lim = causal ? q0 + i - j0 : nk;
            float bm = -INFINITY;
            if (mf && mcs) {
                const float *EFFC_RESTRICT mr = mf + i * mrs + j0;
                #pragma omp simd reduction(max:bm)
                for (int64_t j = 0; j < nk; j++) { s[j] = s[j] * scale + mr[j]; bm = s[j] > bm ? s[j] : bm; }
            } else if (mb && mcs) {
                const bool *EFFC_RESTRICT mr = mb + i * mrs + j0;
                #pragma omp simd reduction(max:bm)
                for (int64_t j = 0; j < nk; j++) {
                    s[j] = s[j] * scale + (mr[j] ? 0.0f : -INFINITY); bm = s[j] > bm ? s[j] : bm;
                }
            } else {
                const float add = mf ? mf[i * mrs] : (mb && !mb[i * mrs] ? -INFINITY : 0.0f);
                #pragma omp simd reduction(max:bm)
                for (int64_t j = 0; j < nk; j++) {
                    s[j] = j <= lim ? s[j] * scale + add : -INFINITY; bm = s[j] > bm ? s[j] : bm;
                }
            }
            const float mnew = bm > M[i] ? bm : M[i];
            /* a row masked so far takes its exponents against 0: exp(-inf) = 0, not NaN */
            const float ms = mnew == -INFINITY ? 0.0f : mnew;
            const float alpha = effc_expf(M[i] - ms);
            float sum = 0.0f;
            #pragma omp simd reduction(+:sum)
            for (int64_t j = 0; j < nk; j++) { const float e = effc_expf(s[j] - ms); s[j] = e; sum += e; }
            L[i] = L[i] * alpha + sum;
            M[i] = mnew;
            if (alpha != 1.0f) {
                float *EFFC_RESTRICT orow = O + i * DVP;
                #pragma omp simd
                for (int64_t d = 0; d < DVP; d++) orow[d] *= alpha;
            }
        }
        for (int64_t d0 = 0; d0 < DVP; d0 += NV2 * WW) {
            const int64_t nv = (DVP - d0) / WW < NV2 ? (DVP - d0) / WW : NV2;
PV_CALLS
        }
    }
    for (int64_t i = 0; i < nq; i++) {
        const float inv = L[i] > 0.0f ? 1.0f / L[i] : 0.0f;
        #pragma omp simd
        for (int64_t d = 0; d < DV; d++) o[i * DV + d] = O[i * DVP + d] * inv;
    }
}
"""
