"""Measuring a target's ceilings once, and caching them, for the roofline.

``calibrate()`` times three things on the machine it runs on: a large copy (memory bandwidth,
bytes read plus written per second), a float32 matrix product (peak FLOP/s, as torch reaches
it), and a one-element op (the fixed cost of one call). The result is written atomically to
``$XDG_CACHE_HOME/effc/calibration/<target>.json`` (``~/.cache`` when unset), keyed by the
target's description: ISA and threads on a CPU ("cpu-avx2 2 threads"), compute capability on
a GPU ("sm90 NVIDIA H100 ..."). ``current_target()`` reads it back; a missing, corrupt or
foreign file means the uncalibrated defaults, never an error.

    $ effc calibrate          # measures, prints the ceilings, writes the cache
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .roofline import Target, default_target

FORMAT = 1
# sizes of the measured work: (copy elements, matmul side, repetitions)
FULL = (1 << 25, 1024, 9)
QUICK = (1 << 20, 256, 5)


def target_key(device: str = "cpu") -> str:
    """What the ceilings depend on: the ISA and thread count of a CPU, the model of a GPU."""
    if device.startswith("cuda"):
        major, minor = torch.cuda.get_device_capability(device)
        return f"sm{major}{minor} {torch.cuda.get_device_name(device)}"
    return f"cpu-{_isa()} {torch.get_num_threads()} threads"


def _isa() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    for isa in ("avx512f", "avx2", "asimd", "neon"):
        if re.search(rf"\b{isa}\b", flags):
            return isa.replace("avx512f", "avx512").replace("asimd", "neon")
    return platform.machine().lower() or "generic"


def cache_path(key: str) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")[:120] or "target"
    return os.path.join(base, "effc", "calibration", name + ".json")


@dataclass(frozen=True)
class Measured:
    target: Target
    seconds_spent: float
    path: str


def calibrate(device: str = "cpu", quick: bool = False, progress: Callable[[str], None] | None = None) -> Measured:
    """Measure the ceilings of ``device`` and write them to the cache."""
    started = time.perf_counter()
    n, side, reps = QUICK if quick else FULL
    say = progress or (lambda _msg: None)
    sync = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
    say("memory bandwidth (copy)")
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    copy = _median_seconds(lambda: dst.copy_(src), reps, sync)
    say("float32 matmul")
    a, b = torch.rand(side, side, device=device), torch.rand(side, side, device=device)
    mm = _median_seconds(lambda: torch.mm(a, b), reps, sync)
    half = 0.0
    if device.startswith("cuda"):  # tensor cores: half-precision matmuls have their own ceiling
        say("float16 matmul")
        a16, b16 = a.half(), b.half()
        half = 2 * side**3 / _median_seconds(lambda: torch.mm(a16, b16), reps, sync)
    say("call overhead")
    one = torch.ones(1, device=device)
    call = _median_seconds(lambda: torch.add(one, one), reps * 20, sync)
    key = target_key(device)
    target = Target(key, bandwidth=2 * n * 4 / copy, peak_flops=2 * side**3 / mm, overhead=call,
                    calibrated=True, half_flops=half)
    path = cache_path(key)
    _write(path, {"format": FORMAT, "key": key, "bandwidth": target.bandwidth, "peak_flops": target.peak_flops,
                  "overhead": target.overhead, "half_flops": half, "quick": quick, "torch": torch.__version__,
                  "measured": time.strftime("%Y-%m-%d %H:%M:%S")})
    return Measured(target, time.perf_counter() - started, path)


def _median_seconds(fn: Callable[[], object], reps: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return max(statistics.median(times), 1e-9)


def _write(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".calibration-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_LOADED: dict[str, Target] = {}


def cached_target(device: str = "cpu") -> Target | None:
    """The calibrated ceilings for this machine's ``device``, or None when there are none
    usable (never measured, or a file that is corrupt or measured another target)."""
    key = target_key(device)
    path = cache_path(key)
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        values = [float(d["bandwidth"]), float(d["peak_flops"]), float(d["overhead"])]
        if d.get("format") != FORMAT or d.get("key") != key or not all(math.isfinite(v) and v > 0 for v in values):
            return None
        half = float(d.get("half_flops", 0.0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return Target(key, *values, calibrated=True, half_flops=half if math.isfinite(half) and half > 0 else 0.0)


def current_target(device: str = "cpu") -> Target:
    """The target passes predict for: calibrated when a calibration is cached, else defaults.
    Read once per process."""
    if device not in _LOADED:
        _LOADED[device] = cached_target(device) or default_target(target_key(device))
    return _LOADED[device]


def forget() -> None:
    """Drop what ``current_target`` has read (after a new calibration, or in tests)."""
    _LOADED.clear()
