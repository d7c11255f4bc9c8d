"""GEMM tile sizes for the C templates: the host's caches and vector width, and a small cost
model that picks MC/NC/KC and the micro-kernel shape ([Note: GEMM tile model]); c_gemm.py
writes the loops around them."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any

# -- the target ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuCaches:
    l1: int = 32 * 1024          # bytes per core, data
    l2: int = 1024 * 1024        # bytes per core
    l3: int = 8 * 1024 * 1024    # bytes, shared
    threads: int = 2


def _sysfs_caches() -> CpuCaches:
    sizes: dict[int, int] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in os.listdir(base):
            if not d.startswith("index"):
                continue
            with open(os.path.join(base, d, "type")) as f:
                if f.read().strip() == "Instruction":
                    continue
            with open(os.path.join(base, d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(base, d, "size")) as f:
                text = f.read().strip()
            mult = {"K": 1024, "M": 1024 * 1024}.get(text[-1], 1)
            sizes[level] = int(text.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    d = CpuCaches()
    return CpuCaches(sizes.get(1, d.l1), sizes.get(2, d.l2), sizes.get(3, d.l3), os.cpu_count() or 2)


@functools.lru_cache(maxsize=1)
def host_caches() -> CpuCaches:
    return _sysfs_caches()


def caches_of(target: Any) -> CpuCaches:
    """Cache sizes of a cost-model target: its ``l1``/``l2``/``l3``/``threads`` attributes
    where it has them (a calibrated target may), else the host's."""
    host = host_caches()
    if target is None:
        return host
    return CpuCaches(*(int(getattr(target, f, None) or getattr(host, f)) for f in ("l1", "l2", "l3", "threads")))


def vector_width(flags: str | None = None) -> int:
    """float32 lanes per vector register on the host (or for ``flags``, a /proc/cpuinfo flags
    line): 16 with AVX-512F, 8 with AVX2, 4 otherwise (SSE / NEON)."""
    if flags is None:
        flags = host_flags()
    words = set(flags.split())
    return 16 if "avx512f" in words else 8 if "avx2" in words else 4


@functools.lru_cache(maxsize=1)
def host_flags() -> str:
    """The host's /proc/cpuinfo flags line (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return ""


# -- tile sizes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tiles:
    width: int  # floats per vector
    mr: int     # micro-kernel rows (broadcasts of A)
    nr: int     # micro-kernel columns (vectors of B)
    mc: int
    nc: int
    kc: int


def micro_shape(width: int) -> tuple[int, int]:
    """(MR, NR): MR * NR / width accumulators plus NR / width B vectors and one broadcast must
    fit the register file (32 vector registers with AVX-512, 16 otherwise)."""
    if width == 16:
        return 12, 32   # 24 accumulators + 2 B + 1 broadcast of 32 zmm
    if width == 8:
        return 6, 16    # 12 of 16 ymm
    return 4, 8         # 8 of 16 xmm


def gemm_tiles(m: int, n: int, k: int, target: Any = None, width: int | None = None) -> Tiles:
    """Cache blocking for an ``m x n x k`` float32 GEMM [Note: GEMM tile model]."""
    return _search(m, n, k, width or vector_width(), caches_of(target))


@functools.lru_cache(maxsize=4096)
def _search(m: int, n: int, k: int, w: int, c: CpuCaches) -> Tiles:
    """The cheapest candidate blocking (memoised: a model has few distinct GEMM shapes)."""
    mr, nr = micro_shape(w)
    best: tuple[float, Tiles] | None = None
    for kc in (128, 192, 256, 320, 384, 512, 768, 1024):
        kc_eff = min(kc, max(k, 1))
        for mc in (mr * i for i in (2, 4, 6, 8, 12, 16, 24, 32)):
            for nc in (nr * i for i in (2, 4, 8, 16, 32, 64, 128)):
                cost = _tile_cost(m, n, k, mr, nr, w, mc, nc, kc_eff, c)
                if best is None or cost < best[0]:
                    best = (cost, Tiles(w, mr, nr, mc, nc, kc_eff))
        if kc >= k:
            break
    assert best is not None
    return best[1]


def _tile_cost(m: int, n: int, k: int, mr: int, nr: int, w: int, mc: int, nc: int, kc: int,
               c: CpuCaches) -> float:
    """[Note: GEMM tile model] Relative time of one blocking, in units of one micro-kernel
    step (MR x NR multiply-adds, one per vector FMA slot):

    - compute: ``ceil(m/mr) * ceil(n/nr) * k`` steps (padding waste counted), divided by the
      threads actually busy: work items are ``ceil(m/mc) * ceil(n/nc)`` and the slowest
      thread runs ``ceil(items / threads)`` of them;
    - the C tile round trip per K block and micro-tile: ``2 * MR`` vector loads/stores, about
      ``mr`` steps, paid ``ceil(k/kc)`` times (favours a large KC);
    - packing: A is re-packed once per NC column block, B once; one element costs ~1 cycle
      from cache and ~4 once the source exceeds L2, a step ``mr * nr / (2 * w)`` cycles
      (two FMA pipes);
    - capacity: the B micro-panel ``kc x NR`` should sit in half of L1, but a micro-kernel
      with MR = 12 needs only ~13 bytes per cycle, which L2 streams: x1.02 when it does not
      (measured: KC = K = 1024 beats KC = 192 by ~5%); the A block ``mc x kc``, the C tile
      ``mc x nc`` and the B micro-panel must share half of L2 (else x1.5); the packed B block
      ``kc x nc`` should sit in the thread's share of L3 (else x1.2);
    - B streaming: each MC row block reads the packed B again, 1/16 cycle per float from L2,
      1/4 from L3 (favours a large MC).
    A closed form, not a search by timing: the candidates differ by what spills where.
    """
    f = 4  # bytes per float
    items_m, items_n = math.ceil(m / mc), math.ceil(n / nc)
    items = items_m * items_n
    share = math.ceil(items / c.threads) / items
    steps = math.ceil(m / mr) * math.ceil(n / nr) * max(k, 1) * share
    # Tiles larger than the problem waste nothing but must not be charged for capacity.
    mc_e, nc_e = min(mc, math.ceil(m / mr) * mr), min(nc, math.ceil(n / nr) * nr)
    penalty = 1.0
    if kc * nr * f > c.l1 // 2:
        penalty *= 1.02
    if (mc_e * kc + mc_e * nc_e + kc * nr) * f > c.l2 // 2:
        penalty *= 1.5
    if kc * nc_e * f > max(c.l3 // c.threads, c.l2):
        penalty *= 1.2
    ctile = math.ceil(m / mr) * math.ceil(n / nr) * mr * math.ceil(k / kc) * share
    pack_cycles = 1.0 if (m * k + k * n) * f <= c.l2 else 4.0
    packing = (m * k * items_n + k * n) * pack_cycles / (mr * nr / (2 * w)) / c.threads
    # Every MC row block streams the packed B block again: from L2 if it fits, else from L3.
    b_cycles = 1 / 16 if kc * nc_e * f <= c.l2 // 2 else 1 / 4
    b_stream = items_m * max(k, 1) * n * b_cycles / (mr * nr / (2 * w)) / c.threads
    return steps * penalty + ctile + packing + b_stream
