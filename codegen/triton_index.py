"""Index arithmetic of generated Triton kernels: the loop axes of the kernel IR expressed
through one flat program index per group of axes, and size formulas printed for the launcher.

[Note: Triton flat indices]
A Triton program covers a block of the flattened domain: point-wise kernels one flat index
``x`` over all domain axes, reduction kernels ``x`` over the domain axes and ``r`` over the
reduce axes (row-major, so ``r`` is also argmax's position). Each axis is then
``floor(x / stride) mod extent``; substituted naively, ``64*i0 + i1`` would become
``64*(x // 64) + x % 64``, which costs a division and hides contiguity from Triton's axis
analysis (and so the 16-byte vector loads). ``flatten`` instead finds, in the linear part of
every index, runs of consecutive axes whose coefficients are those of a contiguous row-major
block (``c*d1*d2, c*d2, c`` for extents ``d0, d1, d2``): such a run is ``c`` times one
``floor``/``Mod`` of the flat index, and a run reaching the outermost axis needs no ``Mod``;
a run that is the whole group is just ``c*x``. So a contiguous operand reads ``x``, a
broadcast bias ``x % 64`` and a transposed one ``(x // 64) + 64*(x % 64)``. Terms that are not
linear in one axis (the floor/Mod of reshapes) get each axis substituted. Axes of extent 1
are index 0 already (kernel_lower) and drop out.
"""

from __future__ import annotations

from typing import Sequence

import sympy

from effc.ir.kernel import Axis, LoweringError

from .triton_abi import IndexPrinter

Group = tuple[Sequence[Axis], sympy.Symbol]   # axes, outermost first, and their flat index


def _strides(axes: Sequence[Axis]) -> list[sympy.Expr]:
    out: list[sympy.Expr] = [sympy.Integer(1)] * len(axes)
    for k in range(len(axes) - 2, -1, -1):
        out[k] = out[k + 1] * sympy.sympify(axes[k + 1].size)
    return out


def _run_value(var: sympy.Symbol, strides: list[sympy.Expr], start: int, end: int) -> sympy.Expr:
    """The row-major flat index of axes ``start..end`` (inclusive) of a group."""
    v: sympy.Expr = var if strides[end] == 1 else sympy.floor(var / strides[end])
    if start > 0:
        v = sympy.Mod(v, sympy.cancel(strides[start - 1] / strides[end]))
    return v


def flatten(e: sympy.Basic, groups: Sequence[Group]) -> sympy.Expr:
    """``e`` over the flat indices of ``groups`` instead of their axes; see [Note: Triton flat
    indices]."""
    e = sympy.expand(sympy.sympify(e))
    axis_of: dict[sympy.Symbol, tuple[int, int]] = {}
    for g, (axes, _) in enumerate(groups):
        for k, a in enumerate(axes):
            axis_of[a.symbol] = (g, k)
    linear: dict[sympy.Symbol, sympy.Expr] = {}
    out: sympy.Expr = sympy.Integer(0)
    rest: list[sympy.Expr] = []
    for t in sympy.Add.make_args(e):
        syms = [s for s in t.free_symbols if s in axis_of]
        if len(syms) == 1:
            c = sympy.cancel(t / syms[0])
            if not (c.free_symbols & set(axis_of)) and not c.has(sympy.floor, sympy.Mod, sympy.ceiling):
                linear[syms[0]] = linear.get(syms[0], sympy.Integer(0)) + c
                continue
        if syms:
            rest.append(t)
        else:
            out += t
    for axes, var in groups:
        strides = _strides(axes)
        k = len(axes) - 1
        while k >= 0:
            c = linear.get(axes[k].symbol)
            if c is None or c == 0:
                k -= 1
                continue
            j = k - 1
            while j >= 0:
                cj = linear.get(axes[j].symbol)
                if cj is None or sympy.expand(cj - c * strides[j] / strides[k]) != 0:
                    break
                j -= 1
            out += c * _run_value(var, strides, j + 1, k)
            k = j
    if rest:
        subs = {}
        for axes, var in groups:
            strides = _strides(axes)
            for k, a in enumerate(axes):
                subs[a.symbol] = _run_value(var, strides, k, k)
        out += sympy.Add(*rest).xreplace(subs)
    leftover = out.free_symbols & set(axis_of)
    if leftover:
        raise LoweringError(f"index {e} keeps axes {sorted(map(str, leftover))} after flattening")
    return out


def numel(axes: Sequence[Axis]) -> sympy.Expr:
    return sympy.Mul(*(sympy.sympify(a.size) for a in axes))


class PythonPrinter(IndexPrinter):
    """Size formulas as plain Python for the launcher: Python's ``//`` and ``%`` floor, as
    sympy's floor and Mod do, whatever the signs."""

    def print(self, e: sympy.Basic, top: bool = False) -> str:
        if isinstance(e, (sympy.floor, sympy.ceiling)):
            num, den = sympy.fraction(sympy.together(e.args[0]))
            if isinstance(e, sympy.ceiling):
                return f"(-((-{self.print(sympy.expand(num))}) // {self.print(den)}))"
            return f"({self.print(sympy.expand(num))} // {self.print(den)})"
        if isinstance(e, sympy.Mod):
            return f"({self.print(e.args[0])} % {self.print(e.args[1])})"
        if isinstance(e, (sympy.Min, sympy.Max)):
            fn = "min" if isinstance(e, sympy.Min) else "max"
            return f"{fn}({', '.join(self.print(a, True) for a in e.args)})"
        if e.is_Rational and not e.is_Integer:
            raise LoweringError(f"a size formula has a fraction {e}")
        return super().print(e, top)
