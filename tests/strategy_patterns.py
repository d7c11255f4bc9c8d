"""Generators of the patterns passes look for, for ``tests.strategies.graphs``.

Redundant computations that simplify and CSE should remove (``x + 0``, permute and cast round
trips, repeated nodes, ...), regions computed from constants alone that fold_constants should
evaluate, ``arange`` nodes, and ``extern`` nodes, which no pass may merge or evaluate.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from effc.ir import DType, InputRef, Op, TorchObj, Value
from effc.ir.attrs import symbols_in

from .strategy_ops import END, Builder, Skip, binary, cast, clamp, hi, lo, partner_shape, unary
from .strategy_shapes import index, layout, matmul, reduce, reshape_target, softmax


def _known(v: Value, memo: dict[Value, bool]) -> bool:
    """Whether ``v`` is computed from constants, ``full`` and ``arange`` alone."""
    if v not in memo:
        n = v.node
        memo[v] = n is not None and n.op is not Op.EXTERN and not symbols_in(n.attrs) and all(
            _known(u, memo) for u in n.inputs)
    return memo[v]


_REGION = (unary, binary, cast, clamp, reduce, softmax, layout, index, matmul)


def constant_region(s: Builder) -> None:
    """Some op applied to values known at compile time: fold_constants should evaluate it."""
    memo: dict[Value, bool] = {}
    outside = s.pool
    inside = s.pool = [v for v in outside if _known(v, memo)]
    try:
        if not s.floats() or s.flip():
            s.const([s.int(1, 4) for _ in range(s.int(0, 3))], dtype=s.choice((DType.F32, DType.F64)))
        s.choice(_REGION)(s)
    finally:
        s.pool = outside + s.pool[len(inside):]


_EXTERNS = (  # (target, args, kwargs, bound of the result given the input's bound)
    ("aten.sin.default", (InputRef(0),), {}, lambda b: 1.0),
    ("aten.mul.Tensor", (InputRef(0), InputRef(0)), {}, lambda b: b * b),
    ("aten.add.Tensor", (InputRef(0), 1.5), {"alpha": 2}, lambda b: b + 3.0),
    ("aten.leaky_relu.default", (InputRef(0), 0.1), {}, lambda b: b),
    ("aten.clone.default", (InputRef(0),), {"memory_format": TorchObj("torch.contiguous_format")},
     lambda b: b),
)


def extern(s: Builder) -> None:
    """A torch op called by name, typed by hand; often twice, which CSE must not merge."""
    x = s.pick()
    target, args, kwargs, bound = s.choice(_EXTERNS)
    for _ in range(s.int(1, 2)):
        node = s.b.node(Op.EXTERN, [x], {"target": target, "args": args, "kwargs": kwargs}, [x.type])
        s.add(node.output, bound(s.bound[x]))


def arange(s: Builder) -> None:
    """x + arange(..) along x's last axis (of static or symbolic length)."""
    x = s.pick(min_rank=1)
    d = x.type.shape[-1]
    start = s.choice((0, 1))
    r = s.emit(Op.ARANGE, [], hi(d) + 1.0, start=start, end=d + start, step=1,
               dtype=s.choice((DType.F32, DType.I64)))
    s.emit(s.choice((Op.ADD, Op.MUL)), [x, r] if s.flip() else [r, x], (hi(d) + 1.0) * (s.bound[x] + 1.0))


def _identity(s: Builder, x: Value) -> None:
    # x + 0, x - 0, x * 1, x / 1, 0 + x, 1 * x, with the unit in many types and shapes
    t, b = x.type, s.bound[x]
    op, unit = s.choice(((Op.ADD, 0), (Op.SUB, 0), (Op.MUL, 1), (Op.DIV, 1)))
    how = s.choice(("scalar", "full", "const"))
    dtypes = [DType.F32, DType.F64, t.dtype, DType.I64] + ([DType.BOOL] if op is not Op.SUB else [])
    if how == "scalar":
        u = s.scalar(s.choice((float(unit), unit)), s.choice(dtypes))
    elif how == "full":
        u = s.emit(Op.FULL, [], unit, shape=t.shape, value=float(unit), dtype=t.dtype)
    else:
        shape = [d if isinstance(d, int) else 1 for d in partner_shape(s, t.shape)]
        u = s.add(s.b.constant(torch.full(shape, unit, dtype=s.choice(dtypes).to_torch()), "unit"), unit)
    args = [u, x] if op in (Op.ADD, Op.MUL) and s.flip() else [x, u]
    s.emit(op, args, b, **({"rounding_mode": None} if op is Op.DIV else {}))


def redundant(s: Builder) -> None:
    """Patterns with a simpler equivalent: simplify and CSE should fire."""
    x = s.pick()
    t, b = x.type, s.bound[x]
    r = t.rank
    kind = s.choice(("dup", "identity", "permute_pair", "cast_pair", "neg_pair", "reshape_pair",
                     "squeeze_pair", "split_cat", "full_slice", "same_expand", "single_cat"))
    if kind == "dup":  # the same node again: CSE
        node = s.choice([n for n in s.b.nodes if n.op is not Op.CONSTANT])
        types = [v.type for v in node.outputs] if node.op is Op.EXTERN else None
        new = s.b.node(node.op, node.inputs, node.attrs, types)
        for old, v in zip(node.outputs, new.outputs):
            s.add(v, s.bound[old])
    elif kind == "identity":
        _identity(s, x)
    elif kind == "permute_pair":  # permute(permute(x, p), q), q often the inverse of p
        p = s.draw(st.permutations(range(r)))
        q = [p.index(i) for i in range(r)] if s.flip() else s.draw(st.permutations(range(r)))
        y = s.emit(Op.PERMUTE, [x], b, dims=tuple(i - r if s.flip() else i for i in p))
        s.emit(Op.PERMUTE, [y], b, dims=tuple(q))
    elif kind == "cast_pair":  # cast(cast(x, mid), x.dtype): exact through f64, lossy otherwise
        mids = [DType.F64, DType.I32, DType.I64, DType.BOOL] + (
            [DType.F16, DType.BF16] if b <= 1e3 else [])
        mid = s.choice([m for m in mids if m is not t.dtype])
        y = s.emit(Op.CAST, [x], b, dtype=mid)
        s.emit(Op.CAST, [y], b, dtype=s.choice((t.dtype, t.dtype, DType.F64, DType.F32)))
    elif kind == "neg_pair":
        s.emit(Op.NEG, [s.emit(Op.NEG, [x], b)], b)
    elif kind == "reshape_pair":  # reshape(reshape(x, s1), s2), s2 often x's own shape
        if r == 0:
            raise Skip("rank 0")
        y = s.emit(Op.RESHAPE, [x], b, shape=tuple(reshape_target(s, t.shape)))
        s.emit(Op.RESHAPE, [y], b, shape=t.shape if s.flip() else tuple(reshape_target(s, y.type.shape)))
    elif kind == "squeeze_pair":  # squeeze(unsqueeze(x, d), [d]) or unsqueeze(squeeze(x, ds), d)
        if s.flip():
            a = s.int(-r - 1, r)
            y = s.emit(Op.UNSQUEEZE, [x], b, dim=a)
            s.emit(Op.SQUEEZE, [y], b, dims=(s.choice((a, a % (r + 1), s.int(-r - 1, r))),))
        else:
            ones = [i for i, d in enumerate(t.shape) if d == 1] or [s.int(0, max(r - 1, 0))]
            dims = tuple(sorted(set(s.draw(st.lists(st.sampled_from(ones), min_size=1)))))
            y = s.emit(Op.SQUEEZE, [x], b, dims=dims)
            s.emit(Op.UNSQUEEZE, [y], b, dim=s.int(-y.type.rank - 1, y.type.rank))
    elif kind == "split_cat":  # cat(split(x)) -> x
        if r == 0:
            raise Skip("rank 0")
        a = s.int(0, r - 1)
        d = t.shape[a]
        node = s.b.node(Op.SPLIT, [x], {"dim": a, "sizes": (1, d - 1) if lo(d) >= 2 else (d,)})
        for v in node.outputs:
            s.add(v, b)
        s.emit(Op.CAT, list(node.outputs), b, dim=a - r if s.flip() else a)
    elif kind == "full_slice":  # slices that keep the whole axis
        if r == 0:
            raise Skip("rank 0")
        a = s.int(0, r - 1)
        start, end = s.choice(((0, END), (0, t.shape[a]), (-lo(t.shape[a]), END) if isinstance(
            t.shape[a], int) else (0, END)))
        s.emit(Op.SLICE, [x], b, dim=a, start=start, end=end, step=s.choice((1, 1, 2)) if t.shape[a] == 1 else 1)
    elif kind == "single_cat":
        if r == 0:
            raise Skip("torch.cat takes no rank-0 tensors")
        s.emit(Op.CAT, [x], b, dim=s.int(-r, r - 1))
    else:
        s.emit(Op.EXPAND, [x], b, shape=tuple(-1 if s.flip() else d for d in t.shape))


PATTERNS = (redundant, redundant, redundant, constant_region, constant_region, extern, arange)
