"""Attention detection: every ``softmax(scale · Q Kᵀ + mask) V`` becomes one attention op.

    %0 = permute(%k) {dims=[0, 1, 3, 2]} : f32[2, 4, 16, 8]
    %1 = reshape(%q) {shape=[8, 8, 16]} : f32[8, 8, 16]
    %2 = reshape(%0) {shape=[8, 16, 8]} : f32[8, 16, 8]
    %3 = matmul(%1, %2) : f32[8, 8, 8]
    %4 = reshape(%3) {shape=[2, 4, 8, 8]} : f32[2, 4, 8, 8]
    %5 = full() {shape=[], value=0.25, dtype=f64} : f64[]
    %6 = mul(%4, %5) : f32[2, 4, 8, 8]
    %7 = add(%6, %mask) : f32[2, 4, 8, 8]
    %8 = softmax(%7) {dim=-1} : f32[2, 4, 8, 8]
    %9 = reshape(%8) {shape=[8, 8, 8]} : f32[8, 8, 8]
    %10 = reshape(%v) {shape=[8, 8, 16]} : f32[8, 8, 16]
    %11 = matmul(%9, %10) : f32[8, 8, 16]
    %12 = reshape(%11) {shape=[2, 4, 8, 16]} : f32[2, 4, 8, 16]
    return %12
  ->
    %0 = scaled_dot_product_attention(%q, %k, %v, %mask) {scale=0.25, is_causal=false, enable_gqa=false} : f32[2, 4, 8, 16]
    return %0

The forms recognised are in [Note: attention forms] (passes/attention_match.py), how Q, K and V
are read back in [Note: attention operands] (passes/attention_operands.py), the masks and the
causal pattern in [Note: attention masks] (passes/attention_mask.py). Dropout on the weights
has no IR form: both frontends drop it in inference. The op keeps:
- ``scale``: every constant factor on the scores, Q and K, multiplied together; a runtime scalar
  factor multiplies Q instead (the op's scale is then the constant part);
- the mask kind: an additive float mask stays additive (cast to float32 when it is neither
  that nor Q's dtype: what torch accepts), a ``where`` mask becomes a bool mask (True keeps);
  several masks are added, or and-ed when all are bool;
- causality: a lone mask that is exactly the causal one becomes ``is_causal=True``;
- grouped-query attention: K and V with fewer heads (one, for multi-query) and
  ``enable_gqa=True``; K or V shared across batch axes keep those axes at size 1.
An attention op already in the graph (``scaled_dot_product_attention`` calls) whose mask is
the causal one gets ``is_causal=True`` in place of the mask.

Near misses (a softmax feeding a matmul that is not attention, or attention whose weights are
needed elsewhere) are listed in ``rejected`` with the reason; the graph is left as it is there.
The rewrite is checked by equivalence: tests/passes/test_tile_attention.py draws shapes,
scales and masks for every form and compares the graph before and after against float64.
"""

from __future__ import annotations

from effc.ir import DType, Graph, Node, Op, Value
from effc.ir.rewrite import Rewriter
from effc.ir.types import normalize_axis
from effc.options import Options

from .attention_mask import is_causal
from .attention_match import Match, Term, inert, match
from .attention_operands import Operand
from .manager import PassResult

NAME = "tile_attention"


def run(graph: Graph, options: Options) -> PassResult:
    users = graph.users()
    found: dict[Node, Match] = {}
    rejected: list[str] = []
    taken: set[Node] = set()
    for node in graph.nodes:
        m = match(graph, node, users)
        if isinstance(m, str):
            rejected.append(f"softmax -> {node.op} : {node.output.type}: {m}")
        elif m is not None and not m.inner & taken:
            found[node] = m
            taken |= m.inner
    causal = {n for n in graph.nodes if n.op is Op.SDPA and _causal_call(graph, n)}
    unmasked = {n for n in graph.nodes if n.op is Op.SDPA and len(n.inputs) == 4
                and inert(graph, n.inputs[3], n.inputs[3].type.dtype.is_float)}
    if not found and not causal and not unmasked:
        return PassResult(graph, False, (), tuple(rejected))
    rw = Rewriter(graph)
    made: dict[Value, Value] = {}   # reshapes of a new attention output -> the output
    notes: list[str] = []
    for node in graph.nodes:
        m = found.get(node)
        if m is not None:
            out, note = _emit(rw, graph, users, m)
            if not out.type.same_as(node.output.type):
                res = rw.b.op(Op.RESHAPE, [out], shape=node.output.type.shape)
                made[res] = out
                out = res
            rw.replace(node.output, out)
            notes.append(note)
        elif node in taken:
            continue   # inside a match: only the match uses it
        elif node in causal:
            q, k, v = rw.map(node.inputs[:3])
            new = rw.b.node(Op.SDPA, [q, k, v], {**node.attrs, "is_causal": True}).output
            rw.replace(node.output, new)
            notes.append(f"{node.op} : {node.output.type}: causal mask -> is_causal")
        elif node in unmasked:
            new = rw.b.node(Op.SDPA, rw.map(node.inputs[:3]), node.attrs).output
            rw.replace(node.output, new)
            notes.append(f"{node.op} : {node.output.type}: a mask that hides nothing, dropped")
        elif node.op is Op.RESHAPE and rw[node.inputs[0]] in made:
            # reshape(reshape(attention)) -> reshape(attention), or the attention itself
            src = made[rw[node.inputs[0]]]
            rw.replace(node.output, src if src.type.same_as(node.output.type)
                       else rw.b.op(Op.RESHAPE, [src], shape=node.output.type.shape))
        else:
            rw.copy(node)
    out, narrowed = _narrow(rw.finish_pruned())
    return PassResult(out, True, tuple(notes + narrowed), tuple(rejected))


# Note: attention in half precision
# The math backend of torch's scaled_dot_product_attention (what CUDA traces of a masked
# fp16/bf16 attention decompose to) widens Q, K and V to float32, attends, and rounds the
# result back: ``cast_h(sdpa_f32(cast_f32(q), cast_f32(k), cast_f32(v)))`` through views. On
# half inputs the tiled kernels compute the same thing with float32 accumulation (a product of
# two halves is exact in float32); what changes is that the weights P are rounded to the half
# type before ``P V``, as FlashAttention and torch's own half kernels do, a rounding of the
# size the final cast makes anyway. So that form runs on the half values: the tensor-core
# kernel instead of a float32 one reading twice the bytes. Only where the float32 result has
# no other use than the cast back.
VIEWS = (Op.RESHAPE, Op.PERMUTE, Op.SQUEEZE, Op.UNSQUEEZE)


def _narrow(graph: Graph) -> tuple[Graph, list[str]]:
    users = graph.users()
    plans = {n: c for n in graph.nodes if n.op is Op.SDPA for c in [_half_chain(graph, users, n)] if c}
    if not plans:
        return graph, []
    rw = Rewriter(graph)
    chained = {x for c in plans.values() for x in c}
    notes: list[str] = []
    for node in graph.nodes:
        if node in plans:
            half = [_on_half(rw, *_widened(x)) for x in node.inputs[:3]]   # type: ignore[misc]
            dt = half[0].type.dtype
            for m in node.inputs[3:]:   # a half mask the widening cast to float32 too
                half.append(rw[m.node.inputs[0]] if m.node is not None and m.node.op is Op.CAST
                            and m.node.inputs[0].type.dtype is dt else rw[m])
            new = rw.copy(node, half)
            notes.append(f"{node.op} : {node.output.type} runs on the {dt} values it was widened from, as "
                         f"{new.output.type} (its result is rounded back to {dt})")
        elif node in chained and node.op is Op.CAST:
            rw.replace(node.output, rw[node.inputs[0]])
        else:
            rw.copy(node)
    return rw.finish_pruned(), notes


def _widened(x: Value) -> tuple[Node, list[Node]] | None:
    """The cast to float32 that ``x`` is a view of, and the views from it down to ``x``."""
    views: list[Node] = []
    while x.node is not None and x.node.op in VIEWS + (Op.EXPAND,):
        views.append(x.node)
        x = x.node.inputs[0]
    n = x.node
    if n is None or n.op is not Op.CAST or not n.inputs[0].type.dtype.is_float:
        return None
    return n, views[::-1]


def _on_half(rw: Rewriter, cast: Node, views: list[Node]) -> Value:
    x = rw[cast.inputs[0]]
    for v in views:
        x = rw.b.node(v.op, [x], v.attrs).output
    return x


def _half_chain(graph: Graph, users: dict[Value, list[Node]], n: Node) -> list[Node] | None:
    """The views and the cast that take float32 attention on widened halves back to the half
    type [Note: attention in half precision], or None."""
    if n.output.type.dtype is not DType.F32:
        return None
    src = {w[0].inputs[0].type.dtype if w is not None else None for x in n.inputs[:3] for w in [_widened(x)]}
    if len(src) != 1 or (half := src.pop()) not in (DType.F16, DType.BF16):
        return None
    chain: list[Node] = []
    v = n.output
    while len(users.get(v, ())) == 1 and v not in graph.outputs:
        u = users[v][0]
        chain.append(u)
        if u.op is Op.CAST:
            return chain if u.output.type.dtype is half else None
        if u.op not in VIEWS:
            return None
        v = u.output
    return None


def _causal_call(graph: Graph, n: Node) -> bool:
    if len(n.inputs) != 4 or n.attrs["is_causal"]:
        return False
    q, k, _, mask = n.inputs
    return is_causal(graph, mask, q.type.shape[-2], k.type.shape[-2])


def _emit(rw: Rewriter, graph: Graph, users: dict[Value, list[Node]], m: Match) -> tuple[Value, str]:
    b = rw.b
    q, k, v = (_operand(rw, users, o) for o in (m.q, m.k, m.v))
    for r, divides in m.scale.runtime:
        f = rw[r] if rw[r].type.dtype is q.type.dtype else b.op(Op.CAST, [rw[r]], dtype=q.type.dtype)
        q = b.op(Op.DIV if divides else Op.MUL, [q, f], **({"rounding_mode": None} if divides else {}))
    sq, sk = m.frame[-2], m.frame[-1]
    causal = len(m.terms) == 1 and is_causal(graph, m.terms[0].value, sq, sk, m.terms[0].negate)
    mask = None if causal else _mask(rw, users, m.terms)
    if mask is not None and mask.type.rank < 2:   # torch wants a mask of rank 2 or more
        mask = b.op(Op.RESHAPE, [mask], shape=(1,) * (2 - mask.type.rank) + mask.type.shape)
    if mask is not None and mask.type.dtype.is_float and mask.type.dtype not in (q.type.dtype, DType.F32):
        # torch takes a bool mask, a float32 one or one of Q's dtype (a float64 bias on float32
        # scores, a half bias on float32 scores)
        mask = b.op(Op.CAST, [mask], dtype=DType.F32)
    ins = [q, k, v] + ([mask] if mask is not None else [])
    out = b.op(Op.SDPA, ins, scale=m.scale.const, is_causal=causal, enable_gqa=m.gqa)
    return out, _describe(m, out, mask, causal, k)


def _operand(rw: Rewriter, users: dict[Value, list[Node]], o: Operand) -> Value:
    x = rw[o.base]
    if o.perm is not None:
        x = _existing_permute(rw, users, o.base, o.perm) or rw.b.op(Op.PERMUTE, [x], dims=o.perm)
    if o.shape is not None:
        x = rw.b.op(Op.RESHAPE, [x], shape=o.shape)
    return x


def _existing_permute(rw: Rewriter, users: dict[Value, list[Node]], base: Value,
                      perm: tuple[int, ...]) -> Value | None:
    """The same permute of ``base`` when the model computes it already (GPT-2 returns K)."""
    for u in users.get(base, ()):
        if u.op is Op.PERMUTE and u.output in rw.vmap and tuple(
                normalize_axis(d, base.type.rank) for d in u.attrs["dims"]) == perm:
            return rw[u.output]
    return None


def _mask(rw: Rewriter, users: dict[Value, list[Node]], terms: tuple[Term, ...]) -> Value | None:
    """One mask for the op: bool masks and-ed; otherwise everything as an additive bias."""
    b = rw.b
    keeps = [_keep(rw, t) for t in terms if not t.bias]
    if len(keeps) == len(terms):
        out = keeps[0] if keeps else None
        for k in keeps[1:]:
            out = b.op(Op.LOGICAL_AND, [out, k])
        return out
    biases = [_bias(rw, t) for t in terms if t.bias]
    dt = biases[0].type.dtype
    for k in keeps:
        biases.append(b.op(Op.WHERE, [k, b.scalar(0.0, dt), b.scalar(float("-inf"), dt)]))
    out = biases[0]
    for x in biases[1:]:
        out = b.op(Op.ADD, [out, x])
    return out


def _keep(rw: Rewriter, t: Term) -> Value:
    if not t.negate:
        return rw[t.value]
    n = t.value.node
    if n is not None and n.op in (Op.LOGICAL_NOT, Op.BITWISE_NOT):   # masked_fill(~keep, ...)
        return rw[n.inputs[0]]
    return rw.b.op(Op.LOGICAL_NOT, [rw[t.value]])


def _bias(rw: Rewriter, t: Term) -> Value:
    b, x = rw.b, rw[t.value]
    if t.factor == -1.0:
        x = b.op(Op.NEG, [x])
    elif t.factor != 1.0:
        x = b.op(Op.MUL, [x, b.scalar(t.factor, DType.F64)])
    for r, divides in t.runtime:
        x = b.op(Op.DIV if divides else Op.MUL, [x, rw[r]], **({"rounding_mode": None} if divides else {}))
    return x


def _describe(m: Match, out: Value, mask: Value | None, causal: bool, k: Value) -> str:
    kinds = sorted({"additive mask" if t.bias else "bool mask" for t in m.terms})
    where = ", ".join(dict.fromkeys(m.scale_at))
    scale = f"scale {m.scale.const:.6g}" + (f" from {where}" if where else "")
    if m.scale.runtime:
        scale += " times a runtime scalar, applied to Q"
    parts = [m.softmax, scale]
    parts.append("causal" if causal else (" + ".join(kinds) if mask is not None else "no mask"))
    if m.gqa:
        parts.append(f"{m.frame[-3]} query heads on {k.type.shape[-3]} K/V heads")
    return f"{Op.SDPA} : {out.type} replaces softmax(Q Kᵀ) V ({'; '.join(parts)})"
