"""Which domain axes of a matmul or convolution template are a Triton GEMM's batch, M and N,
and how each operand's tile is addressed.

    %acc = matmul sum(a0[240*i0 + 80*i1 + 16*i2 + r0] * a1[128*i1 + i3 + 8*r0])
    (a0: f32[2, 3, 5, 16] @ a1: f32[3, 16, 8], a batch broadcast)
plans as
    batch (i1 < 3), M (i0 < 2, i2 < 5), N (i3 < 8), K (r0 < 16); A = a0, B = a1

[Note: Triton GEMM form]
Every template is ``acc = sum_k op0[index0] * op1[index1]``; the Triton template tiles it as a
GEMM whatever the layouts, by the dependencies of the index expressions alone:

- a domain axis both operands read is a batch axis (one program grid slice per point, as a
  scalar); one only ``A`` reads is an M axis, one only ``B`` reads an N axis; the M axes
  flatten (row-major, in domain order) into the tile's rows, the N axes into its columns, the
  reduce axes into K. So a broadcast batch (``[2, 3, 5, k] @ [3, k, n]``) folds its
  broadcast axis into M, and a convolution's output pixels (batch, height, width) all become
  N: implicit GEMM with no im2col buffer;
- ``B`` is the operand that alone reads the innermost domain axis, so tiles store along the
  output's contiguous axis (the weight side of ``x @ w``, the input side of an NCHW
  convolution);
- a domain axis that an operand reads only through ``floor(ax / q)`` and ``Mod(ax, q)`` with
  ``q`` dividing its extent is split in two, ``ax = q * axg + axc``: a grouped convolution's
  output channel becomes the group (a batch axis) and the channel within the group (M);
- each operand's tile of offsets is its index expression evaluated on tile-shaped axis
  values (triton_epilogue.py). Where it separates as ``outer(domain) + inner(reduce)`` the outer
  part is computed once per program; where the inner part is ``stride * k`` for the flat ``k``
  the operand walks K by pointer increments (the plain matmul path); otherwise (convolution
  windows, gathered views) the reduce axes are recovered from ``k`` by division each step.
  Non-affine indices (views folded into floor/Mod) need no gather pass: they are evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from effc.ir import DType
from effc.ir.kernel import Kernel, LoweringError
from effc.ir.kernel_templates import stride

Axes = tuple[tuple[sympy.Symbol, sympy.Expr], ...]


@dataclass(frozen=True)
class Side:
    """One operand as a tile reads it, its index and mask over the form's symbols."""
    buffer: str
    index: sympy.Expr
    mask: sympy.Basic | None
    dtype: DType


@dataclass(frozen=True)
class GemmForm:
    a: Side                 # tiles [BM, BK]
    b: Side                 # tiles [BK, BN]
    batch: Axes
    m: Axes
    n: Axes
    k: Axes
    subst: tuple[tuple[sympy.Symbol, sympy.Expr], ...]  # split domain axes -> q * axg + axc

    @staticmethod
    def extent(axes: Axes) -> sympy.Expr:
        return sympy.Mul(*[n for _, n in axes]) if axes else sympy.Integer(1)


def _sym(name: str) -> sympy.Symbol:
    return sympy.Symbol(name, integer=True, nonnegative=True)


def _split_factor(ax: sympy.Symbol, size: sympy.Expr, exprs: list[sympy.Basic]) -> int | None:
    """The ``q`` of ``floor(ax / q)`` / ``Mod(ax, q)`` in ``exprs`` when there is one and it
    divides the axis' static extent."""
    qs: set[int] = set()
    for e in exprs:
        for f in e.atoms(sympy.floor):
            num, den = sympy.fraction(sympy.together(f.args[0]))
            if num == ax and den.is_Integer:
                qs.add(int(den))
        for m in e.atoms(sympy.Mod):
            if m.args[0] == ax and m.args[1].is_Integer:
                qs.add(int(m.args[1]))
    if len(qs) != 1 or not size.is_Integer:
        return None
    q = qs.pop()
    return q if 1 < q < int(size) and int(size) % q == 0 else None


def _split(e: sympy.Basic, ax: sympy.Symbol, q: int, g: sympy.Symbol, c: sympy.Symbol) -> sympy.Basic:
    rep: dict[sympy.Basic, sympy.Basic] = {}
    for f in e.atoms(sympy.floor):
        num, den = sympy.fraction(sympy.together(f.args[0]))
        if num == ax and den == q:
            rep[f] = g
    for m in e.atoms(sympy.Mod):
        if m.args[0] == ax and m.args[1] == q:
            rep[m] = c
    out = e.xreplace(rep).subs(ax, q * g + c)
    return out if isinstance(out, sympy.logic.boolalg.Boolean) else sympy.expand(out)


def gemm_form(kernel: Kernel) -> GemmForm:
    """The GEMM form of a matmul or convolution template [Note: Triton GEMM form]; raises
    LoweringError for templates of another shape."""
    t = kernel.template
    if t is None or t.op not in ("matmul", "conv"):
        raise LoweringError(f"kernel {kernel.name} has no matmul or conv template")
    if len(t.operands) != 2:
        raise LoweringError(f"a template of {len(t.operands)} operands is not a GEMM")
    dom = [(a.symbol, sympy.sympify(a.size)) for a in kernel.domain if sympy.sympify(a.size) != 1]
    red = tuple((a.symbol, sympy.sympify(a.size)) for a in kernel.reduce if sympy.sympify(a.size) != 1)
    idx = [sympy.expand(sympy.sympify(o.index)) for o in t.operands]
    masks = [None if o.mask is None or o.mask is sympy.true else o.mask for o in t.operands]
    subst: list[tuple[sympy.Symbol, sympy.Expr]] = []
    axes: list[tuple[sympy.Symbol, sympy.Expr]] = []
    for ax, n in dom:
        q = _split_factor(ax, n, idx + [m for m in masks if m is not None])
        if q is None:
            axes.append((ax, n))
            continue
        g, c = _sym(f"{ax.name}g"), _sym(f"{ax.name}c")
        idx = [_split(e, ax, q, g, c) for e in idx]
        masks = [None if m is None else _split(m, ax, q, g, c) for m in masks]
        axes += [(g, sympy.Integer(int(n) // q)), (c, sympy.Integer(q))]
        subst.append((ax, q * g + c))
    reads = [e.free_symbols | (m.free_symbols if m is not None else set()) for e, m in zip(idx, masks)]

    def deps(s: sympy.Symbol) -> frozenset[int]:
        return frozenset(i for i in (0, 1) if s in reads[i])
    ib = 1
    if axes and len(deps(axes[-1][0])) == 1:
        ib = next(iter(deps(axes[-1][0])))
    ia = 1 - ib
    m = tuple(x for x in axes if deps(x[0]) == {ia})
    n = tuple(x for x in axes if deps(x[0]) == {ib})
    batch = tuple(x for x in axes if x not in m and x not in n)
    sides = [Side(o.buffer, e, mk, kernel.buffer(o.buffer).dtype) for o, e, mk in zip(t.operands, idx, masks)]
    return GemmForm(sides[ia], sides[ib], batch, m, n, red, tuple(subst))


@dataclass(frozen=True)
class Addressing:
    """How one operand's tile is addressed [Note: Triton GEMM form]: ``outer`` over the domain
    axes and ``inner`` over the reduce axes where the index separates (else None, and the
    whole index is evaluated each K step); ``flat_stride`` where ``inner == flat_stride * k``."""
    outer: sympy.Expr | None
    inner: sympy.Expr | None
    flat_stride: sympy.Expr | None


def addressing(side: Side, form: GemmForm) -> Addressing:
    ks = [s for s, _ in form.k]
    outer = sympy.expand(side.index.subs({s: 0 for s in ks}))
    inner = sympy.expand(side.index - outer)
    domain = {s for s, _ in form.batch + form.m + form.n}
    if inner.free_symbols & domain:
        return Addressing(None, None, None)
    if not ks:
        return Addressing(outer, inner, sympy.Integer(0))
    flat = sympy.Integer(0)
    scale = sympy.Integer(1)
    for s, n in reversed(form.k):
        flat, scale = flat + s * scale, scale * n
    st = stride(inner, ks[-1])
    if st is None or st.free_symbols & (set(ks) | domain) or sympy.expand(inner - st * flat) != 0:
        return Addressing(outer, inner, None)
    return Addressing(outer, inner, st)
