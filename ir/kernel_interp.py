"""A vectorised torch evaluator of the kernel IR: how tests prove a lowering right.

Every temporary is a tensor over the whole iteration space at once, shaped ``domain + reduce``
with size-1 dimensions where it does not vary: index expressions are evaluated on broadcast
``arange`` grids of the axes, a load gathers from the flattened buffer, a ``Reduce`` reduces
over the trailing reduce dimensions, a store scatters. Scalar ops run through the reference
backend's own implementations, so the kernel IR means exactly what the graph IR means.
Integer division and ``Mod`` in indices are evaluated in integer arithmetic (floor division
and remainder), never through floats.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import sympy
import torch

from .kernel import Compute, Const, IndexValue, Kernel, Load, Loop, Reduce, Stmt, Store, Template
from .ops import Op

Num = Union[int, float, bool, torch.Tensor]
Env = Mapping[sympy.Symbol, Num]


def eval_index(e: sympy.Basic, env: Env) -> Num:
    """``e`` evaluated over tensors (axis grids) and ints (sizes); see the module doc."""
    if e.is_Integer:
        return int(e)
    if e.is_Number:
        return float(e)
    if e in (sympy.true, sympy.false):
        return bool(e)
    if isinstance(e, sympy.Symbol):
        return env[e]
    args = [eval_index(a, env) for a in e.args] if not isinstance(e, (sympy.floor, sympy.ceiling)) else []
    if isinstance(e, sympy.Add):
        return _fold(args, lambda x, y: x + y)
    if isinstance(e, sympy.Mul):
        return _fold(args, lambda x, y: x * y)
    if isinstance(e, sympy.Pow) and e.args[1].is_Integer and e.args[1] > 0:
        return args[0] ** int(e.args[1])
    if isinstance(e, (sympy.floor, sympy.ceiling)):
        num, den = sympy.fraction(sympy.together(e.args[0]))
        n, d = eval_index(num, env), eval_index(den, env)
        if isinstance(e, sympy.ceiling):
            return -_floordiv(-n, d)  # type: ignore[operator]
        return _floordiv(n, d)
    if isinstance(e, sympy.Mod):
        n, d = args
        return n % d if not isinstance(n, torch.Tensor) and not isinstance(d, torch.Tensor) \
            else torch.remainder(torch.as_tensor(n), d)
    if isinstance(e, (sympy.Min, sympy.Max)):
        fn = torch.minimum if isinstance(e, sympy.Min) else torch.maximum
        return _fold([torch.as_tensor(a) for a in args], fn)
    if isinstance(e, sympy.And):
        return _fold(args, lambda x, y: x & y)
    if isinstance(e, sympy.Or):
        return _fold(args, lambda x, y: x | y)
    if isinstance(e, sympy.Not):
        return ~args[0] if isinstance(args[0], torch.Tensor) else not args[0]
    if isinstance(e, sympy.core.relational.Relational):
        ops = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}
        return getattr(torch, ops[e.rel_op])(torch.as_tensor(args[0]), torch.as_tensor(args[1]))
    raise TypeError(f"cannot evaluate index expression {e}")


def _fold(args: Sequence[Any], fn: Any) -> Any:
    out = args[0]
    for a in args[1:]:
        out = fn(out, a)
    return out


def _floordiv(n: Num, d: Num) -> Num:
    if isinstance(n, torch.Tensor) or isinstance(d, torch.Tensor):
        return torch.div(torch.as_tensor(n), d, rounding_mode="floor")
    return n // d  # type: ignore[operator]


def _size(d: Any, env: Mapping[sympy.Symbol, int]) -> int:
    return d if isinstance(d, int) else int(sympy.sympify(d).subs(env))


def run_kernel(kernel: Kernel, inputs: Sequence[torch.Tensor], env: Mapping[sympy.Symbol, int]) -> list[torch.Tensor]:
    """Run ``kernel`` on ``inputs`` (one per input buffer, in order) with size symbols bound by
    ``env``; returns one tensor per output buffer."""
    bufs: dict[str, torch.Tensor] = {}
    for buf, t in zip(kernel.inputs, inputs):
        bufs[buf.name] = t.reshape(-1)
    out_shapes = {b.name: [_size(d, env) for d in b.shape] for b in kernel.outputs}
    t = kernel.template
    if kernel.kind == "view":
        (src,), (dst,) = kernel.inputs, kernel.outputs
        return [bufs[src.name].reshape(out_shapes[dst.name])]
    if t is not None and t.op == "node":
        return _call_node(t, inputs, env)
    for b in kernel.outputs:
        bufs[b.name] = torch.zeros(max(1, _numel(out_shapes[b.name])), dtype=b.dtype.to_torch())
    axes = kernel.domain + kernel.reduce
    sizes = [_size(a.size, env) for a in axes]
    grid: dict[sympy.Symbol, Num] = dict(env)
    for k, a in enumerate(axes):
        shape = [1] * len(axes)
        shape[k] = sizes[k]
        grid[a.symbol] = torch.arange(sizes[k]).reshape(shape)
    nr = len(kernel.reduce)
    full = sizes
    temps: dict[str, torch.Tensor] = {}
    if t is not None:
        temps[t.acc] = _template(t, bufs, grid, full, nr)
    for s in kernel.body:
        for stmt in (s.body if isinstance(s, Loop) else (s,)):
            _step(stmt, temps, bufs, grid, full, nr)
    return [bufs[b.name][:_numel(out_shapes[b.name])].reshape(out_shapes[b.name]) for b in kernel.outputs]


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _gather(buf: torch.Tensor, index: sympy.Expr, grid: Env, mask: sympy.Basic | None = None) -> torch.Tensor:
    idx = torch.as_tensor(eval_index(index, grid))
    if mask is None:
        return buf[idx]
    ok = torch.as_tensor(eval_index(mask, grid))
    idx, ok = torch.broadcast_tensors(idx, ok)
    vals = buf[idx.clamp(0, max(buf.numel() - 1, 0))]
    return torch.where(ok, vals, torch.zeros((), dtype=buf.dtype))


def _template(t: Template, bufs: dict[str, torch.Tensor], grid: Env, full: list[int], nr: int) -> torch.Tensor:
    a, b = (_gather(bufs[o.buffer], o.index, grid, o.mask) for o in t.operands)
    prod = (a.double() * b.double()).expand(full)
    dims = tuple(range(len(full) - nr, len(full)))
    return prod.sum(dims, keepdim=True).to(t.dtype.to_torch()) if dims else prod.to(t.dtype.to_torch())


def _step(s: Stmt, temps: dict[str, torch.Tensor], bufs: dict[str, torch.Tensor], grid: Env,
          full: list[int], nr: int) -> None:
    if isinstance(s, Load):
        temps[s.dst] = _gather(bufs[s.buffer], s.index, grid)
    elif isinstance(s, Const):
        temps[s.dst] = torch.tensor(s.value, dtype=s.dtype.to_torch())
    elif isinstance(s, IndexValue):
        temps[s.dst] = torch.as_tensor(eval_index(s.expr, grid)).to(s.dtype.to_torch())
    elif isinstance(s, Compute):
        from effc.backends.reference.kernels import KERNELS  # the backend imports effc.ir
        out = KERNELS[Op(s.op)]([temps[a] for a in s.args], dict(s.attrs))
        temps[s.dst] = out.to(s.dtype.to_torch())
    elif isinstance(s, Reduce):
        temps[s.dst] = _reduce(s.op, temps[s.value].expand(full), nr).to(s.dtype.to_torch())
    elif isinstance(s, Store):
        idx = torch.as_tensor(eval_index(s.index, grid))
        idx, val = torch.broadcast_tensors(idx, temps[s.value])
        dst = bufs[s.buffer]
        dst[idx.reshape(-1)] = val.reshape(-1).to(dst.dtype)


_REDUCERS = {"sum": torch.sum, "prod": torch.prod, "max": torch.amax, "min": torch.amin,
             "any": torch.any, "all": torch.all, "argmax": torch.argmax, "argmin": torch.argmin}


def _reduce(op: str, v: torch.Tensor, nr: int) -> torch.Tensor:
    """Reduce the trailing ``nr`` dims, keeping them as size 1 (outer rank stays aligned)."""
    if op not in _REDUCERS:
        raise ValueError(f"unknown reduction {op}")
    lead = list(v.shape[:v.dim() - nr])
    return _REDUCERS[op](v.reshape(lead + [-1]), -1).reshape(lead + [1] * nr)


def _call_node(t: Template, inputs: Sequence[torch.Tensor], env: Mapping[sympy.Symbol, int]) -> list[torch.Tensor]:
    from effc.backends.reference.kernels import KERNELS
    from effc.backends.symeval import SymbolicAttrs
    assert t.node is not None
    attrs = {k: SymbolicAttrs(v)(dict(env)) for k, v in t.node.attrs.items()}
    out = KERNELS[t.node.op](list(inputs), attrs)
    return [out] if isinstance(out, torch.Tensor) else list(out)
