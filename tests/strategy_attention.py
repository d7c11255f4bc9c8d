"""Attention written the ways model code writes it, as IR, for tile_attention's property tests.

    @given(case=attention_cases("mask"))
    def test_something(case): ...

``attention_cases(form)`` draws shapes, scale, mask, softmax form, dtype, head layout and K/V
grouping; ``form`` forces one of those to a non-trivial choice (``FORMS`` lists them) and the
rest are drawn freely. Boolean masks keep key 0 of every row: the rewrite is exact on rows
that keep a key ([Note: attention masks] in passes/attention_mask.py).
``attention_cases(form, miss=m)`` spoils the drawn attention one way (``MISSES``: what
tile_attention must reject, and the reason it gives); ``sdpa_calls()`` draws an attention op
already in the graph with a mask, causal or not. (Dropout has no IR form: both frontends drop
it in inference, so it is tested through them.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st

from effc.ir import DType, Graph, GraphBuilder, Op, TensorType, Value

F32, F16, F64, BOOL, I64 = DType.F32, DType.F16, DType.F64, DType.BOOL, DType.I64

SCALES = ("scores_mul", "scores_div", "q", "k", "split", "q_div", "k_div", "split_div", "after_mask",
          "none")
MASKS = ("none", "bias", "keep", "drop", "masked_fill", "bias_and_keep",
         "causal_bias", "causal_bool", "causal_arange", "causal_arange_bias", "causal_triu")
SOFTMAXES = ("op", "decomposed", "no_max", "reciprocal", "safe", "safe_any")
LAYOUTS = ("4d", "bmm", "heads")
GROUPS = ("none", "repeat_kv", "mqa", "mqa_broadcast")
FORMS = ("scale", "mask", "causal", "softmax", "half", "widened", "layout", "gqa", "runtime_scale")
_FORCE: dict[str, tuple[str, tuple[Any, ...]]] = {
    "scale": ("scale", SCALES[:-1]), "mask": ("mask", MASKS[1:6]), "causal": ("mask", MASKS[6:]),
    "softmax": ("softmax", SOFTMAXES[1:]), "half": ("dtype", (F16,)), "widened": ("widen", (True,)),
    "layout": ("layout", LAYOUTS[1:]), "gqa": ("group", GROUPS[1:]), "runtime_scale": ("runtime", (True,)),
}


@dataclass
class AttentionCase:
    graph: Graph
    inputs: list[torch.Tensor]
    choice: dict[str, Any]
    causal: bool
    gqa: bool

    def __str__(self) -> str:
        return f"{self.choice}\n{self.graph}"


# a near miss -> the end of the reason tile_attention gives for it
MISSES = {"softmax_axis": "not the last (key) axis", "per_key_scale": "it varies along the key axis",
          "fill": "which does not vanish in the softmax (-inf or at most -1e4 does)",
          "weights_used": "so it must exist"}


@st.composite
def attention_cases(draw: st.DrawFn, form: str, miss: str | None = None) -> AttentionCase:
    c: dict[str, Any] = {
        "scale": draw(st.sampled_from(SCALES)), "mask": draw(st.sampled_from(MASKS)),
        "softmax": draw(st.sampled_from(SOFTMAXES)), "dtype": draw(st.sampled_from((F32, F32, F16))),
        "layout": draw(st.sampled_from(LAYOUTS)), "group": draw(st.sampled_from(GROUPS)),
        "runtime": draw(st.booleans()) and draw(st.booleans()),
        "widen": draw(st.booleans()) and draw(st.booleans()),
    }
    key, options = _FORCE[form]
    c[key] = draw(st.sampled_from(options))
    c["miss"] = miss
    if c["widen"]:   # half inputs widened to float32 and the result rounded back: torch's math backend
        c["dtype"] = F32
    if miss == "fill":
        c["mask"] = draw(st.sampled_from(("keep", "drop", "masked_fill")))
    causal = c["mask"].startswith("causal")
    hkv = draw(st.integers(1, 2))
    rep = 1 if c["group"] == "none" else draw(st.integers(2, 3))
    if c["group"] in ("mqa", "mqa_broadcast"):
        hkv = 1
    c.update(b=draw(st.integers(1, 2)), h=hkv * rep, hkv=hkv if c["group"] != "none" else hkv * rep,
             sq=draw(st.integers(1, 6)), d=draw(st.integers(1, 8)), dv=draw(st.integers(1, 8)),
             c=draw(st.floats(0.05, 2.0)), c2=draw(st.floats(0.25, 2.0)),
             fill=draw(st.sampled_from((-1.0, -100.0, 0.0) if miss == "fill" else
                                       (float("-inf"), -1e9, -3.4028234663852886e38))),
             bias_shape=draw(st.sampled_from(("full", "keys", "heads", "batch", "plain"))),
             commute=draw(st.booleans()))
    c["sk"] = c["sq"] if causal else draw(st.integers(1, 6))
    if miss in ("per_key_scale", "softmax_axis"):   # one key (or query) hides the difference
        c["sq"], c["sk"] = max(c["sq"], 2), max(c["sk"], 2)
    seed = draw(st.integers(0, 2**16))
    return _build(c, seed)


def _build(c: dict[str, Any], seed: int) -> AttentionCase:
    b = GraphBuilder()
    gen = torch.Generator().manual_seed(seed)
    dt, B, H, Hkv, Sq, Sk, D, Dv = (c[k] for k in ("dtype", "b", "h", "hkv", "sq", "sk", "d", "dv"))
    inputs: list[torch.Tensor] = []

    def inp(name: str, dtype: DType, shape: tuple[int, ...], t: torch.Tensor | None = None) -> Value:
        if t is None:
            t = (torch.randn(shape, generator=gen, dtype=torch.float64) * 0.7).to(dtype.to_torch())
        inputs.append(t)
        return b.input(name, TensorType(dtype, shape))

    def heads(name: str, n: int, s: int, width: int) -> Value:
        """[B, n, s, width] from an input in the layout drawn."""
        if c["layout"] != "heads":
            return widened(inp(name, F16 if c["widen"] else dt, (B, n, s, width)))
        x = widened(inp(name, F16 if c["widen"] else dt, (B, s, n * width)))
        return b.op(Op.PERMUTE, [b.op(Op.RESHAPE, [x], shape=[B, s, n, width])], dims=[0, 2, 1, 3])

    def widened(x: Value) -> Value:
        return b.op(Op.CAST, [x], dtype=F32) if c["widen"] else x

    q, k, v = heads("q", H, Sq, D), heads("k", c["hkv"], Sk, D), heads("v", c["hkv"], Sk, Dv)
    scalar = b.scalar
    if c["scale"] in ("q", "split", "split_div"):
        q = b.op(Op.MUL, [q, scalar(c["c"], F64)])
    elif c["scale"] == "q_div":
        q = b.op(Op.DIV, [q, scalar(1.0 / c["c"], F64)], rounding_mode=None)
    if c["scale"] in ("k", "split"):
        k = b.op(Op.MUL, [k, scalar(c["c2"] if c["scale"] == "split" else c["c"], F64)])
    elif c["scale"] in ("k_div", "split_div"):
        k = b.op(Op.DIV, [k, scalar(1.0 / (c["c2"] if c["scale"] == "split_div" else c["c"]), F64)],
                 rounding_mode=None)
    # one K/V head: broadcast by an expand, or by the matmul itself (not possible through bmm)
    if c["group"] in ("repeat_kv", "mqa") or (c["group"] == "mqa_broadcast" and c["layout"] == "bmm"):
        k, v = (_repeat(b, x, H // c["hkv"], c["group"] != "repeat_kv") for x in (k, v))
    scores = _qk(b, q, k, c["layout"])
    if c["miss"] == "per_key_scale":
        per_key = torch.linspace(0.5, 1.5, Sk, dtype=dt.to_torch())
        scores = b.op(Op.MUL, [scores, b.constant(per_key, "per_key")])
    runtime = inp("t", F32, (), torch.tensor(c["c2"], dtype=torch.float32)) if c["runtime"] else None
    if runtime is not None:
        scores = b.op(Op.MUL, [scores, runtime])
    if c["scale"] == "scores_mul":
        s = scalar(c["c"], F64)
        scores = b.op(Op.MUL, [s, scores] if c["commute"] else [scores, s])
    elif c["scale"] == "scores_div":
        scores = b.op(Op.DIV, [scores, scalar(1.0 / c["c"], F64)], rounding_mode=None)
    scores = _mask(b, c, scores, inp, gen)
    if c["scale"] == "after_mask":
        scores = b.op(Op.MUL, [scores, scalar(c["c"], F64)])
    if dt is F16:
        scores = b.op(Op.CAST, [scores], dtype=F32)
    p = _softmax(b, scores, c["softmax"], -2 if c["miss"] == "softmax_axis" else -1)
    if dt is F16:
        p = b.op(Op.CAST, [p], dtype=F16)
    out = _pv(b, p, v, c["layout"])
    if c["layout"] == "heads":
        out = b.op(Op.RESHAPE, [b.op(Op.PERMUTE, [out], dims=[0, 2, 1, 3])], shape=[B, Sq, H * Dv])
    if c["widen"]:
        out = b.op(Op.CAST, [out], dtype=F16)
    causal = c["mask"].startswith("causal")
    outs = [out, p] if c["miss"] == "weights_used" else [out]
    return AttentionCase(b.build(outs), inputs, c, causal, c["group"] != "none")


def _repeat(b: GraphBuilder, x: Value, rep: int, mqa: bool) -> Value:
    """K/V heads repeated for grouped-query attention: repeat_kv, or one head broadcast."""
    B, n, s, d = x.type.shape
    if mqa:
        return b.op(Op.EXPAND, [x], shape=[B, rep, s, d])
    u = b.op(Op.UNSQUEEZE, [x], dim=2)
    e = b.op(Op.EXPAND, [u], shape=[B, n, rep, s, d])
    return b.op(Op.RESHAPE, [e], shape=[B, n * rep, s, d])


def _qk(b: GraphBuilder, q: Value, k: Value, layout: str) -> Value:
    """Q Kᵀ; in the 4-d layouts a K with one head broadcasts in the matmul."""
    B, H, Sq, D = q.type.shape
    Sk = k.type.shape[2]
    kt = b.op(Op.PERMUTE, [k], dims=[0, 1, 3, 2])
    if layout != "bmm":
        return b.op(Op.MATMUL, [q, kt])
    q3 = b.op(Op.RESHAPE, [q], shape=[B * H, Sq, D])
    kt3 = b.op(Op.RESHAPE, [kt], shape=[B * H, D, Sk])
    return b.op(Op.RESHAPE, [b.op(Op.MATMUL, [q3, kt3])], shape=[B, H, Sq, Sk])


def _pv(b: GraphBuilder, p: Value, v: Value, layout: str) -> Value:
    if layout != "bmm":
        return b.op(Op.MATMUL, [p, v])
    B, H, Sq, Sk = p.type.shape
    Dv = v.type.shape[3]
    p3 = b.op(Op.RESHAPE, [p], shape=[B * H, Sq, Sk])
    v3 = b.op(Op.RESHAPE, [v], shape=[B * H, Sk, Dv])
    return b.op(Op.RESHAPE, [b.op(Op.MATMUL, [p3, v3])], shape=[B, H, Sq, Dv])


def _softmax(b: GraphBuilder, x: Value, form: str, dim: int) -> Value:
    if form == "op":
        return b.op(Op.SOFTMAX, [x], dim=dim)
    if form.startswith("safe"):   # torch's _safe_softmax decomposed, ``all`` also as not-any-not
        p = b.op(Op.SOFTMAX, [x], dim=dim)
        hidden = b.op(Op.EQ, [x, b.scalar(float("-inf"), F64)])
        if form == "safe":
            empty = b.op(Op.ALL, [hidden], dims=[dim], keepdim=True)
        else:
            seen = b.op(Op.ANY, [b.op(Op.LOGICAL_NOT, [hidden])], dims=[dim], keepdim=True)
            empty = b.op(Op.LOGICAL_NOT, [seen])
        zeros = b.op(Op.FULL, [], shape=list(x.type.shape), value=0.0, dtype=x.type.dtype)
        return b.op(Op.WHERE, [empty, zeros, p])
    if form != "no_max":
        x = b.op(Op.SUB, [x, b.op(Op.AMAX, [x], dims=[dim], keepdim=True)])
    e = b.op(Op.EXP, [x])
    s = b.op(Op.SUM, [e], dims=[dim], keepdim=True, dtype=None)
    if form == "reciprocal":
        return b.op(Op.MUL, [e, b.op(Op.RECIPROCAL, [s])])
    return b.op(Op.DIV, [e, s], rounding_mode=None)


def _keep_tensor(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    keep = torch.rand(shape, generator=gen) > 0.4
    keep[..., 0] = True
    return keep


def _mask(b: GraphBuilder, c: dict[str, Any], s: Value, inp: Any, gen: torch.Generator) -> Value:
    kind, B, H, Sq, Sk, fill = c["mask"], c["b"], c["h"], c["sq"], c["sk"], c["fill"]
    dt = s.type.dtype
    shapes = {"full": (B, H, Sq, Sk), "keys": (Sk,), "heads": (1, H, Sq, Sk),
              "batch": (B, 1, Sq, Sk), "plain": (Sq, Sk)}
    shape = shapes[c["bias_shape"]]
    if kind in ("bias", "bias_and_keep"):
        s = b.op(Op.ADD, [s, inp("bias", dt, shape)])
    if kind in ("keep", "bias_and_keep"):
        keep = inp("keep", BOOL, shape, _keep_tensor(shape, gen))
        s = b.op(Op.WHERE, [keep, s, b.scalar(fill, F32)])
    elif kind == "drop":
        drop = inp("drop", BOOL, shape, ~_keep_tensor(shape, gen))
        s = b.op(Op.WHERE, [drop, b.scalar(fill, F32), s])
    elif kind == "masked_fill":
        keep = inp("keep", BOOL, shape, _keep_tensor(shape, gen))
        s = b.op(Op.WHERE, [b.op(Op.BITWISE_NOT, [keep]), b.scalar(fill, F32), s])
    lower = torch.ones(Sq, Sk, dtype=torch.bool).tril()
    if kind == "causal_bias":
        t = torch.zeros(1, 1, Sq, Sk, dtype=dt.to_torch()).masked_fill(~lower, _fill(dt, fill))
        s = b.op(Op.ADD, [s, b.constant(t, "causal")])
    elif kind == "causal_bool":
        s = b.op(Op.WHERE, [b.constant(lower, "causal"), s, b.scalar(fill, F32)])
    elif kind in ("causal_arange", "causal_arange_bias", "causal_triu"):
        i = b.op(Op.UNSQUEEZE, [b.op(Op.ARANGE, [], start=0, end=Sq, step=1, dtype=I64)], dim=1)
        j = b.op(Op.UNSQUEEZE, [b.op(Op.ARANGE, [], start=0, end=Sk, step=1, dtype=I64)], dim=0)
        if kind == "causal_triu":   # masked_fill(triu(ones, 1), fill): drop where j - i >= 1
            drop = b.op(Op.GE, [b.op(Op.SUB, [j, i]), b.scalar(1, I64)])
            drop = b.op(Op.LOGICAL_AND, [drop, b.op(Op.FULL, [], shape=[Sq, Sk], value=True, dtype=BOOL)])
            return b.op(Op.WHERE, [drop, b.scalar(fill, F32), s])
        keep = b.op(Op.LE, [j, i]) if c["commute"] else b.op(Op.GE, [i, j])
        if kind == "causal_arange":
            return b.op(Op.WHERE, [keep, s, b.scalar(fill, F32)])
        bias = b.op(Op.WHERE, [keep, b.scalar(0.0, dt), b.scalar(_fill(dt, fill), dt)])
        s = b.op(Op.ADD, [s, b.op(Op.UNSQUEEZE, [b.op(Op.UNSQUEEZE, [bias], dim=0)], dim=0)])
    return s


def _fill(dt: DType, fill: float) -> float:
    """``fill`` as a value of ``dt``: half precision's lowest is -65504."""
    return fill if dt is not F16 or fill == float("-inf") else max(fill, -6e4)


SDPA_MASKS = ("tril", "tril_4d", "arange", "arange_bias", "causal_bias", "tril_above", "tril_below",
              "keep", "bias")


@st.composite
def sdpa_calls(draw: st.DrawFn) -> AttentionCase:
    """``scaled_dot_product_attention(q, k, v, mask)`` as a model calls it: the mask one of
    ``SDPA_MASKS``, the causal ones (the first five) among them; K/V heads grouped or not."""
    kind = draw(st.sampled_from(SDPA_MASKS))
    B, Hkv, r, S, D = (draw(st.integers(1, n)) for n in (2, 2, 3, 6, 8))
    dt = draw(st.sampled_from((F32, F32, F16)))
    scale = draw(st.none() | st.floats(0.1, 2.0))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    b = GraphBuilder()
    inputs: list[torch.Tensor] = []

    def inp(name: str, shape: tuple[int, ...], t: torch.Tensor | None = None, dtype: DType = dt) -> Value:
        inputs.append((torch.randn(shape, generator=gen, dtype=torch.float64) * 0.7).to(dt.to_torch())
                      if t is None else t)
        return b.input(name, TensorType(dtype if t is None else DType.from_torch(t.dtype), shape))

    q, k, v = inp("q", (B, Hkv * r, S, D)), inp("k", (B, Hkv, S, D)), inp("v", (B, Hkv, S, D))
    lower = torch.ones(S, S, dtype=torch.bool).tril()
    if kind in ("tril", "tril_4d", "tril_above", "tril_below"):
        t = torch.ones(S, S, dtype=torch.bool).tril({"tril_above": 1, "tril_below": -1}.get(kind, 0))
        mask = b.constant(t.reshape(1, 1, S, S) if kind == "tril_4d" else t, "tril")
    elif kind in ("arange", "arange_bias"):
        i = b.op(Op.UNSQUEEZE, [b.op(Op.ARANGE, [], start=0, end=S, step=1, dtype=I64)], dim=1)
        j = b.op(Op.UNSQUEEZE, [b.op(Op.ARANGE, [], start=0, end=S, step=1, dtype=I64)], dim=0)
        mask = b.op(Op.LE, [j, i])
        if kind == "arange_bias":
            mask = b.op(Op.WHERE, [mask, b.scalar(0.0, dt), b.scalar(float("-inf"), dt)])
    elif kind == "causal_bias":
        mask = b.constant(torch.zeros(S, S, dtype=dt.to_torch()).masked_fill(~lower, float("-inf")), "causal")
    elif kind == "keep":
        mask = inp("keep", (B, 1, S, S), _keep_tensor((B, 1, S, S), gen))
    else:
        mask = inp("bias", (B, 1, S, S))
    out = b.op(Op.SDPA, [q, k, v, mask], scale=scale, is_causal=False, enable_gqa=r > 1)
    c = {"mask": kind, "b": B, "hkv": Hkv, "rep": r, "s": S, "d": D, "dtype": dt, "scale": scale}
    causal = kind in SDPA_MASKS[:5] or (kind == "tril_above" and S == 1)   # [[True]] is causal
    return AttentionCase(b.build([out]), inputs, c, causal, r > 1)
