"""Tile configurations of the Triton attention kernels (codegen/triton_attention.py), chosen by
a roofline per candidate, as [Note: Triton GEMM configs] does for matmuls.

    choose_attention_config(AttentionProblem(heads=128, sq=4096, sk=4096, d=128, dv=128,
                                             itemsize=2, causal=False))
        -> AttentionConfig(block_m=128, block_n=128, num_warps=8, num_stages=2, tma=False)
    choose_decode_config(AttentionProblem(heads=256, sq=1, sk=8192, d=128, dv=128, itemsize=2))
        -> DecodeConfig(block_n=64, num_warps=4, num_stages=3, splits=0)   # splits: at launch

[Note: Triton attention configs]
Forward (FlashAttention-2's partitioning): one program per ``BLOCK_M`` query rows of one
head walks the keys in ``BLOCK_N`` steps. A candidate is
- feasible when its shared memory (the Q tile, ``num_stages`` K and V tiles in flight and a
  score-sized tile for layout conversions) fits the SM, and its registers (the fp32 output accumulator ``BM x Dv``, the fp32 score
  tile ``BM x BN`` and the Q operand) stay under ~192 per thread of ``num_warps * 32``;
- priced as waves of programs (``heads * ceil(Sq/BM)``, causal ones weighted by the keys they
  actually visit: tile skipping makes the grid a triangle) over the SMs, each program doing
  ``2 * BM * BN * (D + Dv)`` FLOP per visited key block at the SM's share of the tensor-core
  peak scaled by an efficiency that grows with the tile (Hopper's warpgroup MMAs want 64-row
  slabs per 4 warps and a wide N; the softmax between the two dots costs relatively more on
  narrow tiles), and streaming its K/V tiles from L2; plus a floor of every operand read once
  and the output written once at device-memory bandwidth.
Decode (Sq, times the GQA group, fits one tile of rows): the keys of one (batch, kv head) are
split among ``splits`` programs (FlashDecoding): each walks its share with the online softmax
and writes an unnormalised partial output with its row max and sum; a second small kernel
combines them. Decode is bound by reading K and V once; the split count is the smallest that
gives about ``DECODE_PROGRAMS_PER_SM`` programs per SM (latency hiding needs several loads in
flight per SM) while each split keeps at least ``MIN_BLOCKS_PER_SPLIT`` key blocks (fewer make
the fixed per-program cost and the combine's traffic matter). The ranking is a guess to be
calibrated: the GPU benchmark (benchmarks/gpu_attention.py) times the top few candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .triton_gemm_configs import gpu

DECODE_PROGRAMS_PER_SM = 8   # H200, 2026-12-02: 3 splits of an 8k cache (~6 per SM) reached 68-72% of
#                              the copy bandwidth, 8 splits 83% (gpu_attention-2026-12-02-h200.md)
MIN_BLOCKS_PER_SPLIT = 4
MAX_SPLITS = 64
PROGRAM_LATENCY = 2.0e-6   # seconds per program: Q load, first K/V tiles in flight, epilogue


@dataclass(frozen=True)
class AttentionProblem:
    heads: int          # batch x query heads (the output's leading dims, flattened)
    sq: int
    sk: int
    d: int
    dv: int
    itemsize: int       # bytes per q/k/v element
    causal: bool = False
    group: int = 1      # query heads per kv head (GQA), 1 without
    tensor_cores: bool = True   # f16/bf16; False: float32 dots in IEEE precision


@dataclass(frozen=True)
class AttentionConfig:
    """The forward kernel's tile: ``block_m`` query rows per program, ``block_n`` keys per step."""
    block_m: int = 128
    block_n: int = 64
    num_warps: int = 8
    num_stages: int = 3
    tma: bool = False   # Q, K, V tiles through tensor descriptors (Hopper's copy engine) where they apply

    def to_json(self) -> dict:
        return {"block_m": self.block_m, "block_n": self.block_n, "num_warps": self.num_warps,
                "num_stages": self.num_stages, "tma": self.tma}


@dataclass(frozen=True)
class DecodeConfig:
    """The split-KV decode kernel: ``block_n`` keys per step, ``splits`` programs per (batch,
    kv head); 0 splits: chosen at launch from the sizes (``decode_splits``)."""
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    splits: int = 0

    def to_json(self) -> dict:
        return {"block_n": self.block_n, "num_warps": self.num_warps, "num_stages": self.num_stages,
                "splits": self.splits}


def pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


# (BM, BN, warps, stages): Triton's fused-attention tutorial space, big tiles first.
FORWARD_CONFIGS = tuple(AttentionConfig(*r) for r in (
    (128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 2), (128, 64, 8, 4),
    (128, 32, 4, 3), (64, 64, 4, 3), (64, 128, 4, 3), (64, 32, 4, 3), (64, 64, 4, 2),
    (32, 32, 4, 2), (16, 32, 2, 2), (16, 16, 2, 2),
))
# Where the bandwidth model ties (enough loads in flight either way), the order decides: on the
# H200 (gpu_attention-2026-12-02-h200.md, second run) the 8-warp, 4-stage tile with the automatic
# split reached 83% / 96% / 103% of the copy bandwidth at 8k / 16k / 32k keys and 83% with GQA
# 32/8, the 4-warp, 3-stage one 79% / 92% / 96% / 81%.
DECODE_CONFIGS = tuple(DecodeConfig(*r) for r in (
    (64, 8, 4), (64, 4, 3), (128, 4, 3), (128, 8, 3), (32, 4, 4), (256, 8, 2), (16, 2, 2),
))


def _efficiency(c: AttentionConfig, p: AttentionProblem) -> float:
    """Share of the matrix peak the two dots of a tile keep busy."""
    if not p.tensor_cores:
        return min(1.0, 0.5 + 0.5 * c.block_m * c.block_n / (64 * 64 * 4))
    e = 0.55 + 0.1 * math.log2(max(c.block_m * c.block_n, 256) / (64 * 64))
    if c.num_warps < 8 and c.block_m >= 128 and pow2(p.dv) >= 128:
        e -= 0.05     # one warpgroup holds a 128 x Dv accumulator: fewer MMAs in flight
    if c.block_m > 64 * (c.num_warps // 4 or 1) * 2:
        e -= 0.1      # more than two 64-row slabs per warpgroup
    if c.num_stages < 3:
        e -= 0.03     # the next K/V tiles arrive while the softmax runs only with 3+ stages
    return max(0.2, min(0.85, e))


def reject_reason(c: AttentionConfig, p: AttentionProblem, target_name: str = "sm90") -> str | None:
    _, shape = gpu(target_name)
    d, dv = max(16, pow2(p.d)), max(16, pow2(p.dv))
    item = p.itemsize
    # Q, the K/V tiles in flight, and room for one score-sized layout conversion
    smem = (c.block_m * d + c.num_stages * c.block_n * (d + dv) + c.block_m * c.block_n) * item
    if smem > shape.smem:
        return f"Q, {c.num_stages} K/V tiles and a score tile need {smem} bytes of shared memory, the SM has {shape.smem}"
    regs = (c.block_m * dv + c.block_m * c.block_n + c.block_m * d * item // 4) // (c.num_warps * 32)
    if regs > 192:
        return f"accumulator, scores and Q need {regs} registers per thread"
    if p.sq < c.block_m // 2 and c.block_m > 16:
        return f"{c.block_m} rows per program for {p.sq} queries"
    return None


def predict_attention_config(c: AttentionConfig, p: AttentionProblem, target_name: str = "sm90") -> float:
    """Predicted seconds of the forward kernel with ``c`` on ``p`` [Note: Triton attention configs]."""
    target, shape = gpu(target_name)
    peak = target.half_flops if p.tensor_cores and target.half_flops else target.peak_flops
    d, dv = max(16, pow2(p.d)), max(16, pow2(p.dv))
    mblocks = math.ceil(p.sq / c.block_m)
    nblocks = math.ceil(p.sk / c.block_n)
    if p.causal:   # query block i visits the key blocks up to its last row (top-left diagonal)
        visits = sum(min(nblocks, math.ceil(min(p.sk, (i + 1) * c.block_m) / c.block_n)) for i in range(mblocks))
    else:
        visits = mblocks * nblocks
    programs = p.heads * mblocks
    per_block = max(2.0 * c.block_m * c.block_n * (d + dv) / (peak / shape.sms * _efficiency(c, p)),
                    c.block_n * (d + dv) * p.itemsize / (shape.l2_bandwidth / shape.sms))
    # heaviest programs run first (causal), so the waves are about even: total work / SMs
    resident = max(1, min(shape.smem // max(1, (c.block_m * d + c.num_stages * c.block_n * (d + dv)) * p.itemsize),
                          16 // c.num_warps))
    work = p.heads * visits * per_block / shape.sms
    tail = per_block * (visits / max(1, mblocks))          # the last wave's imbalance: one program
    t = work + tail + math.ceil(programs / (shape.sms * resident)) * PROGRAM_LATENCY
    floor = p.heads * (p.sq * p.d + p.sq * p.dv) * p.itemsize + p.heads // max(1, p.group) * p.sk * (p.d + p.dv) * p.itemsize
    return max(t, floor / target.bandwidth) + target.overhead


def rank_attention_configs(p: AttentionProblem, target_name: str = "sm90") -> list[tuple[AttentionConfig, float | None, str]]:
    """Every forward candidate, cheapest first: (config, predicted seconds or None, why rejected)."""
    out: list[tuple[AttentionConfig, float | None, str]] = []
    for c in FORWARD_CONFIGS:
        why = reject_reason(c, p, target_name)
        out.append((c, None if why else predict_attention_config(c, p, target_name), why or ""))
    order = {c: i for i, c in enumerate(FORWARD_CONFIGS)}
    return sorted(out, key=lambda r: (r[1] is None, r[1] or 0.0, order[r[0]]))


def choose_attention_config(p: AttentionProblem, target_name: str = "sm90") -> AttentionConfig:
    ranked = rank_attention_configs(p, target_name)
    best = ranked[0]
    if best[1] is None:   # nothing fits (a huge head dim): the smallest tile, and say so in the report
        return FORWARD_CONFIGS[-1]
    return best[0]


def decode_splits(kv_heads: int, sk: int, block_n: int, sms: int = 132) -> int:
    """Key splits per (batch, kv head) for the decode kernel [Note: Triton attention configs]."""
    want = math.ceil(DECODE_PROGRAMS_PER_SM * sms / max(1, kv_heads))
    most = max(1, math.ceil(sk / (block_n * MIN_BLOCKS_PER_SPLIT)))
    return max(1, min(want, most, MAX_SPLITS))


def predict_decode_config(c: DecodeConfig, p: AttentionProblem, target_name: str = "sm90") -> float:
    """Predicted seconds of the split-KV decode kernel and its combine with ``c`` on ``p``."""
    target, shape = gpu(target_name)
    kv_heads = max(1, p.heads // max(1, p.group))
    splits = c.splits or decode_splits(kv_heads, p.sk, c.block_n, shape.sms)
    rows = max(16, pow2(p.sq * p.group))
    kv_bytes = kv_heads * p.sk * (p.d + p.dv) * p.itemsize
    partial = kv_heads * splits * rows * (p.dv + 2) * 4 * 2 if splits > 1 else 0
    programs = kv_heads * splits
    # bandwidth needs loads in flight: a program keeps num_stages tiles of block_n keys in flight
    inflight = min(1.0, programs * c.num_stages * c.block_n * (p.d + p.dv) * p.itemsize / (shape.sms * 96 * 1024))
    per_sm = math.ceil(programs / shape.sms) / (programs / shape.sms)   # wave quantisation
    t = (kv_bytes + partial) / (target.bandwidth * max(0.1, inflight)) * per_sm
    t += math.ceil(programs / (shape.sms * 4)) * PROGRAM_LATENCY
    return t + target.overhead * (2 if splits > 1 else 1)


def rank_decode_configs(p: AttentionProblem, target_name: str = "sm90") -> list[tuple[DecodeConfig, float | None, str]]:
    _, shape = gpu(target_name)
    out: list[tuple[DecodeConfig, float | None, str]] = []
    d, dv = max(16, pow2(p.d)), max(16, pow2(p.dv))
    for c in DECODE_CONFIGS:
        smem = c.num_stages * c.block_n * (d + dv) * p.itemsize
        why = f"{c.num_stages} K/V tiles need {smem} bytes of shared memory" if smem > shape.smem else ""
        out.append((c, None if why else predict_decode_config(c, p, target_name), why))
    order = {c: i for i, c in enumerate(DECODE_CONFIGS)}
    return sorted(out, key=lambda r: (r[1] is None, r[1] or 0.0, order[r[0]]))


def choose_decode_config(p: AttentionProblem, target_name: str = "sm90") -> DecodeConfig:
    best = rank_decode_configs(p, target_name)[0]
    return best[0] if best[1] is not None else DECODE_CONFIGS[-1]
