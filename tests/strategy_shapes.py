"""Generators for ops that move or combine axes, for ``tests.strategies.graphs``.

Reductions, softmax, matmul/linear/addmm, convolution + batch norm, layer and RMS norm, layout
ops and indexing. Symbolic axes
take any size in [MIN_SIZE, MAX_SIZE], so a generator only does to a symbolic axis what is valid
at every such size (index 0 or 1, slice off one element, split off one element, ...).
[Note: safe values] in ``tests.strategy_ops`` explains the bounds.
"""

from __future__ import annotations

import math

import sympy
from hypothesis import strategies as st

from effc.ir import DType, Op, Value
from effc.ir.types import Dim

from .strategy_ops import END, MAX_RANK, Builder, Skip, hi, lo, partner_shape


def _axes(s: Builder, rank: int) -> tuple[int, ...]:
    """A non-empty set of axes, some written as negative numbers."""
    axes = s.draw(st.sets(
        st.integers(0, rank - 1), min_size=1, max_size=rank))
    return tuple(a - rank if s.flip() else a for a in sorted(axes))


def reduce(s: Builder) -> None:
    x = s.pick(heavy=True, min_rank=1)
    r, b = x.type.rank, s.bound[x]
    op = s.choice((Op.SUM, Op.MEAN, Op.AMAX, Op.AMIN, Op.VAR, Op.STD, Op.ARGMAX, Op.ARGMIN, Op.CUMSUM))
    dims = () if s.int(0, 3) == 0 else _axes(s, r)
    keepdim = s.flip()
    reduced = [x.type.shape[a] for a in (dims or range(r))]
    n_lo, n_hi = math.prod(lo(d) for d in reduced), math.prod(hi(d) for d in reduced)
    if op is Op.SUM:
        s.emit(op, [x], b * n_hi, dims=dims, keepdim=keepdim, dtype=s.choice((None, None, DType.F64)))
    elif op in (Op.MEAN, Op.AMAX, Op.AMIN):
        s.emit(op, [x], b, dims=dims, keepdim=keepdim)
    elif op in (Op.VAR, Op.STD):
        correction = s.choice((0, 1) if n_lo >= 2 else (0,))
        s.emit(op, [x], 2 * b * b + 1.0, dims=dims, correction=correction, keepdim=keepdim)
    elif op is Op.CUMSUM:
        a = s.int(-r, r - 1)
        s.emit(op, [x], b * hi(x.type.shape[a]), dim=a, dtype=s.choice((None, DType.F64)))
    else:
        dim = None if s.int(0, 2) == 0 else s.int(-r, r - 1)
        s.emit(op, [x], float(n_hi), dim=dim, keepdim=keepdim)


def softmax(s: Builder) -> None:
    x = s.pick(heavy=True, min_rank=1)
    dim = s.int(-x.type.rank, x.type.rank - 1)
    if s.flip():
        s.emit(Op.SOFTMAX, [x], 1.0, dim=dim)
    else:
        s.emit(Op.LOG_SOFTMAX, [x], 2 * s.bound[x] + math.log(hi(x.type.shape[dim])) + 1, dim=dim)


def bool_reduce(s: Builder) -> None:
    x = s.choice(s.values((DType.BOOL,), min_rank=1))
    s.emit(s.choice((Op.ANY, Op.ALL)), [x], 1.0, dims=() if s.flip() else _axes(s, x.type.rank),
           keepdim=s.flip())


def _weight(s: Builder, shape: list[Dim], dtype: DType) -> Value:
    """A constant when ``shape`` is static (or sometimes a graph input), else a graph input."""
    if all(isinstance(d, int) for d in shape) and s.int(0, 3):
        k = hi(shape[-2]) if len(shape) > 1 else 1
        return s.const(shape, -1 / math.sqrt(k), 1 / math.sqrt(k), dtype)
    return s.input(shape, dtype)


def matmul(s: Builder) -> None:
    x = s.pick(heavy=True, min_rank=1)
    t, b = x.type, s.bound[x]
    k = t.shape[-1]
    kind = s.choice(("weight", "gram", "batched", "linear", "addmm"))
    if kind == "gram":  # x @ x^T over the last two axes
        if t.rank < 2:
            raise Skip("gram needs rank >= 2")
        perm = list(range(t.rank))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        xt = s.emit(Op.PERMUTE, [x], b, dims=tuple(perm))
        s.emit(Op.MATMUL, [x, xt], hi(k) * b * b)
        return
    n = s.int(1, 4)
    if kind == "weight":
        w = _weight(s, [k, n], t.dtype)
        y = s.emit(Op.MATMUL, [w, x] if t.rank == 1 and s.flip() and hi(k) == n else [x, w],
                   hi(k) * b * s.bound[w])
    elif kind == "batched":  # broadcast batch axes: [B, k, n] against x's [.., m, k] or the reverse
        batch = [s.choice((1, 2, 3))] if t.rank <= 2 else [1 if s.flip() else d for d in t.shape[:-2]]
        w = _weight(s, [*batch, k, n], t.dtype)
        y = s.emit(Op.MATMUL, [x, w], hi(k) * b * s.bound[w])
    elif kind == "linear":
        if not isinstance(k, int):
            raise Skip("linear weights are constants")
        w = s.const([n, k], -1 / math.sqrt(k), 1 / math.sqrt(k), t.dtype)
        bias = [s.const([n], dtype=t.dtype, name="b")] if s.flip() else []
        y = s.emit(Op.LINEAR, [x, w, *bias], k * b + 1.0)
    else:
        if t.rank != 2 or not isinstance(k, int):
            raise Skip("addmm takes a matrix with a static inner size")
        w = s.const([k, n], -1.0, 1.0, t.dtype)
        bias = s.const(s.choice(([n], [1, n], [lo(t.shape[0]) if isinstance(t.shape[0], int) else 1, n])),
                       dtype=t.dtype, name="b")
        beta, alpha = s.choice(((1.0, 1.0), (0.5, 2.0)))
        y = s.emit(Op.ADDMM, [bias, x, w], beta + alpha * k * b, beta=beta, alpha=alpha)
    if y.type.rank == 2 and isinstance(y.type.shape[1], int) and s.int(0, 2) == 0:
        batch_norm(s, y)  # linear layer + batch norm: fold_batchnorm's other pattern


def conv_bn(s: Builder) -> None:
    """convolution (1-d or 2-d) with constant weights, then usually batch_norm with constants."""
    nsp = s.choice((2, 2, 1))
    cands = s.floats(heavy=True, min_rank=nsp + 2, max_rank=nsp + 2,
                     pred=lambda t: isinstance(t.shape[1], int) and t.shape[1] <= 4)
    if cands and s.flip():
        x = s.choice(cands)
    else:
        spatial = [s.choice((3, 4, 5)) if not s.symbolic or s.flip() else s.dim(True) for _ in range(nsp)]
        x = s.input([s.choice((1, 2)) if not s.symbolic else s.dim(), s.int(1, 4), *spatial], s.choice(
            [d for d in s.dtypes if d in (DType.F32, DType.F64)] or [DType.F32]))
    t, b = x.type, s.bound[x]
    c = t.shape[1]
    assert isinstance(c, int)
    ksize = s.choice((1, 3))
    static = all(isinstance(d, int) and d >= 3 for d in t.shape[2:])
    stride = s.choice((1, 2)) if static else 1
    pad = ksize // 2 if not static or s.flip() else 0
    groups = s.choice([g for g in (1, 2, c) if c % g == 0])
    cout = groups * s.int(1, 2)
    transposed = s.int(0, 2) == 0  # weight (Cin, Cout/groups, k..); output_padding < stride
    fan_in = c // groups * ksize ** nsp
    wshape = [c, cout // groups] if transposed else [cout, c // groups]
    w = s.const(wshape + [ksize] * nsp, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), t.dtype)
    bias = [s.const([cout], dtype=t.dtype, name="b")] if s.flip() else []
    y = s.emit(Op.CONVOLUTION, [x, w, *bias], b * fan_in + 1.0, stride=(stride,) * nsp,
               padding=(pad,) * nsp, dilation=(1,) * nsp, groups=groups, transposed=transposed,
               output_padding=(s.int(0, stride - 1) if transposed else 0,) * nsp)
    if s.int(0, 3):
        batch_norm(s, y)


def batch_norm(s: Builder, x: Value | None = None) -> None:
    if x is None:
        x = s.choice(s.floats(heavy=True, min_rank=2, pred=lambda t: isinstance(t.shape[1], int)))
    c, dt = x.type.shape[1], x.type.dtype
    assert isinstance(c, int)
    mean = s.const([c], -0.5, 0.5, dt, "mean")
    var = s.const([c], 0.5, 1.5, dt, "var")
    has_w, has_b = s.flip(), s.flip()
    affine = ([s.const([c], 0.5, 1.5, dt, "gamma")] if has_w else []) + (
        [s.const([c], -0.5, 0.5, dt, "beta")] if has_b else [])
    s.emit(Op.BATCH_NORM, [x, mean, var, *affine], 2.2 * (s.bound[x] + 0.5) + 0.5, eps=1e-5,
           has_weight=has_w, has_bias=has_b)


def layer_norm(s: Builder) -> None:
    x = s.pick(heavy=True, min_rank=1)
    k = s.int(1, min(2, x.type.rank))
    shape = x.type.shape[-k:]
    static = all(isinstance(d, int) for d in shape)
    n = math.sqrt(math.prod(hi(d) for d in shape))
    has_w = static and s.flip()
    w = [s.const(shape, 0.5, 1.5, x.type.dtype, "gamma")] if has_w else []
    if s.flip():
        has_b = static and s.flip()
        bias = [s.const(shape, -0.5, 0.5, x.type.dtype, "beta")] if has_b else []
        s.emit(Op.LAYER_NORM, [x, *w, *bias], 1.5 * n + 0.5, normalized_shape=shape, eps=1e-5,
               has_weight=has_w, has_bias=has_b)
    else:
        s.emit(Op.RMS_NORM, [x, *w], 1.5 * n, normalized_shape=shape, eps=s.choice((1e-6, None)),
               has_weight=has_w)


def reshape_target(s: Builder, shape: tuple[Dim, ...]) -> list[Dim]:
    """A reshape's shape attribute: flatten, merge two axes, split one, or insert a 1."""
    r = len(shape)
    kind = s.choice(("flatten", "merge", "split", "one"))
    if kind == "flatten":
        return [-1]
    if kind == "merge" and r >= 2:
        i = s.int(0, r - 2)
        merged = shape[i] * shape[i + 1]
        return [*shape[:i], -1 if s.flip() else merged, *shape[i + 2:]]
    if kind == "split":
        i = s.choice([i for i, d in enumerate(shape) if isinstance(d, int) and d in (4, 6)]
                     + [i for i, d in enumerate(shape) if isinstance(d, sympy.Mul)])
        d = shape[i]
        a = 2 if isinstance(d, int) else d.args[0]
        return [*shape[:i], a, -1 if s.flip() else (d // a if isinstance(d, int) else d / a), *shape[i + 1:]]
    i = s.int(0, r)
    return [*shape[:i], 1, *shape[i:]]


def layout(s: Builder) -> None:
    x = s.pick(min_rank=1)
    t, b = x.type, s.bound[x]
    r = t.rank
    op = s.choice((Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SQUEEZE, Op.UNSQUEEZE, Op.SLICE,
                   Op.SELECT, Op.CAT, Op.SPLIT, Op.PAD))
    if op is Op.RESHAPE:
        s.emit(op, [x], b, shape=tuple(reshape_target(s, t.shape)))
    elif op is Op.PERMUTE:
        perm = s.draw(st.permutations(range(r)))
        s.emit(op, [x], b, dims=tuple(perm))
    elif op is Op.EXPAND:
        bound = sorted(set().union(*(v.type.symbols for v in s.b.inputs)), key=str)  # no new symbol
        shape: list[Dim] = [(s.choice((2, 3, *bound))
                             if isinstance(d, int) and d == 1 and s.flip() else (-1 if s.flip() else d))
                            for d in t.shape]
        lead = [s.choice((2, 3))] if r < MAX_RANK and s.flip() else []
        s.emit(op, [x], b, shape=tuple(lead + shape))
    elif op is Op.SQUEEZE:
        s.emit(op, [x], b, dims=tuple(sorted(s.draw(st.sets(
            st.integers(0, r - 1), min_size=1)))))
    elif op is Op.UNSQUEEZE:
        s.emit(op, [x], b, dim=s.int(-r - 1, r))
    elif op is Op.SELECT:
        a = s.int(0, r - 1)
        n = lo(t.shape[a])
        s.emit(op, [x], b, dim=a, index=s.int(-n, n - 1))
    elif op is Op.SLICE:
        a = s.int(-r, r - 1)
        d = t.shape[a]
        if isinstance(d, int):
            start = s.int(0, d - 1)
            end = s.choice((END, s.int(start + 1, d)))
            start = start - d if s.flip() else start
            step = s.int(1, 2)
        else:
            start, end, step = s.choice(((0, 1, 1), (1, END, 1), (0, END, 2), (0, -1, 1), (0, END, 1)))
        s.emit(op, [x], b, dim=a, start=start, end=end, step=step)
    elif op is Op.CAT:
        a = s.int(-r, r - 1)
        same = [v for v in s.floats(min_rank=r, max_rank=r) if all(
            i == a % r or str(u) == str(w) for i, (u, w) in enumerate(zip(v.type.shape, t.shape)))]
        others = [s.choice(same) for _ in range(s.int(1, 2))]
        s.emit(op, [x, *others] if s.flip() else [*others, x], max(s.bound[v] for v in [x, *others]), dim=a)
    elif op is Op.SPLIT:
        a = s.int(0, r - 1)
        d = t.shape[a]
        if isinstance(d, int):
            cut = s.int(0, d - 1)
            sizes: tuple[Dim, ...] = (cut, d - cut) if cut else (d,)
        else:
            sizes = s.choice(((1, d - 1), (d,)))
        node = s.b.node(op, [x], {"dim": a, "sizes": sizes})
        for v in node.outputs:
            s.add(v, b)
    else:
        _pad(s, x)


def _pad(s: Builder, x: Value) -> None:
    t, r = x.type, x.type.rank
    mode = s.choice(("constant", "constant", "reflect", "replicate", "circular"))
    if mode == "constant":
        # pads[2j], pads[2j+1] widen axis r-1-j; a negative pad crops an axis that stays >= 1
        pads = tuple(s.int(-1 if lo(t.shape[r - 1 - j // 2]) >= 3 else 0, 2)
                     for j in range(2 * s.int(1, min(2, r))))
        value = s.choice((0.0, 1.5))
    else:  # torch pads the last axis of a rank 2-3 input, or the last 2 of rank 3-4, by less than the size
        if r < 2 or any(lo(d) < 2 for d in t.shape[-2:]):
            raise Skip("non-constant padding needs rank >= 2 and sizes >= 2")
        pads = (1, s.int(0, 1)) * (1 if r == 2 or (r == 3 and s.flip()) else 2)
        value = None
    s.emit(Op.PAD, [x], max(s.bound[x], 1.5), pads=pads, mode=mode, value=value)


def index(s: Builder) -> None:
    x = s.pick(heavy=True, min_rank=1)
    t, b = x.type, s.bound[x]
    a = s.int(-t.rank, t.rank - 1)
    kind = s.choice(("index_select", "gather", "embedding"))
    if kind == "index_select":
        idx = s.indices([s.int(1, 3)] if s.int(0, 4) else [], lo(t.shape[a]))
        s.emit(Op.INDEX_SELECT, [x, idx], b, dim=a)
    elif kind == "gather":
        shape = [s.int(1, 3) if i == a % t.rank else s.int(1, min(3, lo(d))) for i, d in enumerate(t.shape)]
        s.emit(Op.GATHER, [x, s.indices(shape, lo(t.shape[a]))], b, dim=a)
    else:
        if t.rank != 2:
            raise Skip("embedding tables are matrices")
        idx = s.indices([s.int(1, 3) for _ in range(s.int(1, 2))], lo(t.shape[0]))
        s.emit(Op.EMBEDDING, [x, idx], b, padding_idx=None)


# Repeats weight the draw; convolution + batch norm is repeated so that folding is exercised
# often despite needing many nodes.
STRUCTURED = (reduce, reduce, softmax, bool_reduce, matmul, matmul, conv_bn, conv_bn, conv_bn,
              batch_norm, layer_norm, layout, layout, layout, index)
