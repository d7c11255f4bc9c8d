"""Compile time and steady-state time: GPT-2 small under effc and TorchInductor, on CPU.

GPT-2 small is ``GPT2Config()`` (12 layers, 768 hidden, 50257 vocabulary) with random
weights, ``GPT2LMHeadModel`` in eval mode under ``torch.no_grad()``, batch 1, sequence 128,
two threads. Each backend is measured in a process of its own, so "cold" means cold: a fresh
Python process, ``torch._dynamo.reset()``, and for Inductor a fresh empty
``TORCHINDUCTOR_CACHE_DIR``. Compile time is the wall time of the first compiled call minus
the median eager call measured in the same process. A second cold compile in the same
process (after ``torch._dynamo.reset()``, with another empty Inductor cache folder) shows how
much of the first was one-time start-up (imports, lazy initialisation).

Steady state: the median of ``--runs`` calls (default 10) for eager and the compiled model,
in the same process, and their ratio. effc's output is checked against eager by the
tolerance policy (effc.tolerance) with a float64 copy of the model as the reference.

    python benchmarks/compile_time.py            # writes benchmarks/results/compile_time-<date>-cpu.{json,md}
    python benchmarks/compile_time.py --layers 2 --out /tmp/ct.json   # a quick smoke run
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def build(layers: int | None) -> Any:
    import torch
    import transformers
    torch.manual_seed(0)
    cfg = transformers.GPT2Config() if layers is None else transformers.GPT2Config(n_layer=layers)
    return transformers.GPT2LMHeadModel(cfg).eval(), cfg


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def child(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one backend in this (fresh) process; returns the record."""
    import torch
    torch.set_num_threads(args.threads)
    model, cfg = build(args.layers)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))

    def run(m: Any) -> torch.Tensor:
        return m(input_ids=x, use_cache=False).logits

    rec: dict[str, Any] = {"backend": backend}
    with torch.no_grad():
        run(model)  # warm eager: allocator, thread pool, lazy module state
        eager_times = [timed(run, model)[0] for _ in range(args.runs)]
        eager_med = statistics.median(eager_times)
        expected = run(model)
        rec["eager_median_s"] = eager_med
        rec["eager_times_s"] = eager_times
        if backend == "eager":
            return rec

        def compile_once(tag: str) -> Any:
            import torch._dynamo
            torch._dynamo.reset()
            if backend == "inductor":
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"inductor-{tag}-")
                compiled = torch.compile(model)
            else:
                import effc
                b = effc.backend()
                compiled = torch.compile(model, backend=b)
                rec.setdefault("_backends", []).append(b)
            first, out = timed(run, compiled)
            return compiled, first, out

        compiled, first, out = compile_once("cold")
        rec["first_call_s"] = first
        rec["compile_s"] = first - eager_med
        if not args.no_second:
            compiled2, first2, _ = compile_once("again")
            rec["second_cold_first_call_s"] = first2
            rec["second_cold_compile_s"] = first2 - eager_med
            compiled = compiled2
        run(compiled)
        times = [timed(run, compiled)[0] for _ in range(args.runs)]
        rec["compiled_median_s"] = statistics.median(times)
        rec["compiled_times_s"] = times
        rec["speedup_over_eager"] = eager_med / rec["compiled_median_s"]

        # numerics: the compiled output against eager, both against a float64 copy
        from effc.tolerance import compare_one
        m64 = copy.deepcopy(model).double()
        ref = run(m64)
        del m64
        c = compare_one(0, out, expected, ref)
        rec["matches_eager"] = bool(c.ok)
        rec["numerics"] = str(c)
        rec["max_abs_diff_vs_eager"] = float((out - expected).abs().max())
    backends = rec.pop("_backends", [])
    if backends:
        ex = backends[0].explain()
        rec["effc_graphs"] = len(ex.graphs)
        rec["effc_externs"] = {k: v for g in ex.graphs for k, v in g.externs.items()}
        rec["effc_fallbacks"] = [g.fallback for g in ex.graphs if g.fallback]
        rec["effc_reported_compile_s"] = round(sum(g.compile_seconds for g in ex.graphs), 3)
    return rec


def run_child(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", backend, "--runs", str(args.runs),
           "--threads", str(args.threads), "--batch", str(args.batch), "--seq", str(args.seq)]
    if args.layers:
        cmd += ["--layers", str(args.layers)]
    if args.no_second:
        cmd += ["--no-second"]
    env = dict(os.environ, EFFC_LOG="error", TRANSFORMERS_VERBOSITY="error")
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        return {"backend": backend, "error": p.stderr.strip().splitlines()[-1:] or ["exit %d" % p.returncode],
                "stderr_tail": p.stderr[-3000:]}
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    rec["process_wall_s"] = round(time.time() - t0, 1)
    return rec


def _f(x: Any, unit: str = "s", digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f} {unit}".strip()


def write_markdown(path: str, meta: dict[str, Any], recs: dict[str, dict[str, Any]]) -> None:
    e, i = recs.get("effc", {}), recs.get("inductor", {})
    lines = [
        f"# Compile time: GPT-2 small, {meta['date']}, CPU",
        "",
        f"Machine: {meta['machine']}; {meta['threads']} threads. Model: {meta['model']}; batch "
        f"{meta['batch']}, sequence {meta['seq']}, eval, no_grad, random weights. Script: "
        "`benchmarks/compile_time.py`; each backend in a fresh process. 1-minute load average "
        f"before / after: {meta['loadavg_1min_before_after'][0]} / {meta['loadavg_1min_before_after'][1]} "
        "(above about 2.2, other processes were competing for the two cores and timings are unreliable).",
        "",
        "| | effc | TorchInductor |",
        "| --- | --- | --- |",
        f"| cold compile (first call minus eager call) | {_f(e.get('compile_s'))} | {_f(i.get('compile_s'))} |",
        f"| second cold compile, same process (dynamo.reset, empty cache dir) | "
        f"{_f(e.get('second_cold_compile_s'))} | {_f(i.get('second_cold_compile_s'))} |",
        f"| steady-state median of {meta['runs']} | {_f(e.get('compiled_median_s', 0) * 1e3, 'ms', 1)} | "
        f"{_f(i.get('compiled_median_s', 0) * 1e3, 'ms', 1)} |",
        f"| eager median, same process | {_f(e.get('eager_median_s', 0) * 1e3, 'ms', 1)} | "
        f"{_f(i.get('eager_median_s', 0) * 1e3, 'ms', 1)} |",
        f"| speed-up over eager | {_f(e.get('speedup_over_eager'), 'x')} | {_f(i.get('speedup_over_eager'), 'x')} |",
        f"| output within tolerance policy of eager (fp64 reference) | {e.get('matches_eager')} | {i.get('matches_eager')} |",
        "",
        f"effc numerics: {e.get('numerics')}. Inductor numerics: {i.get('numerics')}.",
        f"effc: {e.get('effc_graphs')} graph(s), externs {e.get('effc_externs')}, fallbacks "
        f"{e.get('effc_fallbacks')}; effc's own report puts its compile at {e.get('effc_reported_compile_s')} s "
        "(the rest of the cold compile is Dynamo tracing and AOT autograd).",
    ]
    for name, r in recs.items():
        if "error" in r:
            lines.append(f"\n{name} failed: {r['error']}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--layers", type=int, default=0, help="override n_layer (smoke runs); default: GPT2Config()")
    ap.add_argument("--backends", default="effc,inductor")
    ap.add_argument("--no-second", action="store_true", help="skip the second cold compile")
    ap.add_argument("--out", default="")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.layers = args.layers or None
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    import torch
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = args.out or os.path.join(RESULTS, f"compile_time-{date}-cpu.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    recs = {}
    load_before = os.getloadavg()
    for b in args.backends.split(","):
        print(f"measuring {b} ...", flush=True)
        recs[b] = run_child(b, args)
        print(json.dumps({k: v for k, v in recs[b].items() if not k.endswith("times_s")}, indent=1), flush=True)
    import transformers
    meta = {"date": date, "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "model": "GPT2LMHeadModel(GPT2Config())" if not args.layers else f"GPT2LMHeadModel(GPT2Config(n_layer={args.layers}))",
            "batch": args.batch, "seq": args.seq, "threads": args.threads, "runs": args.runs,
            # other processes on a 2-core machine distort 2-thread timings badly (OpenMP
            # regions wait for a descheduled thread): the 1-minute load average says how busy it was
            "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}
    with open(out, "w") as f:
        json.dump({"meta": meta, "results": recs}, f, indent=1)
    md = os.path.splitext(out)[0] + ".md"
    write_markdown(md, meta, recs)
    print(f"wrote {out} and {md}")


if __name__ == "__main__":
    main()
