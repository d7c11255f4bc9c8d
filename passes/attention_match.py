"""Finding ``softmax(scale · Q Kᵀ + mask) V`` in a graph, however the model wrote it.

``match`` starts at a matmul whose left operand is a softmax and walks up; it returns a
``Match`` (what the attention op needs, in source-graph values), a reason (a near miss: the
softmax and the matmul are there, but something makes it not attention), or None.

[Note: attention forms]
Reading up from ``out = matmul(P, V)``:
- P: the weights, through casts back to V's dtype and reshapes of the batch axes (what
  core-ATen makes of a 4-d matmul: ``reshape [B*H, S, S] -> bmm -> reshape [B, H, S, D]``).
- the softmax: one ``softmax`` op over the last axis, or ``e / sum(e, -1)`` with
  ``e = exp(x - amax(x, -1))`` or ``e = exp(x)`` (a division or a product with the
  reciprocal). Its input's shape is the *frame* [*B, Sq, Sk].
- the scores chain, from the softmax input down to ``Q Kᵀ``; with A the product of the scale
  factors above a node (nearer the softmax), each step keeps the frame's shape:
    mul / div by one value  A *= c or /= c: a compile-time constant goes into ``scale``; a
                            runtime scalar (dynamo lifts ``1/sqrt(d)`` into a graph input when
                            sizes are dynamic) is applied to Q instead
    add(x, m) / sub(x, m)   an additive mask or bias m, counted as A·m (or -A·m)
    where(keep, x, fill)    a boolean mask (also ``where(drop, fill, x)``); A must be a
                            positive constant there, and fill must vanish ([Note: attention masks])
    cast to a wider float   softmax computed in float32 from half scores
    reshape of batch axes   (masks must be applied after it, in the frame's own axes)
  and ends at a matmul. A mask or scale must not be computed from the scores themselves.
- the operands: Q and Kᵀ are the matmul's inputs, V the outer one, each read back through
  batch views, constant factors (Q and K), broadcast K/V axes and head repetition for
  grouped-query and multi-query attention: [Note: attention operands] in
  passes/attention_operands.py.
Every node from the scores matmul to ``out`` must be used only inside the pattern: attention
weights the model also returns (``output_attentions``) must exist, so are not replaced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import sympy

from effc.ir import Graph, Node, Op, Value
from effc.ir.types import Dim, dims_equal, normalize_axis

from .attention_mask import uniform, vanishes
from .attention_operands import (Miss, Operand, batch_view, depends, fit, grouped, key, one_head,
                                 peel)
from .simplify import exact_cast


@dataclass(frozen=True)
class Term:
    """A mask on the scores: an additive bias (times ``factor`` and the runtime ``factors``)
    or a boolean keep-mask (``negate``: the value marks the keys to drop)."""
    value: Value
    bias: bool
    negate: bool = False
    factor: float = 1.0
    runtime: tuple[tuple[Value, bool], ...] = ()


@dataclass(frozen=True)
class Scale:
    const: float = 1.0
    runtime: tuple[tuple[Value, bool], ...] = ()   # (rank-0 value, divides)

    def times(self, c: float) -> "Scale":
        return Scale(self.const * c, self.runtime)


@dataclass
class Match:
    out: Node
    frame: tuple[Dim, ...]
    q: Operand
    k: Operand
    v: Operand
    scale: Scale
    terms: tuple[Term, ...]
    gqa: bool
    softmax: str
    inner: set[Node] = field(default_factory=set)
    scale_at: list[str] = field(default_factory=list)


def match(graph: Graph, out: Node, users: Mapping[Value, list[Node]]) -> Match | str | None:
    if out.op is not Op.MATMUL or out.inputs[0].type.rank < 2 or out.inputs[1].type.rank < 2:
        return None
    inner = {out}
    w = _weights(out.inputs[0], inner)
    found = _softmax(graph, w, inner)
    if found is None:
        return None
    try:
        if isinstance(found, str):
            raise Miss(found)
        logits, how = found
        return _attention(graph, out, logits, how, inner, users)
    except Miss as e:
        return str(e)


def _attention(graph: Graph, out: Node, logits: Value, how: str, inner: set[Node],
               users: Mapping[Value, list[Node]]) -> Match:
    frame = logits.type.shape
    terms: list[Term] = []
    at: list[str] = []
    mm, scale = _scores(graph, logits, Scale(), terms, inner, at, reshaped=False)
    terms = [t for t in terms if not inert(graph, t.value, t.bias, t.negate)]
    batch = frame[:-2]
    for t in terms:
        if depends(t.value, mm):
            raise Miss("the mask is computed from the scores it masks")
    for r, _ in scale.runtime:
        if depends(r, mm):
            raise Miss("the scale is computed from the scores it scales")
    v_in = out.inputs[1]
    if depends(v_in, mm):
        raise Miss("V is computed from the scores")
    q, qs = peel(graph, mm.inputs[0], batch, scalars=True)
    kt, ks = peel(graph, mm.inputs[1], batch, scalars=True, broadcast=True)
    if qs != 1.0:
        at.append("Q")
    if ks != 1.0:
        at.append("K")
    scale = scale.times(qs * ks)
    k, ks2 = key(graph, kt, batch)
    if ks2 != 1.0 and "K" not in at:
        at.append("K")
    scale = scale.times(ks2)
    v, _ = peel(graph, v_in, batch, scalars=False, broadcast=True)
    dtypes = {x.type.dtype for x in (*mm.inputs, v_in)}
    if len(dtypes) != 1 or out.output.type.dtype not in dtypes:
        raise Miss(f"Q, K, V and the output differ in dtype: {sorted(map(str, dtypes))}")
    qo = fit(q, batch, "Q")
    gk, gv = grouped(k, batch), grouped(v, batch)
    if gk is not None and gv is not None and dims_equal(gk[1], gv[1]):
        ko, vo, gqa = gk[0], gv[0], True
    else:
        ko, vo = fit(k, batch, "K", broadcast=True), fit(v, batch, "V", broadcast=True)
        gqa = one_head(ko, vo, batch)
    for n in inner - {out}:
        for o in n.outputs:
            outside = [u for u in users.get(o, ()) if u not in inner]
            if outside or o in graph.outputs:
                raise Miss(f"the {n.op} : {o.type} inside the attention is also used elsewhere "
                            f"({outside[0].op if outside else 'a graph output'}), so it must exist")
    return Match(out, frame, qo, ko, vo, scale, tuple(terms), gqa, how, inner, at)


# -- P and the softmax ---------------------------------------------------------------------

def _weights(p: Value, inner: set[Node]) -> Value:
    """From the matmul's left operand up through casts and batch reshapes to the softmax."""
    while p.node is not None:
        n = p.node
        x = n.inputs[0] if n.inputs else None
        if n.op is Op.CAST and x is not None and x.type.dtype.is_float and p.type.dtype.is_float:
            pass
        elif not (x is not None and batch_view(n)):
            break
        inner.add(n)
        p = x
    return p


def _softmax(graph: Graph, w: Value, inner: set[Node]) -> tuple[Value, str] | str | None:
    n = w.node
    if n is None:
        return None
    last = w.type.rank - 1
    safe = _safe(graph, n)
    if safe is not None:
        p, parts = safe
        found = _softmax(graph, p, inner)
        if isinstance(found, tuple):
            inner |= {n, *parts}
            return found[0], "safe softmax"
        return found
    if n.op is Op.SOFTMAX:
        dim = normalize_axis(n.attrs["dim"], w.type.rank)
        if dim != last:
            return f"softmax over axis {dim} of {w.type}, not the last (key) axis"
        inner.add(n)
        return n.inputs[0], "softmax"
    e, s, rec = _quotient(n)
    if e is None or s is None or e.node is None or e.node.op is not Op.EXP:
        return None
    if s.node is None or s.node.op is not Op.SUM or s.node.inputs[0] is not e:
        return "the exponentials are not divided by their own sum"
    if [normalize_axis(d, w.type.rank) for d in s.node.attrs["dims"]] != [last] \
            or not s.node.attrs["keepdim"]:
        return f"the softmax sums over axes {list(s.node.attrs['dims'])} of {w.type}, not the last (key) axis"
    inner |= {n, e.node, s.node} | ({rec} if rec is not None else set())
    x = e.node.inputs[0]
    sub = x.node
    if sub is not None and sub.op is Op.SUB and sub.inputs[1].node is not None \
            and sub.inputs[1].node.op is Op.AMAX and sub.inputs[1].node.inputs[0] is sub.inputs[0]:
        mx = sub.inputs[1].node
        if [normalize_axis(d, w.type.rank) for d in mx.attrs["dims"]] != [last]:
            return f"the softmax subtracts the max over axes {list(mx.attrs['dims'])}, not the key axis"
        inner |= {sub, mx}
        return sub.inputs[0], "decomposed softmax"
    return x, "decomposed softmax without max subtraction"


def _safe(graph: Graph, n: Node) -> tuple[Value, list[Node]] | None:
    """The softmax of torch's ``_safe_softmax`` (its decomposition, which the math backend of
    scaled_dot_product_attention traces to): ``where(all(x == -inf, -1), 0, softmax(x))``, also
    with ``all`` as ``not(any(not(...)))``. Rows that keep no key give 0, as the attention op
    does ([Note: attention masks]), so the ``where`` goes with the rest of the pattern."""
    if n.op is not Op.WHERE or uniform(graph, n.inputs[1]) != 0.0:
        return None
    cond, p = n.inputs[0], n.inputs[2]
    if p.node is None or p.node.op is not Op.SOFTMAX:
        return None
    parts = _all_minus_inf(graph, cond, p.node.inputs[0], normalize_axis(p.node.attrs["dim"], p.type.rank))
    return None if parts is None else (p, parts)


def _all_minus_inf(graph: Graph, cond: Value, x: Value, axis: int) -> list[Node] | None:
    """The nodes of ``all(x == -inf, dim=axis, keepdim=True)`` (or ``not any(x != -inf)``)."""
    def eq_inf(v: Value, want: Op) -> Node | None:
        e = v.node
        if e is not None and e.op is want and e.inputs[0] is x and uniform(graph, e.inputs[1]) == -math.inf:
            return e
        return None

    def over_axis(r: Node) -> bool:
        return [normalize_axis(d, r.inputs[0].type.rank) for d in r.attrs["dims"]] == [axis] and r.attrs["keepdim"]

    a = cond.node
    if a is not None and a.op is Op.ALL and over_axis(a):
        e = eq_inf(a.inputs[0], Op.EQ)
        return None if e is None else [a, e]
    if a is None or a.op is not Op.LOGICAL_NOT or a.inputs[0].node is None:
        return None
    any_ = a.inputs[0].node
    if any_.op is not Op.ANY or not over_axis(any_) or any_.inputs[0].node is None:
        return None
    inner = any_.inputs[0].node
    if inner.op is Op.NE:
        e = eq_inf(any_.inputs[0], Op.NE)
        return None if e is None else [a, any_, e]
    if inner.op is Op.LOGICAL_NOT:
        e = eq_inf(inner.inputs[0], Op.EQ)
        return None if e is None else [a, any_, inner, e]
    return None


def _quotient(n: Node) -> tuple[Value | None, Value | None, Node | None]:
    """(e, s, the reciprocal node if any) of ``e / s`` or ``e * reciprocal(s)``."""
    if n.op is Op.DIV and n.attrs["rounding_mode"] is None:
        return n.inputs[0], n.inputs[1], None
    if n.op is Op.MUL:
        for a, b in (n.inputs, n.inputs[::-1]):
            if b.node is not None and b.node.op is Op.RECIPROCAL:
                return a, b.node.inputs[0], b.node
    return None, None, None


# -- the scores ----------------------------------------------------------------------------

def _scores(graph: Graph, x: Value, a: Scale, terms: list[Term], inner: set[Node],
            at: list[str], reshaped: bool) -> tuple[Node, Scale]:
    """Walk from the softmax input down to Q Kᵀ; the matmul node and the scale above it."""
    n = x.node
    if n is None:
        raise Miss("the softmax input is a graph input, not a product Q Kᵀ")
    inner.add(n)
    if n.op is Op.MATMUL:
        if n.inputs[0].type.rank < 2 or n.inputs[1].type.rank < 2:
            raise Miss("the scores are a matrix-vector product")
        return n, a
    if batch_view(n):
        return _scores(graph, n.inputs[0], a, terms, inner, at, reshaped=True)
    if n.op is Op.CAST:
        src = n.inputs[0].type.dtype
        if not (src.is_float and exact_cast(src, x.type.dtype)):
            raise Miss(f"the scores are cast {src} -> {x.type.dtype} before the softmax")
        return _scores(graph, n.inputs[0], a, terms, inner, at, reshaped)
    if n.op in (Op.MUL, Op.DIV):
        return _scaled(graph, n, a, terms, inner, at, reshaped)
    if n.op in (Op.ADD, Op.SUB, Op.WHERE) and reshaped:
        raise Miss("a mask is applied before the scores are reshaped to the frame's axes")
    if n.op in (Op.ADD, Op.SUB):
        return _biased(graph, n, a, terms, inner, at)
    if n.op is Op.WHERE:
        return _masked(graph, n, a, terms, inner, at)
    raise Miss(f"the scores pass through {n.op} before the softmax")


def _scaled(graph: Graph, n: Node, a: Scale, terms: list[Term], inner: set[Node],
            at: list[str], reshaped: bool) -> tuple[Node, Scale]:
    sides = [(0, 1), (1, 0)] if n.op is Op.MUL else [(0, 1)]
    if n.op is Op.DIV and n.attrs["rounding_mode"] is not None:
        raise Miss(f"the scores are divided with rounding_mode={n.attrs['rounding_mode']}")
    divides = n.op is Op.DIV
    for s, c in sides:
        x, f = n.inputs[s], n.inputs[c]
        if not x.type.same_as(n.output.type) and not _widened(x, n.output):
            continue
        value = uniform(graph, f)
        if value is not None:
            at.append("scores")
            return _scores(graph, x, a.times(1.0 / value if divides else value), terms, inner, at, reshaped)
        if f.type.is_static and f.type.numel() == 1 and f.type.dtype.is_float:
            run = Scale(a.const, a.runtime + ((f, divides),))
            return _scores(graph, x, run, terms, inner, at, reshaped)
    factor = n.inputs[1] if divides else min(n.inputs, key=lambda v: _size(v))
    axes = [i - factor.type.rank for i, d in enumerate(factor.type.shape) if d != 1]
    where = "the key axis" if -1 in axes else f"axes {axes}"
    raise Miss(f"the scores are {'divided' if divides else 'multiplied'} by {factor.type}, which "
                f"is not one value: it varies along {where}")


def _biased(graph: Graph, n: Node, a: Scale, terms: list[Term], inner: set[Node],
            at: list[str]) -> tuple[Node, Scale]:
    """``x + m`` or ``x - m``: either operand of an add may be the scores; the one that leads
    to Q Kᵀ with a mask not computed from it is."""
    first: Miss | None = None
    for s, m in ([(0, 1), (1, 0)] if n.op is Op.ADD else [(0, 1)]):
        x, mask = n.inputs[s], n.inputs[m]
        if not (x.type.same_as(n.output.type) or _widened(x, n.output)) or not mask.type.dtype.is_float:
            continue
        sign = -1.0 if n.op is Op.SUB else 1.0
        t2, i2, a2 = terms + [Term(mask, True, factor=sign * a.const, runtime=a.runtime)], set(inner), list(at)
        try:
            found = _scores(graph, x, a, t2, i2, a2, reshaped=False)
        except Miss as e:
            first = first or e
            continue
        if depends(mask, found[0]):
            first = first or Miss("the mask is computed from the scores it masks")
            continue
        terms[:], at[:] = t2, a2
        inner |= i2
        return found
    if first is not None:
        raise first
    raise Miss(f"the {n.op} of {n.inputs[0].type} and {n.inputs[1].type} is not scores plus a "
                f"float mask of the scores' shape")


def _masked(graph: Graph, n: Node, a: Scale, terms: list[Term], inner: set[Node],
            at: list[str]) -> tuple[Node, Scale]:
    cond, yes, no = n.inputs
    for x, fill, negate in ((yes, no, False), (no, yes, True)):
        value = uniform(graph, fill)
        if value is None or not (x.type.same_as(n.output.type) or _widened(x, n.output)):
            continue
        if not vanishes(value):
            raise Miss(f"where fills masked scores with {value:g}, which does not vanish in the "
                        f"softmax (-inf or at most -1e4 does)")
        if a.runtime or a.const <= 0:
            raise Miss("a scale that may be negative is applied after the where mask")
        terms.append(Term(cond, False, negate=negate))
        return _scores(graph, x, a, terms, inner, at, reshaped=False)
    raise Miss("the where picks between two tensors, not scores and a fill value")


def inert(graph: Graph, mask: Value, bias: bool, negate: bool = False) -> bool:
    """A mask known at compile time to change nothing: an additive one of zeros, a keep-mask
    of all True (HF's masks of a padding mask of ones, built while tracing)."""
    value = uniform(graph, mask)
    return value is not None and value == (0.0 if bias or negate else 1.0)


def _widened(x: Value, out: Value) -> bool:
    """``out`` has ``x``'s shape in a wider float (half scores plus a float32 mask)."""
    return (x.type.with_dtype(out.type.dtype).same_as(out.type) and x.type.dtype.is_float
            and exact_cast(x.type.dtype, out.type.dtype))


def _size(v: Value) -> int:
    n = v.type.numel()
    return int(n) if isinstance(n, (int, sympy.Integer)) else 1 << 62
