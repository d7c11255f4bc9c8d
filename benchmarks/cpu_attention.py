"""effc's C attention kernel (codegen/c_attention.py) against eager PyTorch on this CPU.

    OMP_NUM_THREADS=2 python benchmarks/cpu_attention.py   # -> results/cpu_attention-<date>-cpu.{json,md}
    python benchmarks/cpu_attention.py --seqs 512 --rounds 5 --out /tmp/att.json

Float32, B=1, H=12, D=64, sequence 512 / 1024 / 2048, causal and not, 2 threads. Three systems:

- effc: ``effc.compile(F.scaled_dot_product_attention, target="c")``; the run asserts the
  attention ran in C (no kernel handed back to Python);
- torch SDPA: ``F.scaled_dot_product_attention`` (its CPU flash kernel);
- naive: ``softmax(q k^T * scale [+ causal -inf]) v`` with three eager ops.

Each system is checked against torch SDPA, warmed up, then timed in interleaved rounds (one
call of each system per round, the order rotating); medians. Memory, two ways: the bytes
effc's program plans (arena for the output, plus the attention's per-thread scratch) against
the ``B*H*S*S`` float32 score matrix the naive version materialises; and, per system, the
growth of the resident set's peak during one call, in a fresh subprocess (Linux VmHWM, reset
through /proc/self/clear_refs after the inputs exist and effc has compiled).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import effc  # noqa: E402
from results_io import write_results  # noqa: E402

B, H, D, THREADS = 1, 12, 64, 2
SYSTEMS = ("effc", "torch_sdpa", "naive")


def naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        n = q.shape[-2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def make(system: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
         causal: bool) -> tuple[Callable[[], torch.Tensor], dict[str, Any]]:
    """A no-argument call of ``system`` on q, k, v, and what it reports about itself."""
    if system == "torch_sdpa":
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), {}
    if system == "naive":
        return lambda: naive(q, k, v, causal), {}
    torch._dynamo.reset()

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    t0 = time.perf_counter()
    c = effc.compile(fn, (q, k, v), target="c")
    compile_s = time.perf_counter() - t0
    (g,) = c.explain().graphs
    if g.target != "c" or g.python_kernels:
        raise SystemExit(f"effc did not run the attention in C: {g.target} {g.python_kernels}")
    return lambda: c(q, k, v), {"compile_s": round(compile_s, 2), "arena_bytes": (g.memory or {}).get("arena"),
                                "scratch_bytes": c_scratch(q.shape, causal)}


def c_scratch(shape: torch.Size, causal: bool) -> int:
    """The scratch bytes the C program of one SDPA node reserves beside its arena (the explain
    report's memory counts only the arena for C templates)."""
    from effc.backends.c.program import CProgram
    from effc.ir import DType, GraphBuilder, Op, TensorType
    from effc.options import Options
    from effc.passes import fuse, plan_memory

    b = GraphBuilder()
    ins = [b.input(n, TensorType(DType.F32, tuple(shape))) for n in "qkv"]
    g = fuse.run(b.build([b.op(Op.SDPA, ins, scale=None, is_causal=causal, enable_gqa=False)]), Options()).graph
    return int(CProgram(g, plan_memory.plan(g, {})).scratch_bytes)


def inputs(s: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(s)
    return tuple(torch.randn(B, H, s, D, generator=g) for _ in range(3))


def time_case(s: int, causal: bool, rounds: int) -> dict[str, Any]:
    q, k, v = inputs(s)
    calls, info = {}, {}
    for name in SYSTEMS:
        calls[name], info[name] = make(name, q, k, v, causal)
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=causal)
    for name, f in calls.items():
        err = (f().double() - want).abs().max().item()
        if not err < 1e-4:
            raise SystemExit(f"{name} at S={s} causal={causal}: max error {err:.3g}")
        f()                                              # second warm-up
    times: dict[str, list[float]] = {n: [] for n in SYSTEMS}
    for r in range(rounds):
        order = SYSTEMS[r % 3:] + SYSTEMS[:r % 3]
        for name in order:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(t) for n, t in times.items()}
    flops = 4 * B * H * s * s * D * (0.5 if causal else 1.0)
    return {"seq": s, "causal": causal, "median_ms": {n: round(t * 1e3, 3) for n, t in med.items()},
            "gflops": {n: round(flops / t / 1e9, 2) for n, t in med.items()},
            "effc_over_sdpa": round(med["torch_sdpa"] / med["effc"], 3),
            "effc_over_naive": round(med["naive"] / med["effc"], 3),
            "effc": info["effc"], "score_matrix_bytes": B * H * s * s * 4,
            "io_bytes": 4 * B * H * s * D * 4}


# -- peak resident memory of one call, in a fresh process ------------------------------------

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measure_child(system: str, s: int, causal: bool) -> None:
    torch.set_num_threads(THREADS)
    q, k, v = inputs(s)
    f, _ = make(system, q, k, v, causal)
    if system == "effc":
        f()          # the program's arena is allocated on its first call and kept: count it
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as cr:
        cr.write("5")                                   # resets VmHWM to the current RSS
    f()
    print(json.dumps({"peak_growth_bytes": (_status_kib("VmHWM") - base) * 1024}))


def peak_growth(system: str, s: int, causal: bool) -> int | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", system, str(s), str(int(causal))]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_growth_bytes"]


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# C attention on the CPU, {res['date']}", "",
             f"Machine: {res['machine']}; {res['threads']} threads; torch {res['torch']}; float32, "
             f"B={B} H={H} D={D}; medians of {res['rounds']} interleaved rounds.", "",
             f"    {res['command']}", "",
             "| S | causal | effc ms | torch SDPA ms | naive ms | effc / SDPA speed | effc / naive speed "
             "| effc planned (output + scratch) | S×S scores | peak RSS growth effc / SDPA / naive |",
             "|" + " --- |" * 10]
    mib = lambda b: "?" if b is None else f"{b / 2**20:.1f} MiB"  # noqa: E731
    for c in res["cases"]:
        m, e, pk = c["median_ms"], c["effc"], c.get("peak_growth_bytes", {})
        planned = (e.get("arena_bytes") or 0) + (e.get("scratch_bytes") or 0)
        lines.append(f"| {c['seq']} | {c['causal']} | {m['effc']:.1f} | {m['torch_sdpa']:.1f} | {m['naive']:.1f} "
                     f"| {c['effc_over_sdpa']:.2f}× | {c['effc_over_naive']:.2f}× | {mib(planned)} "
                     f"| {mib(c['score_matrix_bytes'])} | "
                     + " / ".join(mib(pk.get(n)) for n in SYSTEMS) + " |")
    lines += ["", "Speed columns: how many times faster effc is (above 1: faster). Planned bytes: the "
              "program's arena (here just the output, 12·S·64·4) plus the attention's per-thread "
              "scratch, linear in S. Peak RSS growth: during one warm call, in a fresh process; effc's "
              "arena and scratch exist from its first call (at compile time), so its figure is the "
              "output it returns, while torch allocates its temporaries per call. The naive version "
              "materialises the S×S scores and their softmax.", ""]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _measure_child(sys.argv[2], int(sys.argv[3]), bool(int(sys.argv[4])))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqs", type=int, nargs="*", default=[512, 1024, 2048])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--no-memory", action="store_true", help="skip the subprocess RSS measurements")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    cases = []
    for s in args.seqs:
        for causal in (False, True):
            case = time_case(s, causal, args.rounds)
            if not args.no_memory:
                case["peak_growth_bytes"] = {n: peak_growth(n, s, causal) for n in SYSTEMS}
            print(json.dumps({k: case[k] for k in ("seq", "causal", "median_ms", "effc_over_sdpa")}), flush=True)
            cases.append(case)
    res = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "torch": torch.__version__, "threads": THREADS, "rounds": args.rounds,
           "command": "OMP_NUM_THREADS=2 python benchmarks/cpu_attention.py " + " ".join(sys.argv[1:]),
           "cases": cases}
    write_results("cpu_attention", res, markdown, args.out)


if __name__ == "__main__":
    main()
