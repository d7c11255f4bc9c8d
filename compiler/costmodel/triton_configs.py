"""Launch configurations of generated Triton kernels: a small candidate set, each priced by the
roofline refined with what a GPU does to a block program.

[Note: Triton config model]
A point-wise or reduction kernel is memory bound on any GPU we target, so the model prices
how well a config keeps the memory system busy, from the same features as ``predict_kernel``:
- Occupancy: programs resident per SM are bounded by warps (64 per SM), blocks (32) and
  registers (64K, estimated from the elements a thread holds per live value); a config that
  would need more registers than a thread gets spills and is priced at a quarter speed.
- Latency hiding (Little's law): the bytes in flight, resident programs times the bytes each
  loads per step, must cover bandwidth x DRAM latency, else bandwidth falls in proportion.
- Wave quantisation: ``programs / (waves * slots)`` of the machine does work in the last wave.
- Masked waste: lanes past the domain or past R in the last block issue instructions and
  move no bytes; they cost compute time.
- Vector width: a thread with fewer than 16 contiguous bytes per load issues more memory
  instructions per byte (a mild penalty); looped reductions re-read their loop inputs once
  per extra loop (from L2, priced at half the DRAM cost) and pay a small cost per step.
The persistent form (one tile per row) is offered when R fits ``PERSISTENT_MAX`` elements.
With ``autotune`` the top few are measured instead (backends/triton/autotune.py).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import sympy

from effc.codegen.triton_abi import TritonConfig
from effc.ir.kernel import Kernel, Load, Loop

from .kernel_cost import kernel_features
from .roofline import GPU_DEFAULTS, Target

SMS = {"sm90": 132, "sm80": 108, "sm89": 58}   # H100/H200, A100, L4
MAX_WARPS, MAX_BLOCKS, REGS = 64, 32, 65536
LATENCY = 700e-9            # seconds from a load's issue to its data, DRAM
PERSISTENT_MAX = 4096       # reduce points held in one tile
TILE_MAX = 8192             # elements of one persistent tile (xblock * rblock)
STEP_COST = 0.15e-6         # seconds per looped step per program wave
DEFAULT_HINT = 64


def _pow2(n: int) -> int:
    return 1 << max(0, (max(1, n) - 1).bit_length())


def _sizes(kernel: Kernel, env: Mapping[Any, int]) -> dict[sympy.Symbol, int]:
    """``env`` with every size symbol of ``kernel`` bound (DEFAULT_HINT where unbound)."""
    syms: set[sympy.Symbol] = set()
    for a in kernel.domain + kernel.reduce:
        syms |= sympy.sympify(a.size).free_symbols
    for b in kernel.buffers:
        for d in b.shape:
            syms |= sympy.sympify(d).free_symbols
    out = {s: int(env.get(s, env.get(str(s), DEFAULT_HINT))) for s in syms}
    return out


def candidates(kernel: Kernel, env: Mapping[Any, int]) -> list[TritonConfig]:
    f = kernel_features(kernel, _sizes(kernel, env))
    x, r = f["domain_size"], f["reduce_size"]
    if kernel.kind != "reduction":
        return [TritonConfig(b, 1, w) for b in (256, 512, 1024, 2048, 4096) for w in (2, 4, 8)
                if 1 <= b // (32 * w) <= 16]
    out = []
    xmax = _pow2(x)
    if _pow2(r) <= PERSISTENT_MAX:
        rb = _pow2(r)
        for xb in (1, 2, 4, 8, 16, 32, 64):
            if xb > xmax or xb * rb > TILE_MAX:
                continue
            out += [TritonConfig(xb, rb, w) for w in (1, 2, 4, 8, 16) if 32 * w <= max(32, xb * rb)
                    and xb * rb // (32 * w) <= 64]
    for rb in (128, 512, 2048):
        if rb >= _pow2(r):
            continue
        for xb in (1, 4, 8):
            if xb <= xmax and xb * rb <= 4096:
                out += [TritonConfig(xb, rb, w, 1, looped=True) for w in (4, 8)]
    if not out:   # a tiny looped config: always valid
        out.append(TritonConfig(1, min(_pow2(r), 1024), 4, 1, looped=True))
    return out


def _sms(target: Target) -> int:
    return next((n for k, n in SMS.items() if target.name.startswith(k)), 108)


def predict_config(kernel: Kernel, config: TritonConfig, env: Mapping[Any, int],
                   target: Target | None = None) -> float:
    """Predicted seconds of one launch of ``kernel`` under ``config``; [Note: Triton config model]."""
    target = target or GPU_DEFAULTS["sm90"]
    f = kernel_features(kernel, _sizes(kernel, env))
    x, r = max(1, f["domain_size"]), max(1, f["reduce_size"])
    item = max(1, f["itemsize"])
    c = config
    reduction = kernel.kind == "reduction"
    rb = c.rblock if reduction else 1
    tile = c.xblock * rb
    programs = math.ceil(x / c.xblock)
    threads = 32 * c.num_warps
    per_thread = max(1, tile // threads)
    loads = max(1, f["n_loads"])
    live = loads + 2 if not c.looped else 3
    regs = 24 + per_thread * live * max(1, item // 4)
    spill = 4.0 if regs > 255 else 1.0
    resident = max(1, min(MAX_BLOCKS, MAX_WARPS // c.num_warps, REGS // (min(regs, 255) * threads)))
    slots = _sms(target) * resident
    waves = math.ceil(programs / slots)
    util = programs / (waves * slots) if programs >= slots else 1.0
    inflight = min(programs, slots) * tile * item * loads
    busy = min(1.0, inflight / (target.bandwidth * LATENCY))
    vec = min(1.0, per_thread * item / 16)
    moved = f["bytes_read"] + f["bytes_written"]
    steps = 1
    if reduction and c.looped:
        steps = math.ceil(r / rb) * max(1, f["n_loops"])
        loop_bytes = _loop_read_bytes(kernel, f)
        moved += 0.5 * loop_bytes * max(0, f["n_loops"] - 1)
    memory = moved / (target.bandwidth * busy * util) / (0.75 + 0.25 * vec)
    pad = programs * c.xblock / x * (math.ceil(r / rb) * rb / r if reduction else 1.0)
    compute = f["flops"] * pad / target.peak_flops
    overhead = waves * (steps * STEP_COST if c.looped else 0.0)
    return (max(memory, compute) * spill + overhead + target.overhead)


def _loop_read_bytes(kernel: Kernel, f: Mapping[str, Any]) -> float:
    """Bytes a looped kernel reads inside its loops, once: the inputs its loops load."""
    in_loops = {st.buffer for lp in kernel.body if isinstance(lp, Loop) for st in lp.body if isinstance(st, Load)}
    total = sum(1 for b in kernel.inputs if b.name in in_loops)
    share = total / max(1, len(kernel.inputs))
    return f["bytes_read"] * share


def rank_configs(kernel: Kernel, env: Mapping[Any, int], target: Target | None = None) -> list[tuple[float, TritonConfig]]:
    """Every candidate with its predicted seconds, fastest first (ties keep candidate order)."""
    priced = [(predict_config(kernel, c, env, target), k, c) for k, c in enumerate(candidates(kernel, env))]
    return [(t, c) for t, _, c in sorted(priced, key=lambda p: (p[0], p[1]))]


def choose_config(kernel: Kernel, env: Mapping[Any, int], target: Target | None = None) -> TritonConfig:
    return rank_configs(kernel, env, target)[0][1]


def gpu_target(device: Any = None) -> Target:
    """The uncalibrated ceilings of ``device``'s GPU (by compute capability); sm90's where no
    CUDA device is given (the interpreter: the choice only has to be valid)."""
    from .roofline import default_target
    try:
        import torch
        if device is not None and torch.device(device).type == "cuda":
            major, minor = torch.cuda.get_device_capability(device)
            return default_target(f"sm{major}{minor}")
    except (RuntimeError, AssertionError):
        pass
    return GPU_DEFAULTS["sm90"]
