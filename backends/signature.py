"""Checking call-time inputs against a graph's input types, and binding its size symbols.

Every backend calls ``bind_inputs`` first: it rejects inputs of the wrong number, dtype or shape
with an InputError, and returns the value of every size symbol, so that a program compiled once
serves every size its symbols admit.
"""

from __future__ import annotations

from typing import Sequence

import sympy
import torch

from effc.errors import InputError
from effc.ir import Graph
from effc.ir.types import dim_str


def bind_inputs(graph: Graph, inputs: Sequence[torch.Tensor]) -> dict[sympy.Symbol, int]:
    if len(inputs) != len(graph.inputs):
        raise InputError(f"expected {len(graph.inputs)} inputs, got {len(inputs)}")
    env: dict[sympy.Symbol, int] = {}
    deferred: list[tuple[str, int, sympy.Expr, int]] = []
    for v, t in zip(graph.inputs, inputs):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"input {v.name}: expected a tensor, got {type(t).__name__}")
        want = v.type.dtype.to_torch()
        if t.dtype != want:
            raise InputError(f"input {v.name}: expected dtype {v.type.dtype}, got {t.dtype}")
        if t.dim() != v.type.rank:
            raise InputError(f"input {v.name}: expected shape {_shape(v.type.shape)}, "
                             f"got {list(t.shape)}")
        for axis, (d, n) in enumerate(zip(v.type.shape, t.shape)):
            if isinstance(d, int):
                if d != n:
                    raise InputError(f"input {v.name}: expected shape {_shape(v.type.shape)}, "
                                     f"got {list(t.shape)}")
            elif isinstance(d, sympy.Symbol):
                if env.setdefault(d, int(n)) != n:
                    raise InputError(f"input {v.name}: size {d} is {env[d]} elsewhere but {n} "
                                     f"on axis {axis}")
            else:
                deferred.append((v.name or "?", axis, d, int(n)))
    for name, axis, expr, n in deferred:
        missing = expr.free_symbols - env.keys()
        if missing:
            raise InputError(f"input {name}: size {expr} on axis {axis} uses unbound "
                             f"{sorted(map(str, missing))}")
        if int(expr.subs(env)) != n:
            raise InputError(f"input {name}: axis {axis} must be {expr} = {int(expr.subs(env))}, got {n}")
    return env


def _shape(shape: tuple) -> str:
    return "[" + ", ".join(dim_str(d) for d in shape) + "]"
