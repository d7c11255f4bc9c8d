"""Reduction kernels of the Triton generator: the loops of [Note: kernel loops] over blocks of
the reduce axes.

[Note: Triton reductions]
A program holds ``xblock`` outer points as a ``[xblock, 1]`` column ``x`` and walks the
flattened reduce axes ([Note: Triton flat indices]) as a ``[1, rblock]`` row ``r``; top-level
statements are ``[xblock, 1]`` values, loop statements ``[xblock, rblock]`` tiles.
- Persistent (``rblock`` >= R): the whole row is one tile, so each ``Loop`` is straight-line
  code on it and its reductions are one ``tl.sum``/``tl.reduce`` over axis 1. Every loop sees
  the same tile, so a load or computation repeated in a later loop (softmax's ``x`` in its
  three loops) is reused, not re-read: one pass over memory.
- Looped: each ``Loop`` becomes ``for roff in range(0, R, rblock)`` with per-lane
  accumulators of the tile's shape, reduced across lanes after the loop. A sum so adds
  ``R / rblock`` terms per lane and then a tree over ``rblock`` lanes, an order whose error
  grows like that of C's chunked sums ([Note: C reductions]).
- Lanes outside the domain (``mask``) contribute the identity. max/min keep NaN
  (``a > b or a is NaN``), as torch's amax/amin; argmax/argmin reduce (value, position)
  pairs where a NaN counts as the extreme and ties go to the lower position (torch's first
  index), masked lanes carrying position 2**31 - 1 so they never win a tie. f16/bf16 sums and
  products are rounded once, after the reduction. any/all reduce ``value != 0`` as int32.
- A symbolic R with a persistent config also gets a looped twin (``_looped``), which the
  launcher runs when R outgrows the block at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from effc.ir import DType
from effc.ir.kernel import Loop, Reduce

from .triton_abi import literal, temp_dtype, tl_dtype
from .triton_math import _helper
from .triton_scalar import cast_expr

if TYPE_CHECKING:
    from .triton import Body, _Generator

BIG = 2**31 - 1
_INT_LIMITS = {DType.I64: (-2**63, 2**63 - 1), DType.I32: (-2**31, 2**31 - 1), DType.I16: (-2**15, 2**15 - 1),
               DType.I8: (-128, 127), DType.U8: (0, 255)}

_helper("max_combine", """
def effc_max_combine(a, b):
    return tl.where((a > b) | (a != a), a, b)
""")
_helper("min_combine", """
def effc_min_combine(a, b):
    return tl.where((a < b) | (a != a), a, b)
""")
_helper("prod_combine", """
def effc_prod_combine(a, b):
    return a * b
""")
for _op, _cmp in (("argmax", ">"), ("argmin", "<")):
    _helper(f"{_op}_combine", f"""
def effc_{_op}_combine(v1, i1, v2, i2):
    nan1 = v1 != v1
    nan2 = v2 != v2
    tie = (v1 == v2) | (nan1 & nan2)
    first = (v1 {_cmp} v2) | (nan1 & (v2 == v2)) | (tie & (i1 < i2))
    return tl.where(first, v1, v2), tl.where(first, i1, i2)
""")


def _identity(op: str, dtype: DType) -> str:
    if op == "sum":
        return "0"
    if op == "prod":
        return "1"
    low = op in ("max", "argmax")
    if dtype.is_float:
        return literal(float("-inf") if low else float("inf"), dtype)
    lo, hi = _INT_LIMITS.get(dtype, (0, 1))
    return str(lo if low else hi)


def reduction_kernel(gen: "_Generator", looped: bool, suffix: str = "") -> str:
    """The jit function of a reduction kernel, persistent or looped ([Note: Triton reductions])."""
    from .triton import R, X, Body
    c = gen.config
    xb, rb = c.xblock, c.rblock
    lines = gen.prologue(f"[{xb}, 1]") + [f"x = pid * {xb} + tl.arange(0, {xb})[:, None]"]
    xmask = gen.mask_line(lines, "x", xb)
    lines += [f"zx = tl.zeros([{xb}, 1], tl.int32)", f"zr = tl.zeros([1, {rb}], tl.int32)"]
    top = Body(gen, f"[{xb}, 1]", xmask, {X: None})
    cse: dict[object, str] = {}
    tile = f"[{xb}, {rb}]"
    head: list[str] = []
    if not looped:
        lines.append(f"r = tl.arange(0, {rb})[None, :]")
        mask = _masks(gen, lines, xmask, rb)
    for s in gen.kernel.body:
        if not isinstance(s, Loop):
            lines += top.statement(s)
            continue
        if looped:
            head = [f"r = roff + tl.arange(0, {rb})[None, :]"]
            mask = _masks(gen, head, xmask, rb)
        body = Body(gen, tile, mask, {X: None, R: "zr"}, parent=top, cse=None if looped else cse)
        init: list[str] = []
        inner: list[str] = []
        final: list[str] = []
        for st in s.body:
            if isinstance(st, Reduce):
                _reduce(gen, body, st, looped, tile, mask, init, inner, final)
            else:
                inner += body.statement(st)
        if looped:
            lines += init + [f"for roff in range(0, {gen.numel_text('r')}, {rb}):"]
            lines += ["    " + ln for ln in head + inner] + final
        else:
            lines += inner + final
    return gen.function(gen.fn + suffix, lines)


def _masks(gen: "_Generator", lines: list[str], xmask: str | None, rb: int) -> str | None:
    rmask = gen.mask_line(lines, "r", rb)
    parts = [m for m in (xmask, rmask) if m]
    if not parts:
        return None
    lines.append("mask = " + " & ".join(parts))
    return "mask"


def _reduce(gen: "_Generator", body: "Body", s: Reduce, looped: bool, tile: str, mask: str | None,
            init: list[str], inner: list[str], final: list[str]) -> None:
    """Lines that fold ``s``: accumulator set-up before a looped loop (``init``), per-step
    updates (``inner``) and the cross-lane reduction after it (``final``)."""
    v = body.ref(s.value)
    vtype = temp_dtype(body.types[s.value])
    body.types[s.dst] = s.dtype
    dst = body.var(s.dst)
    held = temp_dtype(s.dtype)
    ty = tl_dtype(held)
    op = s.op
    if s.dtype is DType.BOOL and op in ("max", "min"):
        op = "any" if op == "max" else "all"
    vv = f"tl.broadcast_to({v}, {tile})"

    def masked(x: str, ident: str) -> str:
        return f"tl.where({mask}, {x}, {ident})" if mask else x
    acc = f"acc_{dst}"
    if op in ("sum", "prod", "max", "min"):
        ident = _identity(op, held)
        if op in ("sum", "prod") and vtype is not held:
            vv = f"{vv}.to({ty})"
        combine = {"prod": "effc_prod_combine", "max": "effc_max_combine", "min": "effc_min_combine"}.get(op)
        if combine:
            gen.helpers.add(combine[5:])
        if op == "sum":
            across = lambda t: f"tl.sum({t}, 1)"  # noqa: E731
        else:
            across = lambda t: f"tl.reduce({t}, 1, {combine})"  # noqa: E731
        if looped:
            init.append(f"{acc} = tl.full({tile}, {ident}, {ty})")
            step = {"sum": f"{acc} + {masked(vv, ident)}", "prod": f"{acc} * {masked(vv, ident)}"}.get(
                op, f"{combine}({acc}, {masked(vv, ident)})")
            inner.append(f"{acc} = {step}")
            red = across(acc)
        else:
            red = across(masked(vv, ident))
        out = f"{red}[:, None].to({ty})"
        if op in ("sum", "prod") and s.dtype in (DType.F16, DType.BF16):
            out = cast_expr(out, DType.F32, s.dtype)
        final.append(f"{dst} = {out}")
        return
    if op in ("any", "all"):
        ident = "0" if op == "any" else "1"
        fold, pick = ("tl.max", "tl.maximum") if op == "any" else ("tl.min", "tl.minimum")
        vb = masked(f"({vv} != 0).to(tl.int32)", ident)
        if looped:
            init.append(f"{acc} = tl.full({tile}, {ident}, tl.int32)")
            inner.append(f"{acc} = {pick}({acc}, {vb})")
            red = f"{fold}({acc}, 1)"
        else:
            red = f"{fold}({vb}, 1)"
        final.append(f"{dst} = {cast_expr(f'({red}[:, None] != 0)', DType.BOOL, s.dtype)}")
        return
    # argmax / argmin: (value, position) pairs
    combine = f"effc_{op}_combine"
    gen.helpers.add(f"{op}_combine")
    if vtype is DType.BOOL:
        vv, vtype = f"{vv}.to(tl.int32)", DType.I32
    ident = _identity(op, vtype)
    pos = masked("r + zx", str(BIG))
    if looped:
        init += [f"{acc} = tl.full({tile}, {ident}, {tl_dtype(vtype)})", f"{acc}_i = tl.full({tile}, {BIG}, tl.int32)"]
        inner.append(f"{acc}, {acc}_i = {combine}({acc}, {acc}_i, {masked(vv, ident)}, {pos})")
        final.append(f"{acc}_v, {acc}_p = tl.reduce(({acc}, {acc}_i), 1, {combine})")
    else:
        final.append(f"{acc}_v, {acc}_p = tl.reduce(({masked(vv, ident)}, {pos}), 1, {combine})")
    final.append(f"{dst} = {cast_expr(f'{acc}_p[:, None]', DType.I32, s.dtype)}")
