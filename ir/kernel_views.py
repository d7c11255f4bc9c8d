"""Index arithmetic for the kernel IR: views and broadcasts folded into sympy index expressions.

Inside a kernel a view node is never a copy: asking for ``permute(x, [1, 0])`` at ``(i0, i1)``
is asking for ``x`` at ``(i1, i0)``. ``view_index`` maps a view's output index to its input
index; ``broadcast_index`` does the same for an operand broadcast to a larger shape (size-1
dimensions read index 0); ``flat_index`` turns a multi-index into a row-major element offset.

A reshape flattens the consumer's index over the dimensions it regroups and unflattens it into
the producer's with ``floor`` and ``Mod``. ``simplify_index`` then removes what the loop bounds
make redundant: ``floor((4*i0 + i1)/4)`` is ``i0`` and ``Mod(4*i0 + i1, 4)`` is ``i1`` when
``i1 < 4``; so a reshape followed by its inverse folds back to the identity, and a generator
sees plain affine indices wherever they exist.

A *trivial reshape* (a reshape, squeeze or unsqueeze that only inserts or removes size-1
dims) keeps the element order: two shapes equal up to size-1 dims (``same_up_to_ones``) index
the same element when their non-1 dims take the same values, in order, and their 1 dims take 0.
``align_index`` makes that map; it is how a kernel stores an output whose shape is its domain's
up to size-1 dims ([Note: kernel groups] in kernel_node.py).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import sympy

from .graph import Node
from .ops import Op
from .shape_rules import _BIG
from .types import Dim, dims_equal, normalize_axis

Index = tuple[sympy.Expr, ...]
Sizes = Mapping[sympy.Symbol, Dim]  # each loop axis symbol and its extent


def _one(d: Dim) -> bool:
    return isinstance(d, int) and d == 1


def nonunit(shape: Sequence[Dim]) -> list[Dim]:
    """``shape`` without its size-1 dims (a symbolic dim counts as not 1)."""
    return [d for d in shape if not _one(d)]


def same_up_to_ones(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    """True when ``a`` and ``b`` are equal once every size-1 dim is dropped."""
    x, y = nonunit(a), nonunit(b)
    return len(x) == len(y) and all(dims_equal(p, q) for p, q in zip(x, y))


def is_trivial_reshape(node: Node) -> bool:
    """A reshape, squeeze or unsqueeze that only inserts or removes size-1 dims."""
    return (node.op in (Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE)
            and same_up_to_ones(node.inputs[0].type.shape, node.output.type.shape))


def align_index(idx: Index, src: Sequence[Dim], dst: Sequence[Dim]) -> Index:
    """``idx`` over ``src`` as the index over ``dst`` of the same element, where the two shapes
    are equal up to size-1 dims (``same_up_to_ones``)."""
    it = iter([e for e, d in zip(idx, src) if not _one(d)])
    return tuple(sympy.Integer(0) if _one(d) else next(it) for d in dst)


def flat_index(idx: Sequence[sympy.Expr], shape: Sequence[Dim]) -> sympy.Expr:
    """Row-major element offset of ``idx`` in a contiguous buffer of ``shape``."""
    total, stride = sympy.Integer(0), sympy.Integer(1)
    for i, d in zip(reversed(idx), reversed(shape)):
        total += i * stride
        stride = stride * d
    return sympy.expand(total)


def broadcast_index(idx: Index, shape: Sequence[Dim]) -> Index:
    """The index of an operand of ``shape`` broadcast to the shape ``idx`` ranges over."""
    off = len(idx) - len(shape)
    return tuple(sympy.Integer(0) if _one(d) else idx[k + off] for k, d in enumerate(shape))


def view_index(node: Node, idx: Index, sizes: Sizes) -> Index:
    """The index into ``node``'s input that its output at ``idx`` reads (a view node)."""
    src = node.inputs[0].type.shape
    a = node.attrs
    if node.op is Op.RESHAPE:
        return _reshape(src, node.output.type.shape, idx, sizes)
    if node.op is Op.PERMUTE:
        out = [sympy.Integer(0)] * len(src)
        for k, d in enumerate(a["dims"]):
            out[normalize_axis(d, len(src))] = idx[k]
        return tuple(out)
    if node.op is Op.EXPAND:
        return broadcast_index(idx, src)
    if node.op is Op.SQUEEZE:
        dims = {normalize_axis(d, len(src)) for d in a["dims"]} if src else set()
        it = iter(idx)
        return tuple(sympy.Integer(0) if k in dims and _one(d) else next(it) for k, d in enumerate(src))
    if node.op is Op.UNSQUEEZE:
        dim = normalize_axis(a["dim"], len(src) + 1)
        return idx[:dim] + idx[dim + 1:]
    if node.op is Op.SLICE:
        dim = normalize_axis(a["dim"], len(src))
        start = _clip_start(a["start"], src[dim])
        return idx[:dim] + (sympy.sympify(start) + a["step"] * idx[dim],) + idx[dim + 1:]
    if node.op is Op.SELECT:
        dim = normalize_axis(a["dim"], len(src))
        i = a["index"]
        i = src[dim] + i if isinstance(i, int) and i < 0 else i
        return idx[:dim] + (sympy.sympify(i),) + idx[dim:]
    raise ValueError(f"{node.op} is not a view")


def _clip_start(v: Dim, size: Dim) -> Dim:
    """A slice start read as shape_rules._slice_shape reads it: negative from the end, clipped."""
    if not isinstance(v, int):
        return v
    if v >= _BIG:
        return size
    if v < 0:
        v = size + v  # type: ignore[assignment]
    if isinstance(size, int):
        return min(max(v, 0), size)  # type: ignore[call-overload]
    return sympy.Min(max(v, 0), size) if isinstance(v, int) else v


def _reshape(src: Sequence[Dim], dst: Sequence[Dim], idx: Index, sizes: Sizes) -> Index:
    a = [k for k, d in enumerate(src) if not _one(d)]
    b = [k for k, d in enumerate(dst) if not _one(d)]
    out = [sympy.Integer(0)] * len(src)
    for (ka0, ka1), (kb0, kb1) in _groups([src[k] for k in a], [dst[k] for k in b]):
        linear = flat_index([idx[b[k]] for k in range(kb0, kb1)], [dst[b[k]] for k in range(kb0, kb1)])
        dims = [src[a[k]] for k in range(ka0, ka1)]
        stride: sympy.Expr = sympy.Integer(1)
        for j in range(len(dims) - 1, -1, -1):
            e = sympy.floor(linear / stride) if j < len(dims) - 1 else linear
            out[a[ka0 + j]] = simplify_index(e if j == 0 else sympy.Mod(e, dims[j]), sizes)
            stride = stride * dims[j]
    return tuple(out)


def _groups(a: Sequence[Dim], b: Sequence[Dim]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Split two shapes of equal size into runs of equal product (torch's view grouping)."""
    pa = [sympy.Integer(1)]
    for d in a:
        pa.append(pa[-1] * d)
    pb = [sympy.Integer(1)]
    for d in b:
        pb.append(pb[-1] * d)
    cuts = [(0, 0)]
    for k in range(1, len(a)):
        for m in range(cuts[-1][1] + 1, len(b)):
            if dims_equal(sympy.expand(pa[k]), sympy.expand(pb[m])):
                cuts.append((k, m))
                break
    cuts.append((len(a), len(b)))
    return [((k0, k1), (m0, m1)) for (k0, m0), (k1, m1) in zip(cuts, cuts[1:])]


# -- simplification ------------------------------------------------------------------------------

def simplify_index(e: sympy.Basic, sizes: Sizes) -> sympy.Expr:
    """``e`` with floor and Mod terms that the loop bounds decide removed (see module doc)."""
    e = sympy.sympify(e)
    if not e.args:
        return e
    e = e.func(*(simplify_index(x, sizes) for x in e.args))
    if isinstance(e, sympy.floor):
        num, den = sympy.fraction(sympy.together(e.args[0]))
        q, rest = _split(sympy.expand(num), den)
        return q if rest == 0 or _below(rest, den, sizes) else q + sympy.floor(rest / den)
    if isinstance(e, sympy.Mod):
        _, rest = _split(sympy.expand(e.args[0]), e.args[1])
        return rest if _below(rest, e.args[1], sizes) else sympy.Mod(rest, e.args[1])
    return e


def _split(num: sympy.Expr, den: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
    """``num = den * q + rest`` where q collects the terms ``den`` divides exactly."""
    q, rest = sympy.Integer(0), sympy.Integer(0)
    for t in sympy.Add.make_args(num):
        r = sympy.cancel(t / den)
        if r.is_integer:
            q += r
        else:
            rest += t
    return q, rest


def _below(e: sympy.Expr, n: sympy.Expr, sizes: Sizes) -> bool:
    """True when ``0 <= e < n`` holds for every point of the loop axes."""
    b = _bounds(e, sizes)
    if b is None:
        return False
    lo, hi = b
    return bool(sympy.expand(lo).is_nonnegative) and bool(sympy.expand(n - 1 - hi).is_nonnegative)


def _bounds(e: sympy.Expr, sizes: Sizes) -> tuple[sympy.Expr, sympy.Expr] | None:
    if e.is_number:
        return e, e
    if isinstance(e, sympy.Symbol):
        if e in sizes:
            return sympy.Integer(0), sympy.sympify(sizes[e]) - 1
        return (e, e) if e.is_positive else None  # a size symbol: a constant of the kernel
    if isinstance(e, sympy.Add):
        parts = [_bounds(x, sizes) for x in e.args]
        if any(p is None for p in parts):
            return None
        return sympy.Add(*(p[0] for p in parts)), sympy.Add(*(p[1] for p in parts))  # type: ignore[index]
    if isinstance(e, sympy.Mul):
        coeff, rest = e.as_coeff_Mul()
        parts = [_bounds(x, sizes) for x in sympy.Mul.make_args(rest)]
        if any(p is None or not sympy.expand(p[0]).is_nonnegative for p in parts):
            return None
        lo, hi = sympy.Mul(*(p[0] for p in parts)), sympy.Mul(*(p[1] for p in parts))  # type: ignore[index]
        return (coeff * lo, coeff * hi) if coeff >= 0 else (coeff * hi, coeff * lo)
    if isinstance(e, sympy.Mod) and e.args[1].is_positive:
        return sympy.Integer(0), e.args[1] - 1
    return None
