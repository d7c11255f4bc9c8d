"""The float32 GEMM template of the C backend: packing, a register-blocked micro-kernel, three
cache-blocking levels, OpenMP over output tiles, the epilogue on each finished tile.

[Note: C GEMM template]
``C[m, n] = sum_k A[m, k] * B[k, n]`` in the Goto/BLIS structure, written in portable GNU C
(vector extensions, no intrinsics, no BLAS) so the same source serves the standalone library:

- B is packed once per call (per batch where B varies over the batch): for each K block of
  KC rows, panels of NR columns, each panel ``kc x NR`` contiguous and zero-padded at the N
  edge. Transposed B (a linear layer's ``[n, k]`` weight) is handled by the packing strides.
  A constant B (a weight), or a constant A, may instead arrive packed in that layout, packed
  once at compile time [Note: GEMM prepacked operands].
- Work items are (batch, MC rows, NC columns) tiles, spread over the OpenMP threads. An item
  walks K in KC blocks: packs its ``MC x KC`` block of A into MR-row panels (zero-padded),
  then for each NR panel of B (kept in L1) runs the micro-kernel over the MR panels of A
  (streamed from L2), accumulating into a per-thread ``MC x NC`` tile buffer (L2).
- The micro-kernel holds an ``MR x NR`` block of C in ``MR * NR / W`` vector registers
  (``W`` floats per vector, from the host ISA: 16 for AVX-512, 8 for AVX2, 4 otherwise) and
  per k does NR/W vector loads of B and MR broadcasts of A.
- In the last K block, right after the micro-kernel finishes an ``MR x NR`` block, the
  kernel's epilogue runs over that block while it is in L1: ``acc`` is read from it and the
  epilogue computes and stores the kernel's outputs (bias, activation, residual, casts).
- Reassociation: every output is one ordered sum over k within a K block, blocks added in
  order; FMA contraction is on (GCC's default in GNU C), which the tolerance policy admits.

Tile sizes come from ``gemm_tiles`` (c_gemm_tiles.py, [Note: GEMM tile model]). Scratch (packed B, then packed
A and the C tile per thread) is carved from the caller's ``scratch`` bytes, 64-byte aligned
parts, within the bound ``gemm_scratch`` gives [Note: C template scratch]; nothing is allocated.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Collection

import sympy

from effc.ir import DType
from effc.ir.kernel import IndexValue, Kernel, Load, Store
from effc.ir.kernel_templates import stride

from .c_abi import buffer_params, c_expr, kernel_signature, size_locals, size_name
from .c_gemm_tiles import Tiles, gemm_tiles

_AXIS = re.compile(r"^[ir]\d+$")

# -- the shared C core ------------------------------------------------------------------------

# Shared by the GEMM and row-convolution templates [Note: C template scratch].
SCRATCH_HELPERS = """\
#ifndef EFFC_SCRATCH_HELPERS
#define EFFC_SCRATCH_HELPERS
#ifdef _OPENMP
#include <omp.h>
#endif
static inline int64_t effc_align64(int64_t bytes) { return (bytes + 63) & ~(int64_t)63; }
/* The OpenMP team size, capped at the thread count the scratch bound was computed for. */
static inline int effc_team(int cap) {
#ifdef _OPENMP
    int n = omp_get_max_threads();
    return n < cap ? n : cap;
#else
    (void)cap;
    return 1;
#endif
}
static inline int effc_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
#endif"""


def effc_threads() -> int:
    """EFFC_THREADS: the most OpenMP threads a template kernel runs, fixed when it is generated
    (this machine's ``os.cpu_count()``) [Note: C template scratch]."""
    return os.cpu_count() or 1


def align64(e: sympy.Expr) -> sympy.Expr:
    """``e`` bytes rounded up to a multiple of 64."""
    return sympy.ceiling(sympy.sympify(e) / 64) * 64

def core_source(t: Tiles) -> str:
    """Static helpers shared by every GEMM kernel of a translation unit (guarded, so several
    kernels may each include them): vector type, packing routines, the micro-kernel."""
    w, mr, nr = t.width, t.mr, t.nr
    nv = nr // w
    tag = f"{mr}x{nr}w{w}"
    lines = [f"#ifndef EFFC_GEMM_CORE_{tag}", f"#define EFFC_GEMM_CORE_{tag}", SCRATCH_HELPERS,
             f"typedef float effc_vf{w} __attribute__((vector_size({4 * w})));",
             f"typedef float effc_vf{w}u __attribute__((vector_size({4 * w}), aligned(4)));"]
    # Pack A rows [0, mc) x cols [0, kc) into MR-row panels, k-major inside a panel.
    lines += [
        f"static void effc_gemm_pack_a_{tag}(const float *EFFC_RESTRICT a, int64_t rs, int64_t cs,",
        "        int64_t mc, int64_t kc, float *EFFC_RESTRICT pa) {",
        f"    for (int64_t i0 = 0; i0 < mc; i0 += {mr}) {{",
        f"        const int64_t mv = mc - i0 < {mr} ? mc - i0 : {mr};",
        f"        float *EFFC_RESTRICT p = pa + i0 * kc;",
        f"        if (mv == {mr} && cs == 1) {{",
        "            for (int64_t k = 0; k < kc; k++)",
        f"                for (int64_t i = 0; i < {mr}; i++) p[k * {mr} + i] = a[(i0 + i) * rs + k];",
        f"        }} else if (mv == {mr} && rs == 1) {{",
        "            for (int64_t k = 0; k < kc; k++)",
        f"                for (int64_t i = 0; i < {mr}; i++) p[k * {mr} + i] = a[i0 + i + k * cs];",
        "        } else {",
        "            for (int64_t k = 0; k < kc; k++)",
        f"                for (int64_t i = 0; i < {mr}; i++)",
        f"                    p[k * {mr} + i] = i < mv ? a[(i0 + i) * rs + k * cs] : 0.0f;",
        "        }", "    }", "}"]
    # Pack one NR-column panel of B (kc rows), zero-padded past nv columns.
    lines += [
        f"static void effc_gemm_pack_b_{tag}(const float *EFFC_RESTRICT b, int64_t rs, int64_t cs,",
        "        int64_t kc, int64_t nv, float *EFFC_RESTRICT pb) {",
        f"    if (nv == {nr} && cs == 1) {{",
        "        for (int64_t k = 0; k < kc; k++)",
        f"            for (int64_t j = 0; j < {nr}; j++) pb[k * {nr} + j] = b[k * rs + j];",
        f"    }} else if (nv == {nr} && rs == 1) {{",
        "        for (int64_t k = 0; k < kc; k++)",
        f"            for (int64_t j = 0; j < {nr}; j++) pb[k * {nr} + j] = b[j * cs + k];",
        "    } else {",
        "        for (int64_t k = 0; k < kc; k++)",
        f"            for (int64_t j = 0; j < {nr}; j++) pb[k * {nr} + j] = j < nv ? b[k * rs + j * cs] : 0.0f;",
        "    }", "}"]
    # The micro-kernel: C[MR x NR] (=|+=) A panel x B panel, C with row stride ldc.
    acc = [[f"c{i}_{v}" for v in range(nv)] for i in range(mr)]
    lines += [
        "#if defined(__GNUC__) && !defined(__clang__)",
        "__attribute__((optimize(\"fp-contract=fast\")))",
        "#endif",
        f"static inline void effc_gemm_ukr_{tag}(int64_t kc, const float *EFFC_RESTRICT pa,",
        "        const float *EFFC_RESTRICT pb, float *EFFC_RESTRICT c, int64_t ldc, int accumulate) {",
        f"    effc_vf{w} " + ", ".join(f"{x} = {{0}}" for row in acc for x in row) + ";",
        "    for (int64_t k = 0; k < kc; k++) {",
        *(f"        const effc_vf{w} b{v} = *(const effc_vf{w}u *)(pb + k * {nr} + {v * w});" for v in range(nv)),
    ]
    for i in range(mr):
        lines.append(f"        {{ const float a = pa[k * {mr} + {i}]; "
                     + " ".join(f"{acc[i][v]} += a * b{v};" for v in range(nv)) + " }")
    lines += ["    }", "    if (accumulate) {"]
    for i in range(mr):
        for v in range(nv):
            lines.append(f"        *(effc_vf{w}u *)(c + {i} * ldc + {v * w}) += {acc[i][v]};")
    lines += ["    } else {"]
    for i in range(mr):
        for v in range(nv):
            lines.append(f"        *(effc_vf{w}u *)(c + {i} * ldc + {v * w}) = {acc[i][v]};")
    lines += ["    }", "}", "#endif", ""]
    return "\n".join(lines)


# -- index expressions as C -------------------------------------------------------------------

def c_index(e: Any, axes: dict[str, str] | None = None) -> str:
    """An index, extent or mask expression (sympy) as int64 C [Note: C kernel ABI]: axis
    symbols (``i0``, ``r1``) by ``axes`` (default: their own names), size symbols as their
    locals (``sz_s0``)."""
    e = sympy.sympify(e)
    names = {}
    for s in e.free_symbols:
        names[s] = (axes or {}).get(s.name, s.name) if _AXIS.match(s.name) else size_name(s)
    return c_expr(e, names)


def kernel_sizes(kernel: Kernel) -> set[sympy.Symbol]:
    """The size symbols a template kernel's function reads."""
    exprs: list[Any] = [a.size for a in kernel.domain + kernel.reduce]
    exprs += [s.index for s in kernel.statements() if isinstance(s, (Load, Store))]
    exprs += [s.expr for s in kernel.statements() if isinstance(s, IndexValue)]
    if kernel.template is not None:
        for o in kernel.template.operands:
            exprs.append(o.index)
            if o.mask is not None:
                exprs.append(o.mask)
    out: set[sympy.Symbol] = set()
    for e in exprs:
        out |= {s for s in sympy.sympify(e).free_symbols if not _AXIS.match(s.name)}
    return out


def size_decls(kernel: Kernel, symbols: Any) -> list[str]:
    """``const int64_t sz_s0 = sizes[k];`` for each size the kernel reads."""
    return size_locals(symbols, kernel_sizes(kernel)).rstrip("\n").split("\n")


def _eq(a: sympy.Expr, b: sympy.Expr) -> bool:
    return sympy.expand(a - b) == 0


# -- which templates are GEMMs ----------------------------------------------------------------

Gather = tuple[sympy.Expr, tuple[tuple[str, sympy.Expr], ...]]


@dataclass(frozen=True)
class GemmPlan:
    """``acc = sum_k A[m, k] * B[k, n]`` per batch point, where ``m`` and ``n`` flatten groups
    of domain axes (outer to inner) and the other domain axes are batch axes."""
    a: str
    b: str
    a_off: sympy.Expr
    b_off: sympy.Expr
    m_axes: tuple[tuple[str, sympy.Expr], ...]
    n_axes: tuple[tuple[str, sympy.Expr], ...]
    k: sympy.Expr
    a_m: sympy.Expr
    a_k: sympy.Expr
    b_k: sympy.Expr
    b_n: sympy.Expr
    batch: tuple[tuple[str, sympy.Expr, sympy.Expr, sympy.Expr], ...]  # (axis, size, a stride, b stride)
    fixed: tuple[str, ...]  # size-1 domain axes (always 0)
    # [Note: GEMM gathered operands] None, or (the operand's flat index, the axes it reads
    # (name, size), outer to inner): A (B) is gathered into a contiguous scratch panel first.
    a_gather: Gather | None = None
    b_gather: Gather | None = None


def _group(axes: list[tuple[sympy.Symbol, sympy.Expr]], strides: list[dict[sympy.Symbol, sympy.Expr]]
           ) -> tuple[list[tuple[sympy.Symbol, sympy.Expr]], list[sympy.Expr]]:
    """The longest suffix of ``axes`` (outer to inner) that flattens into one axis in every
    operand of ``strides``; returns the suffix and its per-operand stride."""
    if not axes:
        return [], [sympy.Integer(0) for _ in strides]
    inner, size = [axes[-1]], axes[-1][1]
    for ax, n in reversed(axes[:-1]):
        if all(_eq(s[ax], size * s[axes[-1][0]]) for s in strides):
            inner.insert(0, (ax, n))
            size = size * n
        else:
            break
    return inner, [s[axes[-1][0]] for s in strides]


def gemm_plan(kernel: Kernel) -> GemmPlan | None:
    """The GEMM form of a float32 matmul/conv template whose operands are unmasked (matmul,
    linear, batched matmul, 1x1 stride-1 convolution), else None. Operands are read through
    their strides where they are affine in every axis; a matmul operand that is not (views
    folded into floor/Mod arithmetic, as BERT's head merge) is gathered
    [Note: GEMM gathered operands]."""
    t = kernel.template
    if t is None or t.op not in ("matmul", "conv") or t.dtype is not DType.F32 or len(t.operands) != 2:
        return None
    if any(o.mask is not None and o.mask is not sympy.true for o in t.operands):
        return None
    if any(kernel.buffer(o.buffer).dtype is not DType.F32 for o in t.operands):
        return None
    one = [a for a in kernel.domain + kernel.reduce if sympy.sympify(a.size) == 1]
    zero = {a.symbol: 0 for a in one}
    idx = [sympy.expand(sympy.sympify(o.index).subs(zero)) for o in t.operands]
    dom = [(a.symbol, sympy.sympify(a.size)) for a in kernel.domain if a not in one]
    red = [(a.symbol, sympy.sympify(a.size)) for a in kernel.reduce if a not in one]
    strides: list[dict[sympy.Symbol, sympy.Expr]] = []
    offs = []
    gathers: list[Gather | None] = []
    for ix in idx:
        affine = _affine(ix, dom + red)
        if affine is None:
            if t.op != "matmul":
                return None
            affine, g = _gathered(ix, dom + red)
            gathers.append(g)
        else:
            gathers.append(None)
        strides.append(affine[0])
        offs.append(affine[1])
    k_axes, (ak, bk) = _group(red, strides)
    if len(k_axes) != len(red):
        return None
    k = sympy.prod([n for _, n in red]) if red else sympy.Integer(1)
    ia, ib = 0, 1
    if dom and strides[0][dom[-1][0]] != 0 and strides[1][dom[-1][0]] == 0:
        ia, ib = 1, 0  # the innermost output axis must be B's, so tiles store rows
    sa, sb = strides[ia], strides[ib]
    only_b = [d for d in dom if sa[d[0]] == 0 and sb[d[0]] != 0]
    n_axes: list[tuple[sympy.Symbol, sympy.Expr]] = []
    if dom and only_b and only_b[-1] == dom[-1]:
        run = []
        for d in reversed(dom):
            if d in only_b:
                run.insert(0, d)
            else:
                break
        n_axes, (_, bn) = _group(run, [sa, sb])
    else:
        bn = sympy.Integer(0)
    rest = [d for d in dom if d not in n_axes]
    only_a = [d for d in rest if sa[d[0]] != 0 and sb[d[0]] == 0]
    m_axes: list[tuple[sympy.Symbol, sympy.Expr]] = []
    am = sympy.Integer(0)
    if only_a:
        pos = rest.index(only_a[-1])
        run = []
        for d in reversed(rest[:pos + 1]):
            if d in only_a:
                run.insert(0, d)
            else:
                break
        m_axes, (am, _) = _group(run, [sa, sb])
    batch = tuple((ax.name, n, sa[ax], sb[ax]) for ax, n in dom if (ax, n) not in n_axes and (ax, n) not in m_axes)
    ops = t.operands
    return GemmPlan(ops[ia].buffer, ops[ib].buffer, offs[ia], offs[ib],
                    tuple((ax.name, n) for ax, n in m_axes), tuple((ax.name, n) for ax, n in n_axes),
                    k, am, (ak, bk)[ia], (ak, bk)[ib], bn, batch, tuple(a.name for a in one if a in kernel.domain),
                    gathers[ia], gathers[ib])


def _affine(ix: sympy.Expr, axes: list[tuple[sympy.Symbol, sympy.Expr]]
            ) -> tuple[dict[sympy.Symbol, sympy.Expr], sympy.Expr] | None:
    """(stride per axis, offset) of an index affine in every axis (strides free of axes)."""
    st: dict[sympy.Symbol, sympy.Expr] = {}
    for ax, _ in axes:
        s = stride(ix, ax)
        if s is None or any(a in s.free_symbols for a, _ in axes):
            return None
        st[ax] = s
    off = ix.subs({ax: 0 for ax, _ in axes})
    if not _eq(ix, off + sum((st[ax] * ax for ax, _ in axes), sympy.Integer(0))):
        return None
    return st, off


def _gathered(ix: sympy.Expr, axes: list[tuple[sympy.Symbol, sympy.Expr]]
              ) -> tuple[tuple[dict[sympy.Symbol, sympy.Expr], sympy.Expr], Gather]:
    """[Note: GEMM gathered operands] A matmul operand whose index is not affine (a chain of
    views folded into floor/Mod arithmetic, as BERT's ``permute -> reshape -> permute`` head
    merge) is first copied, element by element through its index (``c_index``), into a
    contiguous row-major panel in scratch over the axes its index reads (domain axes, then
    reduce axes, each in kernel order); the GEMM then reads that panel through its affine
    strides (offset 0) like any other operand. One extra pass over the operand (``O(M K)``
    of an ``O(M N K)`` GEMM) buys the packed micro-kernel instead of the direct loop nest.
    The panels come first in scratch, before the packed B; a gathered operand is never
    prepacked. Masked operands still take the direct loop. Returns the panel's (strides,
    offset) and the plan's ``Gather``."""
    dep = [(ax, n) for ax, n in axes if ax in ix.free_symbols]
    st: dict[sympy.Symbol, sympy.Expr] = {ax: sympy.Integer(0) for ax, _ in axes}
    size: sympy.Expr = sympy.Integer(1)
    for ax, n in reversed(dep):
        st[ax] = size
        size = size * n
    return (st, sympy.Integer(0)), (ix, tuple((ax.name, n) for ax, n in dep))


def gather_extent(g: Gather) -> sympy.Expr:
    """Elements of a gathered operand's panel."""
    return sympy.prod([n for _, n in g[1]]) if g[1] else sympy.Integer(1)


# -- one kernel -------------------------------------------------------------------------------

Epilogue = Callable[[dict[str, str], str], str]


def default_tiles(plan: GemmPlan) -> Tiles:
    """The tiles ``gemm_function`` uses when given none (512 for a symbolic extent)."""
    def guess(e: sympy.Expr) -> int:
        e = sympy.sympify(e)
        return int(e) if e.is_Integer else 512
    return gemm_tiles(guess(sympy.prod([n for _, n in plan.m_axes])),
                      guess(sympy.prod([n for _, n in plan.n_axes])), guess(plan.k))


def _extents(plan: GemmPlan) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr, bool]:
    """(M, N, batch count, whether B varies over the batch)."""
    m = sympy.prod([n for _, n in plan.m_axes]) if plan.m_axes else sympy.Integer(1)
    n = sympy.prod([n for _, n in plan.n_axes]) if plan.n_axes else sympy.Integer(1)
    nb = sympy.prod([b[1] for b in plan.batch]) if plan.batch else sympy.Integer(1)
    return m, n, nb, any(b[3] != 0 for b in plan.batch)


def gemm_scratch(plan: GemmPlan, tiles: Tiles | None = None, threads: int | None = None,
                 prepacked: Collection[str] = ()) -> sympy.Expr:
    """Scratch bytes of ``gemm_function(.., tiles)``, a formula in the size symbols: the packed
    B of every batch point that has its own B, then per thread (``effc_threads()``) a packed A
    block and a C tile, each part rounded up to 64 bytes; before them all, the panel of each
    gathered operand [Note: GEMM gathered operands]. The kernel's run-time tiles (MC, NC
    shrunk to spread work) never exceed the ones here, so this is an upper bound. An operand
    in ``prepacked`` (``"a"``, ``"b"``) arrives packed [Note: GEMM prepacked operands] and
    needs no scratch."""
    t = tiles or default_tiles(plan)
    m, n, nb, b_varies = _extents(plan)
    np_ = sympy.ceiling(n / t.nr) * t.nr
    kc = sympy.Min(t.kc, sympy.Max(plan.k, 1))
    mc = sympy.Min(t.mc, sympy.ceiling(m / t.mr) * t.mr)
    ldc = sympy.Min(t.nc, np_)
    pb = 0 if "b" in prepacked else align64((nb if b_varies else 1) * sympy.Max(plan.k, 1) * np_ * 4)
    pa = 0 if "a" in prepacked else align64(mc * kc * 4)
    gather = sum((align64(gather_extent(g) * 4) for g in (plan.a_gather, plan.b_gather) if g is not None),
                 sympy.Integer(0))
    return gather + pb + (threads or effc_threads()) * (pa + align64(mc * ldc * 4))


# -- prepacked constant operands --------------------------------------------------------------

def _static(*es: Any) -> bool:
    return all(sympy.sympify(e).is_Integer for e in es)


def packed_operands(kernel: Kernel, plan: GemmPlan, constant_inputs: Collection[int]) -> dict[int, str]:
    """[Note: GEMM prepacked operands] Which inputs (positions in ``kernel.inputs``) the GEMM
    function of ``kernel`` reads already packed, and as which operand (``"a"`` or ``"b"``):
    an operand whose buffer is a compile-time constant (``constant_inputs``) and whose layout
    is static (its extent, K, offset, strides, and the sizes of the batch axes it varies
    over are integers) and it is not gathered [Note: GEMM gathered operands]. Both operands
    may be; an operand read twice (``x @ x.T``) is not.

    The packed layout is the one the kernel's loops read, independent of MC and NC (which the
    kernel shrinks at run time to spread work over threads) and of the thread count:
    with ``R`` = NR for B (MR for A), ``XP`` = the extent rounded up to ``R``, and
    ``KC = min(tiles.kc, max(K, 1))`` from ``default_tiles(plan)`` (``gemm_tiles`` on the
    static sizes, so ``generate`` and ``prepack`` agree on one machine):
    for each batch point of the batch axes the operand varies over (outer to inner), for each
    K block ``[pc, pc + kcur)``, ``XP / R`` panels of ``kcur x R`` floats, k-major inside a
    panel, zero past the extent. ``K * XP`` floats per batch point; an NC (MC) block starting
    at column (row) ``j`` of K block ``pc`` starts at float ``pc * XP + j * kcur``. The
    micro-kernel's loads are unaligned, so the packed tensor needs no particular alignment.
    Packing B saves a pass over the weight per call; packing A (a constant left operand, as a
    1x1 convolution's weight) saves one per NC column block."""
    names = [b.name for b in kernel.inputs]
    if plan.a == plan.b:
        return {}
    m, n, _, _ = _extents(plan)
    out: dict[int, str] = {}
    for which, buf, ext, off, s_k, s_x, col in (("b", plan.b, n, plan.b_off, plan.b_k, plan.b_n, 3),
                                               ("a", plan.a, m, plan.a_off, plan.a_k, plan.a_m, 2)):
        if buf not in names or names.index(buf) not in constant_inputs:
            continue
        if (plan.b_gather if which == "b" else plan.a_gather) is not None:
            continue  # read through a run-time gather [Note: GEMM gathered operands]
        batch = [e for b in plan.batch if b[col] != 0 for e in (b[1], b[col])]
        if _static(ext, plan.k, off, s_k, s_x, *batch):
            out[names.index(buf)] = which
    return out


@dataclass(frozen=True)
class PackLayout:
    """Turns an operand's constant buffer (any shape, read flat) into its packed layout
    [Note: GEMM prepacked operands]: a contiguous 1-D float32 tensor."""
    ext: int        # N for B, M for A
    k: int
    kc: int         # the kernel's KC
    r: int          # NR for B, MR for A
    off: int
    s_k: int
    s_x: int
    batch: tuple[tuple[int, int], ...]  # (size, stride) of the batch axes the operand varies over

    def numel(self) -> int:
        xp = -(-self.ext // self.r) * self.r
        return math.prod(n for n, _ in self.batch) * self.k * xp

    def __call__(self, tensor: Any) -> Any:
        """The packed tensor, written in one pass: the operand seen as a strided
        ``(batch..., K, ext)`` view, each K block copied panel-major into its place, the last
        panel's columns past ``ext`` zeroed."""
        import torch
        flat = tensor.detach().reshape(-1).to(torch.float32)
        if not flat.is_contiguous():
            flat = flat.contiguous()
        nq, full = -(-self.ext // self.r), self.ext // self.r
        nb = math.prod(n for n, _ in self.batch)
        out = torch.empty(max(self.numel(), 1), dtype=torch.float32)
        if self.numel() == 0:
            return out.zero_()
        sizes = [n for n, _ in self.batch] + [self.k, self.ext]
        strides = [s for _, s in self.batch] + [self.s_k, self.s_x]
        if min(strides) < 0:   # as_strided takes no negative strides: gather through an index
            idx = torch.full((), self.off, dtype=torch.int64)
            for n, s in zip(sizes, strides):
                idx = idx[..., None] + torch.arange(n, dtype=torch.int64) * s
            src = flat[idx].reshape(nb, self.k, self.ext)
        else:
            src = flat.as_strided(sizes, strides, self.off).reshape(nb, self.k, self.ext)
        xp = nq * self.r
        blocks = out[:nb * self.k * xp].view(nb, self.k * xp)
        for pc in range(0, self.k, self.kc):
            kcur = min(self.kc, self.k - pc)
            dst = blocks[:, pc * xp:(pc + kcur) * xp].view(nb, nq, kcur, self.r)
            rows = src[:, pc:pc + kcur]
            if full:
                dst[:, :full].copy_(rows[:, :, :full * self.r].reshape(nb, kcur, full, self.r).transpose(1, 2))
            if full < nq:
                tail = dst[:, full]
                tail.zero_()
                tail[:, :, :self.ext - full * self.r].copy_(rows[:, :, full * self.r:])
        return out


def pack_layouts(kernel: Kernel, plan: GemmPlan, constant_inputs: Collection[int],
                 tiles: Tiles | None = None) -> dict[int, PackLayout]:
    """The layout of each input ``gemm_function(.., constant_inputs)`` reads packed."""
    ops = packed_operands(kernel, plan, constant_inputs)
    if not ops:
        return {}
    t = tiles or default_tiles(plan)
    m, n, _, _ = _extents(plan)
    k = int(plan.k)
    kc = t.kc if k >= t.kc else max(k, 1)
    out = {}
    for pos, which in ops.items():
        if which == "b":
            ext, off, s_k, s_x, r, col = n, plan.b_off, plan.b_k, plan.b_n, t.nr, 3
        else:
            ext, off, s_k, s_x, r, col = m, plan.a_off, plan.a_k, plan.a_m, t.mr, 2
        batch = tuple((int(b[1]), int(b[col])) for b in plan.batch if b[col] != 0)
        out[pos] = PackLayout(int(ext), k, kc, r, int(off), int(s_k), int(s_x), batch)
    return out


def _split(var: str, axes: tuple[tuple[str, sympy.Expr], ...]) -> dict[str, str]:
    """C expressions of each axis of a flattened group (outer to inner) from its flat index."""
    out: dict[str, str] = {}
    inner = sympy.Integer(1)
    for i, (name, n) in enumerate(reversed(axes)):
        e = var if inner == 1 else f"({var} / ({c_index(inner)}))"
        out[name] = e if i == len(axes) - 1 else f"({e} % ({c_index(n)}))"
        inner = inner * n
    return out


def _gather_lines(g: Gather, src: str, var: str, at: str) -> list[str]:
    """C that gathers an operand through its index into the contiguous panel ``var`` at
    ``at`` (a ``unsigned char *`` expression) and defines ``{var}_END``, the first byte past
    it (64-byte aligned) [Note: GEMM gathered operands]: OpenMP over the outer axes, the
    innermost axis a plain loop (its floor/Mod by constants strength-reduced by the compiler)."""
    ix, axes = g
    pre = f"g{var[-1].lower()}_"
    outer, inner = axes[:-1], axes[-1:]
    names = {name: f"{pre}{name}" for name, _ in axes}
    n_out = c_index(sympy.prod([n for _, n in outer]) if outer else 1)
    n_in = c_index(inner[0][1]) if inner else "1"
    load = f"{src}[{c_index(ix, names)}]"
    sp = _split("GO", outer) if outer else {}
    L = [f"    float *EFFC_RESTRICT {var} = (float *){at};",
         f"    unsigned char *{var}_END = {at} + effc_align64(({n_out}) * ({n_in}) * 4);",
         "    #pragma omp parallel for num_threads(NT) schedule(static)",
         f"    for (int64_t GO = 0; GO < {n_out}; GO++) {{",
         *(f"        const int64_t {names[name]} = {sp[name]};" for name, _ in outer),
         f"        float *EFFC_RESTRICT GD = {var} + GO * ({n_in});"]
    if inner:
        i = names[inner[0][0]]
        L += [f"        for (int64_t {i} = 0; {i} < {n_in}; {i}++) GD[{i}] = {load};"]
    else:
        L += [f"        GD[0] = {load};"]
    return L + ["    }"]


def gemm_function(kernel: Kernel, plan: GemmPlan, symbols: Any, epilogue: Epilogue,
                  tiles: Tiles | None = None, threads: int | None = None,
                  constant_inputs: Collection[int] = frozenset()) -> str:
    """The C function of a GEMM-form template kernel [Note: C GEMM template]; it uses at most
    ``gemm_scratch(plan, tiles, threads, prepacked)`` bytes of ``scratch``. The inputs
    ``packed_operands(kernel, plan, constant_inputs)`` names arrive packed
    [Note: GEMM prepacked operands] (``pack_layouts`` with the same tiles packs them)."""
    names = buffer_params(kernel)
    t = tiles or default_tiles(plan)
    pre = set(packed_operands(kernel, plan, constant_inputs).values())
    tag = f"{t.mr}x{t.nr}w{t.width}"
    mr, nr = t.mr, t.nr
    m, n, nb, b_varies = _extents(plan)
    axis = {name: "0" for name in plan.fixed}
    axis.update(_split("EM", plan.m_axes))
    axis.update(_split("EN", plan.n_axes))
    axis.update({b[0]: f"b_{b[0]}" for b in plan.batch})

    def batch_vars(ind: str, var: str) -> list[str]:
        sp = _split(var, tuple((b[0], b[1]) for b in plan.batch))
        return [f"{ind}const int64_t b_{b[0]} = {sp[b[0]]};" for b in plan.batch]

    def packed_batch(col: int) -> str:
        """The flat index of the batch point over the batch axes an operand varies over."""
        e = "0"
        for b in plan.batch:
            if b[col] != 0:
                e = f"({e}) * {c_index(b[1])} + b_{b[0]}"
        return e

    src = {"a": names[plan.a], "b": names[plan.b]}
    scr = "scratch"
    gather: list[str] = []
    for which, g in (("a", plan.a_gather), ("b", plan.b_gather)):
        if g is not None:
            gather += _gather_lines(g, names[plan.a if which == "a" else plan.b], f"G{which.upper()}", scr)
            src[which], scr = f"G{which.upper()}", f"(G{which.upper()}_END)"

    def offset(which: int) -> str:
        terms = [c_index(plan.a_off if which == 0 else plan.b_off)]
        terms += [f"b_{b[0]} * ({c_index(b[2 + which])})" for b in plan.batch if b[2 + which] != 0]
        return " + ".join(terms)

    pack_b = [
        f"    const int64_t NBB = {'NB' if b_varies else '1'};",
        f"    float *EFFC_RESTRICT PB = (float *){scr};",
        "    const int64_t PB_BYTES = effc_align64(NBB * (K > 0 ? K : 1) * NP * 4);",
        "    const int64_t NQ = NP / " + str(nr) + ";",
        "    #pragma omp parallel num_threads(NT)",
        "    {",
        "        #pragma omp for schedule(static)",
        "        for (int64_t T = 0; T < NBB * NQ; T++) {",
        "            const int64_t BT = T / NQ, Q = T % NQ;",
        *batch_vars("            ", "BT"),
        f"            const float *SRC = {src['b']} + {offset(1)} + Q * {nr} * B_N;",
        f"            const int64_t NV = N - Q * {nr} < {nr} ? N - Q * {nr} : {nr};",
        "            for (int64_t KB = 0; KB < NKB; KB++) {",
        "                const int64_t PC = KB * KC, KCUR = K - PC < KC ? K - PC : KC;",
        f"                effc_gemm_pack_b_{tag}(SRC + PC * B_K, B_K, B_N, KCUR, NV, PB + BT * K * NP + PC * NP + Q * KCUR * {nr});",
        "            }",
        "        }",
    ]
    if "b" in pre:
        pbb = f"PB + ({packed_batch(3)}) * K * NP"
    else:
        pbb = f"PB + {'BT' if b_varies else '0'} * K * NP"
    L = [f"{kernel_signature(kernel)} {{", *size_decls(kernel, symbols),
         f"    const int64_t M = {c_index(m)}, N = {c_index(n)}, K = {c_index(plan.k)}, NB = {c_index(nb)};",
         f"    const int64_t A_M = {c_index(plan.a_m)}, A_K = {c_index(plan.a_k)};",
         f"    const int64_t B_K = {c_index(plan.b_k)}, B_N = {c_index(plan.b_n)};",
         "    if (M <= 0 || N <= 0 || NB <= 0) return;",
         f"    const int64_t KC = K < {t.kc} ? (K > 0 ? K : 1) : {t.kc};",
         "    const int64_t NKB = K > 0 ? (K + KC - 1) / KC : 1;",
         f"    const int64_t NP = (N + {nr - 1}) / {nr} * {nr};",
         f"    const int NT = effc_team({threads or effc_threads()});",
         f"    const int64_t MPA = (M + {mr - 1}) / {mr} * {mr};",
         "    (void)MPA; (void)A_M; (void)A_K;",
         # Tiles no larger than the problem; then split until every thread has work.
         f"    int64_t MC = {t.mc} < M ? {t.mc} : (M + {mr - 1}) / {mr} * {mr};",
         f"    int64_t NC = {t.nc} < NP ? {t.nc} : NP;",
         "    int64_t NIC = (M + MC - 1) / MC, NJC = (N + NC - 1) / NC;",
         "    if (NT > 1 && (NB * NIC * NJC) % NT != 0 && NB * NIC * NJC < 8 * NT) {",
         "        int64_t WANT = (NB * NIC * NJC + NT - 1) / NT * NT;",
         "        if (NB * NJC < WANT && M > " + str(mr) + ") {",
         "            int64_t NI = (WANT / NB + NJC - 1) / NJC;",
         f"            MC = ((M + NI - 1) / NI + {mr - 1}) / {mr} * {mr};",
         "            NIC = (M + MC - 1) / MC;",
         "        }",
         "        if ((NB * NIC * NJC) % NT != 0 && NB * NIC * NJC < NT) {",
         "            int64_t NJ = (NT + NB * NIC - 1) / (NB * NIC);",
         f"            NC = ((N + NJ - 1) / NJ + {nr - 1}) / {nr} * {nr};",
         "            NJC = (N + NC - 1) / NC;",
         "        }",
         "    }",
         *gather,
         *(pack_b if "b" not in pre else
           [f"    const float *EFFC_RESTRICT PB = {names[plan.b]};", "    const int64_t PB_BYTES = 0;",
            "    (void)B_K; (void)B_N;", "    #pragma omp parallel num_threads(NT)", "    {"]),
         "        const int64_t LDC = (NC + " + str(nr - 1) + ") / " + str(nr) + " * " + str(nr) + ";",
         f"        const int64_t PA_BYTES = {0 if 'a' in pre else f'effc_align64((MC + {mr - 1}) / {mr} * {mr} * KC * 4)'};",
         f"        const int64_t CT_BYTES = effc_align64((MC + {mr - 1}) / {mr} * {mr} * LDC * 4);",
         f"        unsigned char *MINE = {scr} + PB_BYTES + (int64_t)effc_thread_id() * (PA_BYTES + CT_BYTES);",
         *([] if "a" in pre else ["        float *EFFC_RESTRICT PA = (float *)MINE;"]),
         "        float *EFFC_RESTRICT CT = (float *)(MINE + PA_BYTES);",
         "        #pragma omp for schedule(static)",
         "        for (int64_t T = 0; T < NB * NIC * NJC; T++) {",
         "            const int64_t BT = T / (NIC * NJC), IC = (T / NJC) % NIC * MC, JC = T % NJC * NC;",
         "            const int64_t MCUR = M - IC < MC ? M - IC : MC, NCUR = N - JC < NC ? N - JC : NC;",
         *batch_vars("            ", "BT"),
         (f"            const float *ASRC = {src['a']} + {offset(0)} + IC * A_M;" if "a" not in pre else
          f"            const float *PAB = {names[plan.a]} + ({packed_batch(2)}) * K * MPA;"),
         f"            const float *PBB = {pbb};",
         "            for (int64_t KB = 0; KB < NKB; KB++) {",
         "                const int64_t PC = KB * KC, KCUR = K - PC < KC ? K - PC : KC;",
         (f"                effc_gemm_pack_a_{tag}(ASRC + PC * A_K, A_M, A_K, MCUR, KCUR, PA);" if "a" not in pre else
          "                const float *EFFC_RESTRICT PA = PAB + PC * MPA + IC * KCUR;"),
         f"                for (int64_t JR = 0; JR < NCUR; JR += {nr}) {{",
         f"                    for (int64_t IR = 0; IR < MCUR; IR += {mr}) {{",
         f"                        float *EFFC_RESTRICT CP = CT + IR * LDC + JR;",
         f"                        effc_gemm_ukr_{tag}(KCUR, PA + IR * KCUR, PBB + PC * NP + (JC + JR) * KCUR, CP, LDC, KB > 0);",
         "                        if (KB == NKB - 1) {",
         f"                            const int64_t MV = MCUR - IR < {mr} ? MCUR - IR : {mr};",
         f"                            const int64_t NV = NCUR - JR < {nr} ? NCUR - JR : {nr};",
         "                            for (int64_t II = 0; II < MV; II++) {",
         "                                const int64_t EM = IC + IR + II;",
         # each JJ stores its own output element: the epilogue's math (erf, tanh) vectorises
         "                                #pragma omp simd",
         "                                for (int64_t JJ = 0; JJ < NV; JJ++) {",
         "                                    const int64_t EN = JC + JR + JJ;",
         "                                    const float acc = CP[II * LDC + JJ];",
         "                                    (void)EM; (void)EN;",
         epilogue(axis, " " * 36).rstrip("\n"),
         "                                }",
         "                            }",
         "                        }",
         "                    }",
         "                }",
         "            }",
         "        }",
         "    }",
         "}", ""]
    return core_source(t) + "\n".join(L)
