"""The loop nests of the C generator: domain loops (OpenMP parallel and simd) and reduce loops.

[Note: C reductions]
Per outer point, each ``Loop`` of a reduction kernel becomes one nest over the reduce axes.
Its ``Reduce`` statements fold into accumulators declared before the nest, of the temporary
type (float for f32, f16 and bf16; double for f64; int for any/all). When no argmax/argmin is
in the loop, the innermost axis is a ``#pragma omp simd reduction(..)`` loop, cut into chunks
of ``CHUNK``: a sum adds into a chunk partial (vector accumulators inside it), and each
partial into the total, a two-level order whose error grows with R/CHUNK + CHUNK/width rather
than R. max/min reduce with ``reduction(max:..)`` and keep a NaN flag reduced with ``|``:
torch's amax/amin give NaN when any element is NaN. argmax/argmin run in order (first index
wins; a NaN counts as the extreme, first NaN wins, as torch). f16/bf16 sums and products are
rounded once, after the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sympy

from effc.ir import DType
from effc.ir.kernel import Axis, Kernel, Loop, Reduce

from .c_abi import _c_int, temp_type
from .c_scalar import literal

if TYPE_CHECKING:
    from .c import Emitter

CHUNK = 1024
PARALLEL_MIN = 1 << 15  # points of work below which a kernel stays on one thread
_INT_LIMITS = {DType.I64: ("INT64_MIN", "INT64_MAX"), DType.I32: ("INT32_MIN", "INT32_MAX"),
               DType.I16: ("INT16_MIN", "INT16_MAX"), DType.I8: ("INT8_MIN", "INT8_MAX"),
               DType.U8: ("0", "UINT8_MAX"), DType.BOOL: ("0", "1")}


def _prod(axes: tuple[Axis, ...]) -> sympy.Expr:
    return sympy.Mul(*(sympy.sympify(a.size) for a in axes))


def _parallel(em: "Emitter", work: sympy.Expr, collapse: int, simd: bool) -> str | None:
    """The ``omp parallel for`` pragma for ``work`` points, or None when always too small."""
    work = sympy.simplify(work)
    if work.is_number and int(work) < PARALLEL_MIN:
        return None
    clause = f" collapse({collapse})" if collapse > 1 else ""
    cond = "" if work.is_number else f" if(parallel: {em.expr(work)} >= {PARALLEL_MIN})"
    return f"#pragma omp parallel for{' simd' if simd else ''}{clause}{cond}"


def _for(axis: Axis, em: "Emitter", start: str = "0", end: str | None = None) -> str:
    end = end if end is not None else em.expr(sympy.sympify(axis.size))
    return f"for (int64_t {axis.name} = {start}; {axis.name} < {end}; {axis.name}++) {{"


def kernel_body(kernel: Kernel, em: "Emitter") -> str:
    out = _Lines()
    dom = kernel.domain
    work = _prod(dom) * _prod(kernel.reduce)
    if kernel.kind == "pointwise":
        stmts = [s for s in kernel.body if not isinstance(s, Loop)]
        if not dom:
            for s in stmts:
                out.extend(em.statement(s))
            return out.text(1)
        par = _parallel(em, work, len(dom) - 1, simd=len(dom) == 1)
        for k, a in enumerate(dom):
            if k == len(dom) - 1:
                out.add(par if len(dom) == 1 and par else "#pragma omp simd")
            elif k == 0 and par:
                out.add(par)
            out.add(_for(a, em))
        for s in stmts:
            out.extend(em.statement(s))
        out.add("}" * len(dom))
        return out.text(1)
    par = _parallel(em, work, len(dom), simd=False) if dom else None
    if par:
        out.add(par)
    for a in dom:
        out.add(_for(a, em))
    for s in kernel.body:
        if isinstance(s, Loop):
            _reduce_loop(kernel, s, em, out)
        else:
            out.extend(em.statement(s))
    if dom:
        out.add("}" * len(dom))
    return out.text(1)


class _Lines:
    """Lines with a running indent: a line ending in ``{`` opens, one of ``}`` closes."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []
        self.depth = 0

    def add(self, line: str) -> None:
        if line.startswith("}"):
            self.depth -= 1
        self.lines.append((self.depth, line))
        if line.endswith("{"):
            self.depth += 1

    def extend(self, lines: list[str]) -> None:
        for line in lines:
            self.add(line)

    def text(self, base: int) -> str:
        return "".join("    " * (base + d) + line + "\n" for d, line in self.lines)


def _acc_type(r: Reduce) -> str:
    return "int" if r.dtype is DType.BOOL or r.op in ("any", "all") else temp_type(r.dtype)


def _identity(r: Reduce, value_dtype: DType) -> str:
    if r.op in ("sum", "any", "argmax", "argmin"):
        return "0"
    if r.op in ("prod", "all"):
        return "1"
    d = r.dtype
    if d.is_float:
        inf = literal(float("inf"), d)
        return f"(-{inf})" if r.op == "max" else inf
    lo, hi = _INT_LIMITS[d]
    return lo if r.op == "max" else hi


def _reduce_loop(kernel: Kernel, loop: Loop, em: "Emitter", out: _Lines) -> None:
    reds = [s for s in loop.body if isinstance(s, Reduce)]
    simd = not any(r.op in ("argmax", "argmin") for r in reds)
    for r in reds:
        vt = em.types[r.value]
        out.add(f"{_acc_type(r)} {r.dst} = {_identity(r, vt)};")
        if r.op in ("max", "min") and vt.is_float:
            out.add(f"int n_{r.dst} = 0;")
        if r.op in ("argmax", "argmin"):
            out.add(f"{_acc_type(Reduce('', '', '', vt))} bv_{r.dst} = 0;")
    axes = kernel.reduce
    sums = [r for r in reds if r.op == "sum"]
    clauses = []
    for r in reds:
        op = {"sum": "+", "prod": "*", "max": "max", "min": "min", "any": "|", "all": "&"}.get(r.op)
        if op is not None:
            clauses.append(f"reduction({op}:{'p_' + r.dst if r.op == 'sum' else r.dst})")
            if r.op in ("max", "min") and em.types[r.value].is_float:
                clauses.append(f"reduction(|:n_{r.dst})")
    opened = 0
    for a in axes[:-1]:
        out.add(_for(a, em))
        opened += 1
    inner = axes[-1] if axes else None
    ext = sympy.sympify(inner.size) if inner is not None else sympy.Integer(1)
    chunked = simd and inner is not None and not (ext.is_number and int(ext) <= CHUNK)
    if chunked:
        assert inner is not None
        n = inner.name
        out.add(f"for (int64_t {n}_c = 0; {n}_c < {em.expr(ext)}; {n}_c += {CHUNK}) {{")
        out.add(f"const int64_t {n}_e = {em.expr(ext)} - {n}_c < {CHUNK} ? {em.expr(ext)} : {n}_c + {CHUNK};")
        opened += 1
    for r in sums:
        out.add(f"{_acc_type(r)} p_{r.dst} = 0;")
    if inner is not None:
        if simd:
            out.add(" ".join(["#pragma omp simd"] + clauses))
        if chunked:
            out.add(_for(inner, em, f"{inner.name}_c", f"{inner.name}_e"))
        else:
            out.add(_for(inner, em))
    else:
        out.add("{")
    for s in loop.body:
        if isinstance(s, Reduce):
            out.extend(_update(kernel, s, em))
        else:
            out.extend(em.statement(s))
    out.add("}")
    for r in sums:
        out.add(f"{r.dst} += p_{r.dst};")
    for _ in range(opened):
        out.add("}")
    for r in reds:
        if r.op in ("max", "min") and em.types[r.value].is_float:
            out.add(f"if (n_{r.dst}) {r.dst} = NAN;")
        if r.op in ("sum", "prod") and r.dtype in (DType.F16, DType.BF16):
            out.add(f"{r.dst} = effc_round_{r.dtype}({r.dst});")


def _update(kernel: Kernel, r: Reduce, em: "Emitter") -> list[str]:
    v, d = r.value, r.dst
    isfloat = em.types[v].is_float
    if r.op == "sum":
        return [f"p_{d} += {v};"]
    if r.op == "prod":
        return [f"{d} *= {v};"]
    if r.op in ("any", "all"):
        return [f"{d} {'|' if r.op == 'any' else '&'}= ({v} != 0);"]
    cmp = ">" if r.op in ("max", "argmax") else "<"
    if r.op in ("max", "min"):
        lines = [f"{d} = {v} {cmp} {d} ? {v} : {d};"]
        if isfloat:
            lines.append(f"n_{d} |= ({v} != {v});")
        return lines
    pos = _position(kernel, em)
    better = f"(bv_{d} == bv_{d} && ({v} {cmp} bv_{d} || {v} != {v}))" if isfloat else f"{v} {cmp} bv_{d}"
    return [f"if ({pos} == 0 || {better}) {{", f"bv_{d} = {v};", f"{d} = {pos};", "}"]


def _position(kernel: Kernel, em: "Emitter") -> str:
    """The row-major linear position of the current point within the reduce axes."""
    pos: sympy.Expr = sympy.Integer(0)
    stride: sympy.Expr = sympy.Integer(1)
    for a in reversed(kernel.reduce):
        pos += a.symbol * stride
        stride *= sympy.sympify(a.size)
    return em.expr(pos) if pos != 0 else _c_int(0)
