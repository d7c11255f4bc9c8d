"""Evaluating size expressions quickly at call time.

Attributes may hold sympy expressions of the graph's size symbols. Substituting into sympy on
every call is slow (tens of microseconds each), so each expression is compiled once into a
plain Python function of the symbols.
"""

from __future__ import annotations

from typing import Any, Callable

import sympy

from effc.ir.attrs import symbols_in


class SymbolicAttrs:
    """Evaluates a (possibly nested) attribute value under a symbol binding."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.symbolic = bool(symbols_in(value))
        self._fns: dict[sympy.Expr, Callable[..., Any]] = {}

    def __call__(self, env: dict[sympy.Symbol, int]) -> Any:
        return self._eval(self.value, env) if self.symbolic else self.value

    def _eval(self, v: Any, env: dict[sympy.Symbol, int]) -> Any:
        if isinstance(v, sympy.Basic):
            fn = self._fns.get(v)
            if fn is None:
                syms = sorted(v.free_symbols, key=str)
                lam = sympy.lambdify(syms, v, modules="math")
                fn = self._fns[v] = lambda e, _l=lam, _s=syms: _l(*(e[s] for s in _s))
            return int(fn(env))
        if isinstance(v, tuple):
            return tuple(self._eval(x, env) for x in v)
        if isinstance(v, dict):
            return {k: self._eval(x, env) for k, x in v.items()}
        return v
