"""Attention masks for tile_attention: scalar fills, and whether a mask is the causal pattern.

[Note: attention masks]
A mask hides keys from queries. It arrives in two kinds, and the attention op keeps the kind:
- additive: a float tensor added to the scores (HF's 0 / finfo.min masks, ALiBi-like biases);
- boolean: ``where(keep, scores, fill)`` (``masked_fill(~keep, fill)``), whose fill must vanish
  in the softmax: ``-inf`` or a value at most ``MASKED_AT_MOST``. exp(fill + s - max) is then
  exactly 0 in float32 and float64 for every row that keeps a key (its max is a real score), so
  the attention op's boolean mask (weight exactly 0) computes the same thing.
Rows that keep no key at all are the one place the forms differ: eager softmax gives NaN
(-inf fill) or the plain average of V (finite fill); torch's scaled_dot_product_attention, our
reference, gives zeros. The rewrite is exact on every row that keeps at least one key.

A mask is *causal* when query i keeps exactly the keys j <= i, with as many queries as keys
(torch's ``is_causal`` aligns the triangle top-left). Then the attention op takes
``is_causal=True`` and no mask. Recognised:
- a constant (folded from a static-shape ``triu``/``tril``/``arange`` mask): bool equal to the
  lower triangle in every batch slice, or float 0 there and vanishing above;
- a mask built from ``arange`` comparisons (folded into constants or not), read as an integer inequality in
  the query position i (axis -2) and key position j (axis -1): ``le(j, i)``, ``ge(i, j)``,
  ``lt(j, i + 1)``, ``not(gt(j, i))``, ``sub(j, i) < 1`` and so on, possibly and-ed with an
  all-true ``full`` (torch's ``triu`` decomposition), or such a bool turned into a float
  bias by ``where(keep, 0, fill)``.
"""

from __future__ import annotations

import math

import torch

from effc.ir import DType, Graph, Node, Op, Value
from effc.ir.types import Dim, dims_equal, normalize_axis

# A fill at or below this makes a masked key's weight exactly 0 (see the note above).
MASKED_AT_MOST = -1e4

# An integer affine form over positions: axis counted from the right (-1 keys, -2 queries)
# -> coefficient; key 0 holds the constant. Counting from the right makes broadcasting free.
Affine = dict[int, int]


def uniform(graph: Graph, v: Value) -> float | None:
    """The one number every element of ``v`` holds, when ``v`` is known at compile time."""
    n = v.node
    if n is None:
        return None
    if n.op is Op.FULL:
        value = n.attrs["value"]
        return float(value) if isinstance(value, (bool, int, float)) else None
    if n.op is Op.CONSTANT:
        t = graph.constant(n).reshape(-1)
        if t.numel() == 0 or not bool((t == t[0]).all()):
            return None
        return float(t[0])
    if n.op in UNIFORM_VIEWS:   # an expanded all-true padding mask, a reshaped scale
        return uniform(graph, n.inputs[0])
    if n.op is Op.CAST:
        x = uniform(graph, n.inputs[0])
        if x is None or n.output.type.dtype.is_float or math.isnan(x):
            return x
        return float(x != 0) if n.output.type.dtype is DType.BOOL else float(math.trunc(x)) \
            if math.isfinite(x) else None
    if n.op is Op.WHERE:   # where(all-true, 0, fill): HF's additive mask of a padding mask of ones
        c = uniform(graph, n.inputs[0])
        return None if c is None else uniform(graph, n.inputs[1 if c else 2])
    return None


# Views whose every element is one of the input's: a uniform input gives a uniform output.
UNIFORM_VIEWS = frozenset({Op.RESHAPE, Op.EXPAND, Op.PERMUTE, Op.SQUEEZE, Op.UNSQUEEZE, Op.SLICE})


def vanishes(fill: float) -> bool:
    return fill <= MASKED_AT_MOST  # -inf included


def is_causal(graph: Graph, v: Value, sq: Dim, sk: Dim, negate: bool = False) -> bool:
    """Whether mask ``v`` (bool keep-mask, or with ``negate`` a drop-mask; or an additive
    float bias) is exactly the causal one."""
    if not dims_equal(sq, sk) or v.type.rank < 2:
        return False
    if v.node is not None and v.node.op is Op.CONSTANT:
        t = graph.constant(v.node)
        return _causal_constant(~t if negate and t.dtype == torch.bool else t, sq)
    if v.type.dtype.is_bool:
        keep = _keep(graph, v)
        return _is_causal_form(_negate(keep) if negate else keep)
    return not negate and _is_causal_form(_bias_keep(graph, v))


def _causal_constant(t: torch.Tensor, n: Dim) -> bool:
    if not isinstance(n, int) or tuple(t.shape[-2:]) != (n, n):
        return False
    lower = torch.ones(n, n, dtype=torch.bool).tril()
    slices = t.reshape(-1, n, n)
    if t.dtype == torch.bool:
        return bool((slices == lower).all())
    if not t.is_floating_point():
        return False
    return bool((slices[:, lower] == 0).all()) and bool((slices[:, ~lower] <= MASKED_AT_MOST).all())


def _is_causal_form(keep: Affine | None) -> bool:
    """keep <=> E <= 0 with E = b*(j - i) + c, b > 0, -b < c <= 0: exactly j <= i."""
    if keep is None or set(keep) - {-1, -2, 0}:
        return False
    b, c = keep.get(-1, 0), keep.get(0, 0)
    return b > 0 and keep.get(-2, 0) == -b and -b < c <= 0


def _bias_keep(graph: Graph, v: Value) -> Affine | None:
    """``where(keep, 0, fill)`` with a vanishing fill, through views: the keep inequality."""
    n = v.node
    if n is None:
        return None
    if n.op in _VIEWS:
        inner = _bias_keep(graph, n.inputs[0])
        return None if inner is None else _remap(inner, n)
    if n.op is Op.CAST and n.inputs[0].type.dtype.is_float:
        return _bias_keep(graph, n.inputs[0])
    if n.op is not Op.WHERE:
        return None
    c, a, b = n.inputs
    ua, ub = uniform(graph, a), uniform(graph, b)
    if ua == 0 and ub is not None and vanishes(ub):
        return _keep(graph, c)
    if ub == 0 and ua is not None and vanishes(ua):
        return _negate(_keep(graph, c))
    return None


_VIEWS = (Op.UNSQUEEZE, Op.EXPAND, Op.RESHAPE, Op.SQUEEZE)
CAUSAL: Affine = {-1: 1, -2: -1, 0: 0}   # keep key j for query i  <=>  j - i <= 0
_COMPARE = {Op.LE: (1, 0), Op.LT: (1, 1), Op.GE: (-1, 0), Op.GT: (-1, 1)}  # sign, +1 if strict


def _keep(graph: Graph, v: Value) -> Affine | None:
    """A bool mask as one integer inequality ``E <= 0`` (True where kept), or None."""
    n = v.node
    if n is None or not v.type.dtype.is_bool:
        return None
    if n.op in _COMPARE:
        a, b = (_affine(graph, x) for x in n.inputs)
        if a is None or b is None:
            return None
        sign, strict = _COMPARE[n.op]
        e = _add(a, b, -1) if sign > 0 else _add(b, a, -1)   # a <= b  <=>  a - b <= 0
        return _add(e, {0: 1}, 1) if strict else e          # a < b   <=>  a - b + 1 <= 0
    if n.op is Op.CONSTANT:   # a folded causal comparison (short static sequences)
        n_ = v.type.shape[-1] if v.type.rank >= 2 else None
        return CAUSAL if n_ is not None and _causal_constant(graph.constant(n), n_) else None
    if n.op in (Op.LOGICAL_NOT, Op.BITWISE_NOT):
        return _negate(_keep(graph, n.inputs[0]))
    if n.op in (Op.LOGICAL_AND, Op.BITWISE_AND):
        a, b = n.inputs
        if uniform(graph, b) == 1.0:   # and-ed with all-true: torch's triu decomposition
            return _keep(graph, a)
        if uniform(graph, a) == 1.0:
            return _keep(graph, b)
        return None
    if n.op in _VIEWS:
        inner = _keep(graph, n.inputs[0])
        return None if inner is None else _remap(inner, n)
    return None


def _negate(e: Affine | None) -> Affine | None:
    # not (E <= 0)  <=>  E >= 1  <=>  -E + 1 <= 0   (integers)
    return None if e is None else _add({0: 1}, e, -1)


def _add(a: Affine, b: Affine, sign: int) -> Affine:
    out = dict(a)
    for k, c in b.items():
        out[k] = out.get(k, 0) + sign * c
    return {k: c for k, c in out.items() if c != 0 or k == 0}


def _affine(graph: Graph, v: Value) -> Affine | None:
    """An integer-valued tensor as an affine form in its positions, or None."""
    n = v.node
    if n is None:
        return None
    if n.op is Op.ARANGE:
        start, step = n.attrs["start"], n.attrs["step"]
        return {-1: step, 0: start} if isinstance(start, int) and isinstance(step, int) else None
    if n.op is Op.CONSTANT:
        return _affine_constant(graph.constant(n))
    if n.op is Op.FULL:
        c = uniform(graph, v)
        return {0: int(c)} if c is not None and math.isfinite(c) and c == int(c) else None
    if n.op in (Op.ADD, Op.SUB):
        a, b = (_affine(graph, x) for x in n.inputs)
        return None if a is None or b is None else _add(a, b, 1 if n.op is Op.ADD else -1)
    if n.op is Op.NEG:
        a = _affine(graph, n.inputs[0])
        return None if a is None else _add({0: 0}, a, -1)
    if n.op is Op.MUL:
        for x, y in (n.inputs, n.inputs[::-1]):
            c, a = uniform(graph, y), _affine(graph, x)
            if c is not None and c == int(c) and a is not None:
                return {k: int(c) * w for k, w in a.items()}
        return None
    if n.op is Op.CAST:
        return _affine(graph, n.inputs[0]) if not n.output.type.dtype.is_bool else None
    if n.op in _VIEWS:
        inner = _affine(graph, n.inputs[0])
        return None if inner is None else _remap(inner, n)
    return None


def _affine_constant(t: torch.Tensor) -> Affine | None:
    """An integer constant stepping evenly along at most one axis: a folded ``arange`` (static
    shapes fold the position ranges of HF's causal masks), or one value."""
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool or t.numel() == 0:
        return None
    axes = [a for a in range(t.dim()) if t.shape[a] > 1]
    line = t.reshape(-1).long()
    if not axes:
        return {0: int(line[0])}
    start, step = int(line[0]), int(line[1] - line[0])
    if len(axes) != 1 or not torch.equal(line, start + step * torch.arange(line.numel())):
        return None
    return {0: start, axes[0] - t.dim(): step}


def _remap(e: Affine, n: Node) -> Affine | None:
    """``e`` over the input's axes, as a form over the axes of view ``n``'s output."""
    src, dst = n.inputs[0].type.shape, n.output.type.shape
    if n.op is Op.EXPAND:
        return e  # only size-1 or missing leading axes grow; counted from the right, none move
    if n.op is Op.UNSQUEEZE:
        r = len(src)
        d = normalize_axis(n.attrs["dim"], r + 1)
        out = {0: e.get(0, 0)}
        for j, c in e.items():
            if j:
                pos = r + j
                out[pos + (1 if pos >= d else 0) - (r + 1)] = c
        return out
    # reshape / squeeze: only when it inserts or drops size-1 axes; the others keep their order
    keep_src = [j - len(src) for j, d in enumerate(src) if not (isinstance(d, int) and d == 1)]
    keep_dst = [j - len(dst) for j, d in enumerate(dst) if not (isinstance(d, int) and d == 1)]
    if len(keep_src) != len(keep_dst) or not all(
            dims_equal(src[a], dst[b]) for a, b in zip(keep_src, keep_dst)):
        return None
    where = dict(zip(keep_src, keep_dst))
    if any(j and j not in where for j in e):
        return None
    return {(where[j] if j else 0): c for j, c in e.items()}
