"""Torch's symbolic sizes (SymInt expressions) as effc size expressions.

Dynamo names its size symbols ``s0``, ``s27``...; they are rebuilt here as effc size symbols
of the same name, and torch's own integer functions (FloorDiv, ModularIndexing, ...) become
plain sympy (floor, Mod). Anything else, e.g. a data-dependent (unbacked) size, is refused.
"""

from __future__ import annotations

from typing import Any

import sympy
import torch

from effc.ir.types import as_dim, size_symbol

from .lowering import Unsupported


def from_torch_expr(e: sympy.Basic) -> sympy.Expr:
    if isinstance(e, sympy.Symbol):
        name = e.name
        if not name.startswith("s"):
            raise Unsupported(f"data-dependent size {name}")
        return size_symbol(name)
    if isinstance(e, sympy.Integer):
        return e
    if isinstance(e, (sympy.Rational, sympy.Float)):
        return e
    if isinstance(e, (sympy.Add, sympy.Mul, sympy.Pow, sympy.Max, sympy.Min)):
        return e.func(*(from_torch_expr(a) for a in e.args))
    name = type(e).__name__
    args = [from_torch_expr(a) for a in e.args]
    if name == "FloorDiv":
        return sympy.floor(args[0] / args[1])
    if name == "CeilDiv":
        return sympy.ceiling(args[0] / args[1])
    if name in ("CleanDiv", "IntTrueDiv", "FloatTrueDiv"):
        return args[0] / args[1]
    if name in ("Mod", "PythonMod"):
        return sympy.Mod(args[0], args[1])
    if name == "ModularIndexing":
        return sympy.Mod(sympy.floor(args[0] / args[1]), args[2])
    if name in ("floor", "FloorToInt"):
        return sympy.floor(args[0])
    if name in ("ceiling", "CeilToInt"):
        return sympy.ceiling(args[0])
    if name in ("TruncToInt", "Identity", "ToFloat"):
        return args[0]
    raise Unsupported(f"size expression {e} uses {name}")


def dim_of(x: Any) -> Any:
    """A python int, SymInt, SymFloat or SymBool as an int/float/bool or sympy expression."""
    if isinstance(x, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        expr = x.node.expr
        if isinstance(x, torch.SymBool):
            raise Unsupported(f"symbolic boolean {expr}")
        e = from_torch_expr(expr)
        return as_dim(e) if isinstance(x, torch.SymInt) else (float(e) if e.is_number else e)
    return x


def shape_of(t: torch.Tensor) -> tuple:
    return tuple(dim_of(d) for d in t.shape)
