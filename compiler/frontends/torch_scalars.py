"""torch-mlir's scalar ops (on ints, floats and bools) evaluated while importing.

Sizes in the torch dialect are computed with ops such as ``torch.aten.size.int`` and
``torch.aten.mul.int``; here they are evaluated on python numbers or, for symbolic sizes, on
sympy expressions over the inputs' size symbols. A comparison that only run time can decide
stays a sympy relation (a ``runtime.assert`` on it is skipped).
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np
import sympy


def _int_binary(f: Callable[[Any, Any], Any]) -> Callable[[list[Any]], Any]:
    return lambda a: f(a[0], a[1])


def _floordiv(x: Any, y: Any) -> Any:
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return x // y
    return sympy.floor(sympy.sympify(x) / y)


def _remainder(x: Any, y: Any) -> Any:
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return x % y
    return sympy.Mod(x, y)


def _compare(f: Callable[[Any, Any], Any]) -> Callable[[list[Any]], Any]:
    def run(a: list[Any]) -> Any:
        r = f(sympy.sympify(a[0]), sympy.sympify(a[1]))
        if r in (sympy.true, sympy.false) or isinstance(r, bool):
            return bool(r)
        return r  # decided only at run time; a runtime assert on it is skipped
    return run


def _number(x: Any, kind: type) -> Any:
    if isinstance(x, sympy.Basic):
        if x.is_number:
            return kind(x)
        return sympy.floor(x) if kind is int else x
    return kind(x)


# Scalar ops on python numbers and sympy sizes (by torch-mlir op name, without "torch.").
SCALAR_OPS: dict[str, Callable[[list[Any]], Any]] = {
    "aten.add.int": _int_binary(operator.add), "aten.sub.int": _int_binary(operator.sub),
    "aten.mul.int": _int_binary(operator.mul), "aten.floordiv.int": _int_binary(_floordiv),
    "aten.remainder.int": _int_binary(_remainder), "aten.neg.int": lambda a: -a[0],
    "aten.add.float_int": _int_binary(operator.add), "aten.sub.float": _int_binary(operator.sub),
    "aten.mul.float": _int_binary(operator.mul), "aten.div.float": _int_binary(operator.truediv),
    "aten.mul.int_float": _int_binary(operator.mul), "aten.mul.float_int": _int_binary(operator.mul),
    "aten.div.int": _int_binary(lambda x, y: sympy.sympify(x) / y if isinstance(x, sympy.Basic) or isinstance(y, sympy.Basic) else x / y),
    "aten.add": _int_binary(operator.add), "aten.sub": _int_binary(operator.sub),
    "aten.mul": _int_binary(operator.mul), "aten.div": _int_binary(operator.truediv),
    "aten.neg.float": lambda a: -a[0],
    "aten.eq.int": _compare(sympy.Eq), "aten.ne.int": _compare(sympy.Ne),
    "aten.lt.int": _compare(sympy.Lt), "aten.le.int": _compare(sympy.Le),
    "aten.gt.int": _compare(sympy.Gt), "aten.ge.int": _compare(sympy.Ge),
    "aten.eq.float": _compare(sympy.Eq), "aten.lt.float": _compare(sympy.Lt),
    "aten.gt.float": _compare(sympy.Gt), "aten.ge.float": _compare(sympy.Ge),
    "aten.le.float": _compare(sympy.Le), "aten.ne.float": _compare(sympy.Ne),
    "aten.__and__.bool": lambda a: bool(a[0]) and bool(a[1]),
    "aten.__or__.bool": lambda a: bool(a[0]) or bool(a[1]),
    "aten.__not__": lambda a: not a[0],
    "aten.Int.float": lambda a: _number(a[0], int), "aten.Int.bool": lambda a: int(a[0]),
    "aten.Int.Scalar": lambda a: _number(a[0], int),
    "aten.Float.Scalar": lambda a: _number(a[0], float),
    "aten.ceil.float": lambda a: sympy.ceiling(a[0]) if isinstance(a[0], sympy.Basic) else int(np.ceil(a[0])),
    "aten.floor.float": lambda a: sympy.floor(a[0]) if isinstance(a[0], sympy.Basic) else int(np.floor(a[0])),
    "aten.__is__": lambda a: a[0] is a[1], "aten.__isnot__": lambda a: a[0] is not a[1],
    "prim.max.int": lambda a: sympy.Max(a[0], a[1]) if any(isinstance(x, sympy.Basic) for x in a) else max(a),
    "prim.min.int": lambda a: sympy.Min(a[0], a[1]) if any(isinstance(x, sympy.Basic) for x in a) else min(a),
    "aten.abs.int": lambda a: abs(a[0]),
}
