"""Scaled dot-product attention in Triton: the module of an ``op`` kernel whose
``Template(op="node")`` node is ``Op.SDPA`` ([Note: Triton kernel ABI]), tiled with an online
softmax so that the ``Sq x Sk`` score matrix never exists.

    kernel att op(a0: f16[8, 16, s0, 128], a1: f16[8, 16, s0, 128], a2: f16[8, 16, s0, 128])
        -> (out0: f16[8, 16, s0, 128])
      call scaled_dot_product_attention {scale=none, is_causal=true, enable_gqa=false}
becomes
    generate_attention(kernel, "k0") -> TritonSource("effc_k0", "import math ...", "entry")
    entry([q, k, v], [out], [s0]): Sq <= 16 ? effc_k0_decode (+ effc_k0_combine) : effc_k0_fwd

[Note: Triton attention]
Forward, FlashAttention-2's partitioning (TECHNIQUES.md, attention tiling): one program per
``BLOCK_M`` query rows of one (batch, head), grid ``(ceil(Sq/BM), batch x heads)``. Q stays
in registers; the program walks the keys in ``BLOCK_N`` steps: ``S = Q Kt`` (tl.dot, fp32
accumulation), the running row max ``m``, ``P = exp2(S*scale*log2e - m)``, ``l = l*alpha +
rowsum P`` and ``O = O*alpha + P V`` with ``alpha = exp2(m_old - m)`` and ``P`` rounded to
the operand dtype for the second dot, as FlashAttention does; ``O / l`` at the end.
- Two phases per program: the key blocks every row of the tile fully sees run with no masks
  at all; the rest (the block holding ``Sk``'s ragged end, and under ``is_causal`` the blocks
  the tile's diagonal crosses) run with the key-range and causal masks. Blocks past the
  tile's last row under ``is_causal`` (top-left diagonal, as torch: row i sees keys j <= i)
  are never visited: tile skipping. Causal query tiles run heaviest first (the grid's first
  programs take the last rows) so that the triangle's work spreads over the SMs.
- With no mask the scale folds into one FMA per score (``S*c - m``, ``m`` from the raw row
  max times ``c``; only for a positive scale). A bool mask replaces the scores it drops by
  -inf; an additive one is added (times log2e) before the max, both as torch does.
- Fully masked rows: where a mask can drop a whole row, the exponent is taken against 0 while
  the row max is still -inf (never ``-inf - -inf``), so ``l = 0`` and the row stores
  ``O * 0``: 0, as the reference backend (torch's CPU kernels), and NaN where NaN reached it.
- Head dims that are not a power of two (80, 96) pad to one with masked loads (``other=0``);
  tl.dot needs 16 at least. f16/bf16 run on the tensor cores; float32 uses IEEE dots (tf32
  would leave the tolerance policy). [Note: interpreted bf16 dots] applies: interpreted bf16
  tiles widen to float32 before a dot.
- ``AttentionConfig(tma=True)`` loads Q, K and V through tensor descriptors (host-side
  ``TensorDescriptor`` over ``[heads, S, D]``: Hopper's copy engine, rows past the end read
  0) where they apply: k and v broadcast over no dim but the heads (GQA/MQA: the kv head is
  the flat index divided by the group), power-of-two head dims with 16-byte rows; elsewhere
  the same config runs the pointer kernel. The GPU benchmark says which wins.
- Leading dims (batch, heads, any number) flatten into the grid's second axis and unflatten
  in the program: per dim the stride of q, out, k, v and the mask, 0 where k, v or the mask
  broadcast, and for GQA (``enable_gqa``, fewer kv heads dividing the query heads) the kv
  head is the query head divided by the group. Grid axis 1 holds at most 65535 points, so
  the launcher walks larger flat ranges in chunks (``Z0``, the chunk's first index).
Decode (FlashDecoding), for at most 16 queries: while ``G x Sq`` rows fit a 64-row tile
(``G`` the GQA group, or every head when k and v have one), the rows of one (batch, kv head)
are the group's query heads times the queries: they read the same keys, so K and V are read
once for the group. The keys split among ``splits``
programs (grid ``(splits, batch x kv heads)``); each writes its unnormalised ``O``, ``m`` and
``l`` to a float32 workspace, and a combine kernel (one program per row) rescales the splits
to their common max (``exp2(m_s - max m)``) and divides by the combined sum. One split writes
the output directly. The workspace (``batch x kv heads x splits x rows x (Dv + 2)`` floats)
is the one allocation an entry of these modules makes, from torch's caching allocator on the
tensors' device: no synchronisation.
Tiles come from the cost model ([Note: Triton attention configs]) at the kernel's sizes
(``size_hints`` for symbolic ones); the split count at launch, from the sizes then.
Declined (LoweringError with the reason): float64 or mixed dtypes, a mask of another dtype
than bool or a float, a mask together with ``is_causal`` (torch rejects it), a non-finite
scale.
"""

from __future__ import annotations

from typing import Mapping, Union

import sympy

from effc.costmodel.triton_attention_configs import (DECODE_PROGRAMS_PER_SM, MAX_SPLITS, MIN_BLOCKS_PER_SPLIT,
                                                      AttentionConfig, AttentionProblem, DecodeConfig,
                                                      choose_attention_config, choose_decode_config)
from effc.ir import DType, Op
from effc.ir.kernel import Kernel, LoweringError

from .triton_abi import TritonSource, kernel_name

__all__ = ["generate_attention", "attention_problem", "is_attention", "DECODE_SQ", "DECODE_ROWS"]

DECODE_SQ = 16        # up to this many queries take the decode kernel
DECODE_ROWS = 64      # ... packing a GQA group's query heads into rows while G x Sq fits
DEFAULT_HINT = 2048
LOG2E = 1.4426950408889634
Config = Union[AttentionConfig, DecodeConfig, tuple, None]


def is_attention(kernel: Kernel) -> bool:
    t = kernel.template
    return kernel.kind == "op" and t is not None and t.op == "node" and t.node is not None and t.node.op is Op.SDPA


def _check(kernel: Kernel) -> tuple[bool, str | None, float | None]:
    """(causal, mask kind: None | "bool" | "add", scale) of an SDPA kernel, or LoweringError."""
    if not is_attention(kernel):
        raise LoweringError(f"kernel {kernel.name} is not an attention (SDPA) kernel")
    node = kernel.template.node  # type: ignore[union-attr]
    a = node.attrs
    if len(kernel.outputs) != 1 or any(v.name is None for v in node.inputs):
        raise LoweringError("attention kernel with an unexpected buffer layout")
    bufs = [kernel.buffer(v.name) for v in node.inputs]  # type: ignore[arg-type]
    if [b.name for b in bufs] != [b.name for b in kernel.inputs]:
        raise LoweringError("attention kernel inputs are not q, k, v[, mask] in order")
    q, k, v, out = bufs[0], bufs[1], bufs[2], kernel.outputs[0]
    if q.dtype not in (DType.F16, DType.BF16, DType.F32) or any(b.dtype is not q.dtype for b in (k, v, out)):
        raise LoweringError(f"attention in {q.dtype}/{k.dtype}/{v.dtype}: the Triton kernel takes f16, bf16 or f32")
    mask = None
    if len(bufs) > 3:
        m = bufs[3]
        if m.dtype is DType.BOOL:
            mask = "bool"
        elif m.dtype in (DType.F16, DType.BF16, DType.F32):
            mask = "add"
        else:
            raise LoweringError(f"attention mask of {m.dtype}: the Triton kernel takes bool or a float")
        if len(m.shape) > len(q.shape):
            raise LoweringError("attention mask of higher rank than q")
        if a.get("is_causal"):
            raise LoweringError("attention with both a mask and is_causal (torch rejects it)")
    scale = a.get("scale")
    if scale is not None and not abs(float(scale)) < float("inf"):
        raise LoweringError(f"attention scale {scale}")
    return bool(a.get("is_causal")), mask, None if scale is None else float(scale)


def _hint(e: object, hints: Mapping[sympy.Symbol, int]) -> int:
    x = sympy.sympify(e)
    x = x.subs({s: hints.get(s, DEFAULT_HINT) for s in x.free_symbols})
    return max(1, int(x)) if x.is_number else DEFAULT_HINT


def attention_problem(kernel: Kernel, size_hints: Mapping[sympy.Symbol, int] | None = None) -> AttentionProblem:
    """The cost model's view of an SDPA kernel (symbolic sizes at their hints)."""
    causal, _, _ = _check(kernel)
    h = dict(size_hints or {})
    q, k, v = kernel.inputs[0], kernel.inputs[1], kernel.inputs[2]
    heads = 1
    for n in q.shape[:-2]:
        heads *= _hint(n, h)
    group = 1
    if len(q.shape) >= 3:
        hq, hk = _hint(q.shape[-3], h), _hint(k.shape[-3], h)
        group = hq // hk if hk and hq % hk == 0 and hk > 1 else 1
    return AttentionProblem(heads, _hint(q.shape[-2], h), _hint(k.shape[-2], h), _hint(q.shape[-1], h),
                            _hint(v.shape[-1], h), q.dtype.itemsize, causal, group,
                            tensor_cores=q.dtype is not DType.F32)


def generate_attention(kernel: Kernel, name: str, config: Config = None, *,
                       size_hints: Mapping[sympy.Symbol, int] | None = None) -> TritonSource:
    """The Triton module of an SDPA kernel per [Note: Triton attention]. ``config``: an
    ``AttentionConfig`` (forward tile), a ``DecodeConfig``, both as a tuple, or None for the
    cost model's choice of each; ``DecodeConfig(splits=...)`` fixes the split count."""
    causal, mask, scale = _check(kernel)
    fwd = next((c for c in _configs(config) if isinstance(c, AttentionConfig)), None)
    dec = next((c for c in _configs(config) if isinstance(c, DecodeConfig)), None)
    if fwd is None or dec is None:
        prob = attention_problem(kernel, size_hints)
        fwd = fwd or choose_attention_config(prob)
        dec = dec or choose_decode_config(prob)
    for n in (fwd.block_m, fwd.block_n, dec.block_n):
        if n < 16 or n & (n - 1):
            raise LoweringError(f"attention tiles are powers of two of at least 16 (tl.dot), not {n}")
    rank = len(kernel.inputs[0].shape)
    dtype = kernel.inputs[0].dtype
    fn = kernel_name(name)
    text = (HEADER + _TILE + _kernels(fn, rank - 2, mask, causal) +
            _entry(fn, rank, mask, causal, scale, dtype, fwd, dec))
    return TritonSource(fn, text, "entry")


def _configs(config: Config) -> tuple:
    if config is None:
        return ()
    if isinstance(config, (AttentionConfig, DecodeConfig)):
        return (config,)
    if isinstance(config, tuple) and all(isinstance(c, (AttentionConfig, DecodeConfig)) for c in config):
        return config
    raise TypeError(f"an attention kernel takes AttentionConfig/DecodeConfig, not {type(config).__name__}")


HEADER = "import math\nimport os\n\nimport torch\nimport triton\nimport triton.language as tl\n\n\n"

# One step of the online softmax over the key blocks [lo, hi) [Note: Triton attention].
# q: [BM, BD] tile; qi: each row's query index (causal); mrow: each row's mask offset, rok: the
# rows that exist (mask loads); K, V, Mk: pointers at this (batch, head)'s first key / mask.
_TILE = '''
@triton.jit
def effc_att_tile(acc, l_i, m_i, q, qi, mrow, rok, K, V, kz, Mk, lo, hi, SK, D, DV, qk_scale, mcs,
                  BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                  EVEN_D: tl.constexpr, EVEN_DV: tl.constexpr, EDGE: tl.constexpr, CAUSAL: tl.constexpr,
                  MASK: tl.constexpr, FMA: tl.constexpr, F32: tl.constexpr, UPCAST: tl.constexpr,
                  TMA: tl.constexpr):
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        n = start_n + offs_n
        if TMA:   # descriptors over [heads, Sk, D]: rows past Sk and columns past D read 0
            k = K.load([kz, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
            v = V.load([kz, start_n, 0]).reshape(BLOCK_N, BLOCK_DV)
        elif EDGE:
            kp = K + n[:, None] * D + offs_d[None, :]
            vp = V + n[:, None] * DV + offs_dv[None, :]
            k = tl.load(kp, mask=(n < SK)[:, None] & (offs_d < D)[None, :], other=0.0)
            v = tl.load(vp, mask=(n < SK)[:, None] & (offs_dv < DV)[None, :], other=0.0)
        else:
            kp = K + n[:, None] * D + offs_d[None, :]
            vp = V + n[:, None] * DV + offs_dv[None, :]
            if EVEN_D:
                k = tl.load(kp)
            else:
                k = tl.load(kp, mask=(offs_d < D)[None, :], other=0.0)
            if EVEN_DV:
                v = tl.load(vp)
            else:
                v = tl.load(vp, mask=(offs_dv < DV)[None, :], other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
        if F32:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        if MASK != 0:
            mp = Mk + mrow[:, None] + n[None, :] * mcs
            if EDGE:
                mv = tl.load(mp, mask=rok[:, None] & (n < SK)[None, :], other=0)
            else:
                mv = tl.load(mp, mask=rok[:, None], other=0)
            if MASK == 1:
                s = tl.where(mv != 0, s * qk_scale, float("-inf"))
            else:
                s = s * qk_scale + mv.to(tl.float32) * 1.4426950408889634
        if EDGE:
            keep = (n < SK)[None, :]
            if CAUSAL:
                keep = keep & (qi[:, None] >= n[None, :])
            if MASK == 0:
                s = s * qk_scale
            s = tl.where(keep, s, float("-inf"))
        if FMA and MASK == 0 and not EDGE:
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            p = tl.math.exp2(s * qk_scale - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
        else:
            if MASK == 0 and not EDGE:
                s = s * qk_scale
            m_new = tl.maximum(m_i, tl.max(s, 1))
            if MASK != 0:   # a row masked so far: exponents against 0, not -inf
                m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
            else:
                m_use = m_new
            p = tl.math.exp2(s - m_use[:, None])
            alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if F32:
            acc = tl.dot(p, v, acc, input_precision="ieee")
        elif UPCAST:
            acc = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), acc)
        else:
            acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    return acc, l_i, m_i

'''


def _unflatten(rank: int, mask: str | None, indent: str = "    ") -> str:
    """Offsets of this program's (batch, head) from the flat index ``z``: per leading dim p
    its size ``N<p>``, the multiplier ``QM<p>`` of q/out/mask indices (the GQA group in the
    decode kernel, else 1), the divisor ``KD<p>`` of k/v indices (the group in the forward
    kernel, else 1) and each buffer's stride."""
    lines = ["rem = z", "q_off = z * 0", "o_off = z * 0", "k_off = z * 0", "v_off = z * 0", "m_off = z * 0"]
    for p in reversed(range(rank)):
        lines += [f"c = rem % N{p}", f"rem = rem // N{p}", f"cq = c * QM{p}", f"ck = c // KD{p}",
                  f"q_off += cq * sq{p}", f"o_off += cq * so{p}", f"k_off += ck * sk{p}", f"v_off += ck * sv{p}"]
        if mask:
            lines.append(f"m_off += cq * sm{p}")
    return "".join(indent + x + "\n" for x in lines)


def _lead_params(rank: int) -> str:
    return "".join(f"N{p}, QM{p}, KD{p}, sq{p}, so{p}, sk{p}, sv{p}, sm{p}, " for p in range(rank))


_CONSTS = ("BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, EVEN_D: tl.constexpr, "
           "EVEN_DV: tl.constexpr, MASK: tl.constexpr, FMA: tl.constexpr, F32: tl.constexpr, "
           "UPCAST: tl.constexpr, SAFE: tl.constexpr")


def _kernels(fn: str, rank: int, mask: str | None, causal: bool) -> str:
    lead = _lead_params(rank)
    tile_args = ("KB, VB, kz, Mk + m_off, {lo}, {hi}, SK, D, DV, qk_scale, mcs, BLOCK_N, BLOCK_D, "
                 "BLOCK_DV, EVEN_D, EVEN_DV, {edge}, CAUSAL, MASK, FMA, F32, UPCAST, {tma}")
    load_q = ("    q = tl.load(Q + q_off + qrow[:, None] + offs_d[None, :], mask=rok[:, None] & (offs_d < D)[None, :],"
              " other=0.0)\n    if UPCAST:\n        q = q.to(tl.float32)\n")
    init = ("    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)\n"
            "    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)\n"
            "    m_i = tl.full([BLOCK_M], float(\"-inf\"), dtype=tl.float32)\n")
    finish = ("    if SAFE:\n        inv = tl.where(l_i > 0, 1.0 / tl.where(l_i > 0, l_i, 1.0), 0.0)\n    else:\n        inv = 1.0 / l_i\n"
              "    out = acc * inv[:, None]\n")
    fwd = (f"@triton.jit\ndef {fn}_fwd(Q, K, V, Mk, O, Z, Z0, SQ, SK, D, DV, qk_scale, mrs, mcs, {lead}KVG, "
           f"BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr, TMA: tl.constexpr, {_CONSTS}):\n"
           "    n_m = tl.cdiv(SQ, BLOCK_M)\n"
           "    pid = tl.program_id(0)\n"
           "    if CAUSAL:   # heaviest tiles first\n        start_m = n_m - 1 - pid\n"
           "    else:\n        start_m = pid\n"
           "    z = Z0 + tl.program_id(1).to(tl.int64)\n" + _unflatten(rank, mask) +
           "    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)\n"
           "    offs_d = tl.arange(0, BLOCK_D)\n    offs_dv = tl.arange(0, BLOCK_DV)\n"
           "    rok = offs_m < SQ\n    qrow = offs_m * D\n    mrow = offs_m * mrs\n"
           "    if TMA:   # descriptors over [heads, S, D] [Note: Triton attention]\n"
           "        KB = K\n        VB = V\n        kz = (Z0 + tl.program_id(1)) // KVG   # descriptor offsets are int32\n"
           "        q = Q.load([Z0 + tl.program_id(1), start_m * BLOCK_M, 0]).reshape(BLOCK_M, BLOCK_D)\n"
           "        if UPCAST:\n            q = q.to(tl.float32)\n"
           "    else:\n        KB = K + k_off\n        VB = V + v_off\n        kz = z\n"
           + "\n".join("    " + x for x in load_q.rstrip("\n").split("\n")) + "\n" + init +
           "    m0 = start_m * BLOCK_M\n"
           "    if CAUSAL:   # key blocks every row sees, then the diagonal's; none past the last row\n"
           "        full = tl.minimum((m0 + 1) // BLOCK_N, SK // BLOCK_N) * BLOCK_N\n"
           "        hi = tl.minimum(SK, m0 + BLOCK_M)\n"
           "    else:\n        full = (SK // BLOCK_N) * BLOCK_N\n        hi = SK\n"
           "    acc, l_i, m_i = effc_att_tile(acc, l_i, m_i, q, offs_m, mrow, rok, "
           + tile_args.format(lo="0", hi="full", edge="False", tma="TMA") + ")\n"
           "    acc, l_i, m_i = effc_att_tile(acc, l_i, m_i, q, offs_m, mrow, rok, "
           + tile_args.format(lo="full", hi="hi", edge="True", tma="TMA") + ")\n" + finish +
           "    tl.store(O + o_off + offs_m[:, None] * DV + offs_dv[None, :], out.to(O.dtype.element_ty),\n"
           "             mask=rok[:, None] & (offs_dv < DV)[None, :])\n\n\n")
    # decode: rows r = (g, i), g the query head within the kv head's group, i the query
    dec = (f"@triton.jit\ndef {fn}_decode(Q, K, V, Mk, O, W, Z, Z0, SQ, SK, D, DV, qk_scale, mrs, mcs, {lead}"
           f"ROWS, qh, oh, mh, CHUNK, SPLITS, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr, {_CONSTS}):\n"
           "    split = tl.program_id(0)\n"
           "    z = Z0 + tl.program_id(1).to(tl.int64)\n" + _unflatten(rank, mask) +
           "    r = tl.arange(0, BLOCK_M)\n    g = r // SQ\n    qi = r - g * SQ\n"
           "    offs_d = tl.arange(0, BLOCK_D)\n    offs_dv = tl.arange(0, BLOCK_DV)\n"
           "    rok = r < ROWS\n    qrow = g * qh + qi * D\n    mrow = g * mh + qi * mrs\n"
           "    KB = K + k_off\n    VB = V + v_off\n    kz = z\n" + load_q + init +
           "    lo = split * CHUNK\n    hi = tl.minimum(SK, lo + CHUNK)\n"
           "    if CAUSAL:\n        hi = tl.minimum(hi, SQ)\n        full = lo\n"
           "    else:\n        full = tl.maximum(lo, lo + ((hi - lo) // BLOCK_N) * BLOCK_N)\n"
           "    acc, l_i, m_i = effc_att_tile(acc, l_i, m_i, q, qi, mrow, rok, "
           + tile_args.format(lo="lo", hi="full", edge="False", tma="False") + ")\n"
           "    acc, l_i, m_i = effc_att_tile(acc, l_i, m_i, q, qi, mrow, rok, "
           + tile_args.format(lo="full", hi="hi", edge="True", tma="False") + ")\n"
           "    if SPLITS == 1:\n" + "\n".join("    " + x for x in finish.rstrip("\n").split("\n")) + "\n"
           "        tl.store(O + o_off + (g * oh + qi * DV)[:, None] + offs_dv[None, :], out.to(O.dtype.element_ty),\n"
           "                 mask=rok[:, None] & (offs_dv < DV)[None, :])\n"
           "    else:   # workspace [Z, SPLITS, ROWS]: m, l; then O [Z, SPLITS, ROWS, DV]\n"
           "        base = (z * SPLITS + split) * ROWS + r\n"
           "        tl.store(W + 2 * base, m_i, mask=rok)\n"
           "        tl.store(W + 2 * base + 1, l_i, mask=rok)\n"
           "        wo = W + 2 * Z * SPLITS * ROWS\n"
           "        tl.store(wo + base[:, None] * DV + offs_dv[None, :], acc, mask=rok[:, None] & (offs_dv < DV)[None, :])\n"
           "\n\n")
    comb = (f"@triton.jit\ndef {fn}_combine(O, W, Z, Z0, SQ, DV, {lead}ROWS, qh, oh, mh, SPLITS, "
            "BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr, SAFE: tl.constexpr):\n"
            "    row = tl.program_id(0)\n"
            "    z = Z0 + tl.program_id(1).to(tl.int64)\n" + _unflatten(rank, None) +
            "    s = tl.arange(0, BLOCK_S)\n    offs_dv = tl.arange(0, BLOCK_DV)\n"
            "    base = (z * SPLITS + s) * ROWS + row\n"
            "    m = tl.load(W + 2 * base, mask=s < SPLITS, other=float(\"-inf\"))\n"
            "    l = tl.load(W + 2 * base + 1, mask=s < SPLITS, other=0.0)\n"
            "    wo = W + 2 * Z * SPLITS * ROWS\n"
            "    acc = tl.load(wo + base[:, None] * DV + offs_dv[None, :], mask=(s < SPLITS)[:, None] & "
            "(offs_dv < DV)[None, :], other=0.0)\n"
            "    mx = tl.max(m, 0)\n    mx = tl.where(mx == float(\"-inf\"), 0.0, mx)\n"
            "    w = tl.math.exp2(m - mx)\n"
            "    lsum = tl.sum(w * l, 0)\n    o = tl.sum(acc * w[:, None], 0)\n"
            "    if SAFE:\n        o = o * tl.where(lsum > 0, 1.0 / tl.where(lsum > 0, lsum, 1.0), 0.0)\n    else:\n        o = o / lsum\n"
            "    g = row // SQ\n    qi = row - g * SQ\n"
            "    tl.store(O + o_off + g * oh + qi * DV + offs_dv, o.to(O.dtype.element_ty), mask=offs_dv < DV)\n\n\n")
    return fwd + dec + comb


def _entry(fn: str, rank: int, mask: str | None, causal: bool, scale: float | None, dtype: DType,
           fwd: AttentionConfig, dec: DecodeConfig) -> str:
    R = rank - 2
    scale_src = repr(scale) if scale is not None else "1.0 / math.sqrt(D)"
    fma = scale is None or scale > 0
    mk = {None: 0, "bool": 1, "add": 2}[mask]
    L = [f"FWD = {fwd.to_json()!r}", f"DEC = {dec.to_json()!r}", "ZMAX = 65535", "",
         "",
         "def _pow2(n):",
         "    return max(16, 1 << max(0, (int(n) - 1).bit_length()))",
         "",
         "",
         "def _sms(t):",
         "    if t.is_cuda:",
         "        return torch.cuda.get_device_properties(t.device).multi_processor_count",
         "    return 132",
         "",
         "",
         "def entry(inputs, outputs, sizes):",
         "    q, k, v = inputs[0], inputs[1], inputs[2]",
         "    o = outputs[0]",
         "    SQ, D, SK, DV = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]",
         "    lead = list(o.shape[:-2])",
         "    Z = math.prod(lead)",
         "    if Z == 0 or SQ == 0 or DV == 0:",
         "        return",
         f"    qk_scale = ({scale_src}) * {LOG2E!r}",
         "    kd = [1] * len(lead)",
         "    ks, vs = [0] * len(lead), [0] * len(lead)",
         "    for p, n in enumerate(lead):",
         "        kn = k.shape[p]",
         "        if kn != 1:",
         "            ks[p], vs[p] = k.stride(p), v.stride(p)",
         "            if kn != n:   # GQA: query heads share kv head h // group",
         "                kd[p] = n // kn"]
    if mask:
        L += ["    m = inputs[3]",
              "    mm = m.expand(*lead, SQ, SK)",
              "    ms, mrs, mcs = [mm.stride(p) for p in range(len(lead))], mm.stride(-2), mm.stride(-1)",
              "    mptr = m.view(torch.uint8) if m.dtype == torch.bool else m"]
    else:
        L += ["    ms, mrs, mcs, mptr = [0] * len(lead), 0, 0, q"]
    L += ["    G = 1   # query heads that share one kv head: decode packs them into rows",
          "    if lead:",
          "        G = lead[-1] // k.shape[len(lead) - 1]",
          f"        G = G if G * SQ <= {DECODE_ROWS} else 1",
          "    consts = dict(BLOCK_D=_pow2(D), BLOCK_DV=_pow2(DV), EVEN_D=_pow2(D) == D, EVEN_DV=_pow2(DV) == DV,",
          f"                  MASK={mk}, FMA={fma}, F32={dtype is DType.F32},",
          f"                  UPCAST={dtype is DType.BF16} and os.environ.get('TRITON_INTERPRET') == '1',",
          f"                  SAFE={mask is not None}, CAUSAL={causal})",
          f"    if SQ <= {DECODE_SQ}:",
          "        _decode(q, k, v, mptr, o, lead, G, kd, ks, vs, ms, SQ, SK, D, DV, qk_scale, mrs, mcs, consts)",
          "        return",
          "    lead_args = []",
          "    for p, n in enumerate(lead):",
          "        lead_args += [n, 1, kd[p], q.stride(p), o.stride(p), ks[p], vs[p], ms[p]]",
          "    tma = _descriptors(q, k, v, lead, Z, SQ, SK, D, DV, consts) if FWD['tma'] else None",
          "    qa, ka, va, kvg = tma or (q, k, v, 1)",
          "    for z0 in range(0, Z, ZMAX):   # grid axis 1 holds at most 65535",
          "        grid = (triton.cdiv(SQ, FWD['block_m']), min(ZMAX, Z - z0))",
          f"        {fn}_fwd[grid](qa, ka, va, mptr, o, Z, z0, SQ, SK, D, DV, qk_scale, mrs, mcs, *lead_args, kvg,",
          "            BLOCK_M=FWD['block_m'], BLOCK_N=FWD['block_n'], num_warps=FWD['num_warps'],",
          "            num_stages=FWD['num_stages'], TMA=tma is not None, **consts)",
          "",
          "",
          "def _descriptors(q, k, v, lead, Z, SQ, SK, D, DV, consts):",
          "    \"\"\"Tensor descriptors of q, k, v as [heads, S, D] and the GQA group, or None where",
          "    they do not apply (k, v broadcast over a dim but the heads', rows not 16-byte aligned,",
          "    head dims not a power of two).\"\"\"",
          "    try:",
          "        from triton.tools.tensor_descriptor import TensorDescriptor",
          "    except ImportError:",
          "        return None",
          "    e = q.element_size()",
          "    if any(x * e % 16 for x in (D, DV)) or any(t.data_ptr() % 16 for t in (q, k, v)):",
          "        return None",
          "    if consts['BLOCK_D'] != D or consts['BLOCK_DV'] != DV or D > 256 or DV > 256:",
          "        return None   # padded head dims: the pointer kernel's masked loads",
          "    for p, n in enumerate(lead):",
          "        kn = k.shape[p]",
          "        if kn != n and (p != len(lead) - 1 or n % kn):",
          "            return None",
          "    zk = Z // (lead[-1] // k.shape[len(lead) - 1]) if lead else 1",
          "    bm, bn = FWD['block_m'], FWD['block_n']",
          "    return (TensorDescriptor(q, [Z, SQ, D], [SQ * D, D, 1], [1, bm, consts['BLOCK_D']]),",
          "            TensorDescriptor(k, [zk, SK, D], [SK * D, D, 1], [1, bn, consts['BLOCK_D']]),",
          "            TensorDescriptor(v, [zk, SK, DV], [SK * DV, DV, 1], [1, bn, consts['BLOCK_DV']]),",
          "            Z // zk)",
          "",
          "",
          "def _decode(q, k, v, mptr, o, lead, G, kd, ks, vs, ms, SQ, SK, D, DV, qk_scale, mrs, mcs, consts):",
          "    rows = G * SQ",
          "    hp = len(lead) - 1   # the head dim, where GQA groups are",
          "    lead_args, Zkv = [], 1",
          "    for p, n in enumerate(lead):",
          "        qm = G if p == hp else 1",
          "        Zkv *= n // qm",
          "        lead_args += [n // qm, qm, 1 if qm > 1 else kd[p], q.stride(p), o.stride(p), ks[p], vs[p], ms[p]]",
          "    qh = q.stride(hp) if hp >= 0 else 0",
          "    oh = o.stride(hp) if hp >= 0 else 0",
          "    mh = ms[hp] if hp >= 0 else 0",
          "    bn = DEC['block_n']",
          "    splits = DEC['splits']",
          "    if not splits:",
          f"        want = -(-{DECODE_PROGRAMS_PER_SM} * _sms(q) // Zkv)",
          f"        splits = max(1, min(want, -(-SK // (bn * {MIN_BLOCKS_PER_SPLIT})), {MAX_SPLITS}))",
          "    chunk = -(-max(1, -(-SK // splits)) // bn) * bn",
          "    splits = max(1, -(-SK // chunk))",
          "    w = q if splits == 1 else torch.empty(Zkv * splits * rows * (DV + 2), dtype=torch.float32, device=q.device)",
          "    for z0 in range(0, Zkv, ZMAX):",
          "        nz = min(ZMAX, Zkv - z0)",
          f"        {fn}_decode[(splits, nz)](q, k, v, mptr, o, w, Zkv, z0, SQ, SK, D, DV, qk_scale, mrs, mcs,",
          "            *lead_args, rows, qh, oh, mh, chunk, splits, BLOCK_M=_pow2(rows), BLOCK_N=bn,",
          "            num_warps=DEC['num_warps'], num_stages=DEC['num_stages'], **consts)",
          "        if splits > 1:",
          f"            {fn}_combine[(rows, nz)](o, w, Zkv, z0, SQ, DV, *lead_args, rows, qh, oh, mh, splits,",
          "                BLOCK_S=max(2, 1 << (splits - 1).bit_length()), BLOCK_DV=consts['BLOCK_DV'],",
          "                SAFE=consts['SAFE'], num_warps=4)"]
    return "\n".join(L) + "\n"
