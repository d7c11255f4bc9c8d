"""CUDA-event timing shared by the GPU benchmarks (gpu.py, gpu_attention.py)."""

from __future__ import annotations

import statistics
from typing import Any, Callable

import torch


def median_ms(fn: Callable[[], Any], runs: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` over ``runs`` calls, each timed by CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
