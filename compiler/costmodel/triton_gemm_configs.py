"""Tile configurations of the Triton matmul and convolution templates, chosen by a roofline
per candidate.

    choose_gemm_config(GemmProblem(batch=1, m=4096, n=4096, k=4096, itemsize=2))
        -> GemmConfig(block_m=128, block_n=256, block_k=64, group_m=8, num_warps=8, num_stages=3)

[Note: Triton GEMM configs]
A GEMM template (codegen/triton_gemm.py) runs one program per ``BLOCK_M x BLOCK_N`` output
tile of each batch point, walking K in ``BLOCK_K`` steps with ``num_stages`` loads in flight.
Instead of autotuning (minutes of compilation per shape, and no GPU where we compile), each
candidate of a small fixed set is priced with the roofline of its own work:

- feasibility: the pipelined operand tiles (``num_stages * (BM*BK + BK*BN) * itemsize``) must
  fit one SM's shared memory, and the fp32 accumulator must fit the registers of the program's
  threads (at most 128 per thread, leaving room for addresses and operands);
- wave quantisation: ``tiles = batch * ceil(M/BM) * ceil(N/BN)`` spread over the target's SMs,
  so an SM runs ``ceil(tiles / SMs)`` tiles one after another; a tile grid of 133 tiles on 132
  SMs costs two full tile times, which is what punishes tiles too large for the problem;
- per tile: the larger of its multiply-adds at the SM's share of the matrix-unit peak (scaled
  by ``mma_efficiency``: small tiles and few warps keep Hopper's tensor cores partly idle) and
  the bytes it streams from L2 into shared memory at the SM's share of the L2 bandwidth; masked
  waste is counted, since a tile computes its full ``BM x BN x ceil(K/BK)*BK`` whatever the
  edges; plus a fixed latency per tile (pipeline fill, epilogue) that resident programs on the
  same SM overlap;
- a floor: every operand read once and the output written once at device-memory bandwidth.

The cheapest candidate wins; ties keep the candidate listed first (the larger tiles). The
numbers are the uncalibrated ``GPU_DEFAULTS`` ceilings with per-architecture SM counts and
shared-memory sizes from the data sheets; ``rank_gemm_configs`` returns every candidate with
its predicted seconds, or the reason it was rejected, for the explain report. The templates'
``rank_template_configs`` (codegen/triton_gemm.py, triton_conv.py) hand the feasible ones,
fastest first, to whatever measures the top few on a real GPU (the autotuner,
benchmarks/gpu_kernels.py). The direct convolution kernel's block sizes are priced the same
way (``predict_direct_config``): FMA work including masked lanes against device bandwidth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .roofline import GPU_DEFAULTS, Target


@dataclass(frozen=True)
class GemmConfig:
    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3


@dataclass(frozen=True)
class DirectConfig:
    """The direct (non-GEMM) convolution kernel: ``block`` output points per program."""
    block: int = 256
    num_warps: int = 4


@dataclass(frozen=True)
class GpuShape:
    sms: int
    smem: int            # bytes of shared memory one program may use
    l2_bandwidth: float  # bytes per second, all SMs together


# H100/H200 SXM: 132 SMs, 227 KiB per block; A100: 108 SMs, 163 KiB; L4 (sm89): 58 SMs, 99 KiB.
# L2 bandwidths are about 2x device memory (what large-tile GEMMs sustain).
GPU_SHAPES = {
    "sm90": GpuShape(132, 227 * 1024, 7.0e12),
    "sm80": GpuShape(108, 163 * 1024, 4.0e12),
    "sm89": GpuShape(58, 99 * 1024, 1.5e12),
}

TILE_LATENCY = 1.0e-6  # seconds per tile: first loads in flight, epilogue stores


@dataclass(frozen=True)
class GemmProblem:
    batch: int
    m: int
    n: int
    k: int
    itemsize: int          # bytes per operand element
    out_itemsize: int = 4
    tensor_cores: bool = True   # f16/bf16, or f32 with tf32 allowed; False: f32 ieee, f64


def _c(*rows: tuple[int, int, int, int, int, int]) -> tuple[GemmConfig, ...]:
    return tuple(GemmConfig(*r) for r in rows)


# (BM, BN, BK, GROUP_M, warps, stages): the shapes Triton's tutorial and TorchInductor's mm
# configurations reach cuBLAS with on Hopper and Ampere, plus skinny ones for small M or N.
TENSOR_CORE_CONFIGS = _c(
    (128, 256, 64, 8, 8, 3), (256, 128, 64, 8, 8, 3), (128, 128, 64, 8, 8, 3), (128, 128, 64, 8, 4, 4),
    (128, 128, 32, 8, 4, 4), (128, 64, 64, 8, 4, 4), (64, 128, 64, 8, 4, 4), (64, 64, 64, 8, 4, 4),
    (64, 32, 64, 8, 4, 4), (32, 64, 64, 8, 4, 4), (32, 32, 64, 8, 4, 3), (16, 64, 128, 8, 4, 3),
    (64, 16, 128, 8, 4, 3), (16, 32, 64, 8, 2, 3), (32, 16, 64, 8, 2, 3), (16, 16, 64, 8, 2, 3),
)
# f32 without tf32 and f64 run tl.dot on FMA units: smaller K steps, fewer stages.
FMA_CONFIGS = _c(
    (128, 128, 32, 8, 8, 3), (128, 64, 32, 8, 4, 3), (64, 128, 32, 8, 4, 3), (64, 64, 32, 8, 4, 3),
    (64, 32, 32, 8, 4, 3), (32, 64, 32, 8, 4, 3), (32, 32, 32, 8, 4, 2), (16, 64, 32, 8, 4, 2),
    (64, 16, 32, 8, 4, 2), (16, 16, 32, 8, 2, 2),
)

# float64 tiles are an outer product in registers [Note: float64 GEMM tiles]: BM x BN x BK small.
FLOAT64_CONFIGS = _c((32, 16, 16, 8, 4, 2), (16, 32, 16, 8, 4, 2), (16, 16, 16, 8, 4, 2))


def gpu(target_name: str = "sm90") -> tuple[Target, GpuShape]:
    return GPU_DEFAULTS[target_name], GPU_SHAPES[target_name]


def mma_efficiency(c: GemmConfig, tensor_cores: bool) -> float:
    """Share of the SM's matrix peak a tile keeps busy: Hopper's warpgroup MMA wants 64-row
    slabs per 4 warps and wide N; FMA dots lose less to shape, more to register pressure."""
    area = c.block_m * c.block_n
    if not tensor_cores:
        return min(1.0, 0.5 + 0.5 * area / (64 * 64 * 4))
    e = 0.6 + 0.1 * math.log2(max(area, 256) / (64 * 64))  # 64x64: 0.6, 128x128: 0.8, 128x256: 0.9
    if c.num_warps < 8 and area > 128 * 64:
        e -= 0.05   # one warpgroup per 128x128 tile serialises its MMAs
    return max(0.2, min(0.95, e))


def reject_reason(c: GemmConfig, p: GemmProblem, shape: GpuShape) -> str | None:
    # a tile at least twice the matrix computes padding in half its MMAs (a convolution with 64
    # output channels took 128-row tiles: the time model saw it L2-bound either way)
    for side, size, block in (("rows", p.m, c.block_m), ("columns", p.n, c.block_n)):
        if 2 * size <= block and block > 16:
            return f"{block} {side} per tile for {size}: half of each tile would be padding"
    smem = c.num_stages * (c.block_m * c.block_k + c.block_k * c.block_n) * p.itemsize
    if smem > shape.smem:
        return f"operand tiles need {smem} bytes of shared memory, the SM has {shape.smem}"
    acc_regs = c.block_m * c.block_n * max(p.out_itemsize, 4) // 4 // (c.num_warps * 32)
    if acc_regs > 128:
        return f"the accumulator needs {acc_regs} registers per thread"
    return None


def predict_gemm_config(c: GemmConfig, p: GemmProblem, target_name: str = "sm90") -> float:
    """Predicted seconds of the template with ``c`` on ``p`` [Note: Triton GEMM configs]."""
    target, shape = gpu(target_name)
    peak = target.half_flops if p.tensor_cores and target.half_flops else target.peak_flops
    if p.itemsize == 8:
        peak = target.peak_flops / 2
    tiles = p.batch * math.ceil(p.m / c.block_m) * math.ceil(p.n / c.block_n)
    per_sm = math.ceil(tiles / shape.sms)
    kpad = math.ceil(max(p.k, 1) / c.block_k) * c.block_k
    flops = 2.0 * c.block_m * c.block_n * kpad
    streamed = (c.block_m + c.block_n) * kpad * p.itemsize + c.block_m * c.block_n * p.out_itemsize
    t_tile = max(flops / (peak / shape.sms * mma_efficiency(c, p.tensor_cores)),
                 streamed / (shape.l2_bandwidth / shape.sms))
    resident = max(1, min(shape.smem // max(1, c.num_stages * (c.block_m + c.block_n) * c.block_k * p.itemsize),
                          64 // c.num_warps, max(1, math.ceil(tiles / shape.sms))))
    t = per_sm * (t_tile + TILE_LATENCY / resident)
    floor = (p.batch * (p.m * p.k + p.k * p.n) * p.itemsize + p.batch * p.m * p.n * p.out_itemsize) / target.bandwidth
    return max(t, floor) + target.overhead


def candidates(p: GemmProblem) -> tuple[GemmConfig, ...]:
    if p.itemsize == 8:
        return FLOAT64_CONFIGS
    return TENSOR_CORE_CONFIGS if p.tensor_cores else FMA_CONFIGS


def rank_gemm_configs(p: GemmProblem, target_name: str = "sm90") -> list[tuple[GemmConfig, float | None, str]]:
    """Every candidate, cheapest first: (config, predicted seconds or None, why rejected)."""
    _, shape = gpu(target_name)
    out: list[tuple[GemmConfig, float | None, str]] = []
    for c in candidates(p):
        why = reject_reason(c, p, shape)
        out.append((c, None if why else predict_gemm_config(c, p, target_name), why or ""))
    order = {c: i for i, c in enumerate(candidates(p))}
    return sorted(out, key=lambda r: (r[1] is None, r[1] or 0.0, order[r[0]]))


def choose_gemm_config(p: GemmProblem, target_name: str = "sm90") -> GemmConfig:
    best = rank_gemm_configs(p, target_name)[0]
    if best[1] is None:
        raise ValueError(f"no Triton GEMM configuration fits {p}: {best[2]}")
    return best[0]


DIRECT_BLOCKS = (128, 256, 512, 1024)


def predict_direct_config(c: DirectConfig, outer: int, inner: int, k: int, itemsize: int,
                          target_name: str = "sm90") -> float:
    """Predicted seconds of the direct convolution kernel (codegen/triton_conv.py) with ``c``:
    ``outer * ceil(inner / block)`` programs, each ``block`` lanes of ``k`` multiply-adds on
    the FMA units, masked lanes included; the input and weight read about once (the window's
    overlap hits L1/L2) and the output written once at device bandwidth; a fixed latency per
    wave of programs (``2048 // (32 * warps)`` resident per SM at most)."""
    target, shape = gpu(target_name)
    programs = outer * math.ceil(inner / c.block)
    flops = 2.0 * programs * c.block * k
    moved = (outer * inner * (1 + 1) + outer * k) * itemsize
    resident = max(1, 2048 // (32 * c.num_warps))
    waves = math.ceil(programs / (shape.sms * resident))
    return max(flops / target.peak_flops, moved / target.bandwidth) + waves * TILE_LATENCY + target.overhead


def rank_direct_configs(outer: int, inner: int, k: int, itemsize: int = 4,
                        target_name: str = "sm90") -> list[tuple[float, DirectConfig]]:
    """Direct-kernel configurations, fastest first; ties keep the one ``choose_direct_config``
    picks by its rule first, then smaller blocks."""
    first = choose_direct_config(inner)
    cands = [first] + [DirectConfig(b, 4 if b >= 256 else 2) for b in DIRECT_BLOCKS if b != first.block]
    priced = [(predict_direct_config(c, outer, inner, k, itemsize, target_name), i, c) for i, c in enumerate(cands)]
    return [(t, c) for t, _, c in sorted(priced, key=lambda x: (x[0], x[1]))]


def choose_direct_config(points_per_row: int) -> DirectConfig:
    """Enough output points per program to keep 4 warps busy (a power of two, 128 to 1024),
    no more than one row of the inner axes needs: masked lanes are wasted lanes."""
    block = 128
    while block < 1024 and block < points_per_row:
        block *= 2
    return DirectConfig(block, 4 if block >= 256 else 2)
