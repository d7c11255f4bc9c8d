"""Compile time and steady-state time: GPT-2 small under effc and TorchInductor, on CPU.

GPT-2 small is ``GPT2Config()`` (12 layers, 768 hidden, 50257 vocabulary) with random
weights, ``GPT2LMHeadModel`` in eval mode under ``torch.no_grad()``, batch 1, sequence 128,
two threads; effc compiles for ``--effc-target`` (default ``c``). Every measurement runs in a
process of its own:

* cold: a fresh Python process with empty compile caches: a new ``XDG_CACHE_HOME`` for effc
  (its whole-program cache and the C build cache are under it, [Note: C program cache]), a new
  ``TORCHINDUCTOR_CACHE_DIR`` for Inductor. A second cold compile in the same process (after
  ``torch._dynamo.reset()``, with other empty cache folders) shows how much of the first was
  one-time start-up (imports, lazy initialisation).
* warm: another fresh process over the caches the cold one filled: effc loads the compiled
  program from its cache, Inductor its FX graph and AOT autograd caches.

Compile time is the wall time of the first compiled call minus the median eager call measured
in the same process; it includes Dynamo's tracing. effc's own share (import of the FX graph,
passes, code generation, or the cache lookup and load) is the ``compile_seconds`` of its
explain report.

Steady state: the median of ``--runs`` calls (default 10) for eager and the compiled model,
in the same process, and their ratio. Outputs are checked against eager by the tolerance
policy (effc.tolerance) with a float64 copy of the model as the reference.

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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
CACHE_VAR = {"effc": "XDG_CACHE_HOME", "inductor": "TORCHINDUCTOR_CACHE_DIR"}


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
    """Measure one backend in this (fresh) process; returns the record. Its compile caches are
    where the environment says (``CACHE_VAR``): empty for a cold run, filled for a warm one."""
    import torch
    torch.set_num_threads(args.threads)
    model, cfg = build(args.layers)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))

    def run(m: Any) -> torch.Tensor:
        return m(input_ids=x, use_cache=False).logits

    rec: dict[str, Any] = {"backend": backend, "phase": args.phase, "loadavg_1min_start": round(os.getloadavg()[0], 2)}
    with torch.no_grad():
        run(model)  # warm eager: allocator, thread pool, lazy module state
        eager_times = [timed(run, model)[0] for _ in range(args.runs)]
        eager_med = statistics.median(eager_times)
        expected = run(model)
        rec["eager_median_s"] = eager_med
        rec["eager_times_s"] = eager_times
        if backend == "eager":
            return rec

        def compile_once(fresh_cache: bool) -> Any:
            import torch._dynamo
            torch._dynamo.reset()
            if fresh_cache:
                os.environ[CACHE_VAR[backend]] = tempfile.mkdtemp(prefix=f"{backend}-again-")
            if backend == "inductor":
                compiled = torch.compile(model)
            else:
                import effc
                b = effc.backend(target=args.effc_target)
                compiled = torch.compile(model, backend=b)
                rec.setdefault("_backends", []).append(b)
            first, out = timed(run, compiled)
            return compiled, first, out

        compiled, first, out = compile_once(False)
        rec["first_call_s"] = first
        rec["compile_s"] = first - eager_med
        if args.phase == "cold" and not args.no_second:
            compiled2, first2, _ = compile_once(True)
            rec["second_cold_first_call_s"] = first2
            rec["second_cold_compile_s"] = first2 - eager_med
            rec["_again_dir"] = os.environ[CACHE_VAR[backend]]
            compiled = compiled2          # the first one was reset with Dynamo's caches
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
    if "_again_dir" in rec:   # the second cold compile's caches
        shutil.rmtree(rec.pop("_again_dir"), ignore_errors=True)
    backends = rec.pop("_backends", [])
    if backends:
        ex = backends[0].explain()   # the first compile's report: the cold or the warm one
        rec["effc_target"] = args.effc_target
        rec["effc_graphs"] = len(ex.graphs)
        rec["effc_externs"] = {k: v for g in ex.graphs for k, v in g.externs.items()}
        rec["effc_fallbacks"] = [g.fallback for g in ex.graphs if g.fallback]
        rec["effc_reported_compile_s"] = round(sum(g.compile_seconds for g in ex.graphs), 3)
        rec["effc_cache_hits"] = [bool(g.cache.get("hit")) for g in ex.graphs]
        rec["effc_python_kernels"] = sum(len(g.python_kernels) for g in ex.graphs)
    rec["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    return rec


def run_child(backend: str, phase: str, cache_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", backend, "--phase", phase,
           "--runs", str(args.runs), "--threads", str(args.threads), "--batch", str(args.batch),
           "--seq", str(args.seq), "--effc-target", args.effc_target]
    if args.layers:
        cmd += ["--layers", str(args.layers)]
    if args.no_second:
        cmd += ["--no-second"]
    env = dict(os.environ, EFFC_LOG="error", TRANSFORMERS_VERBOSITY="error")
    env.pop("EFFC_CACHE", None)          # the cache under test is on
    if backend in CACHE_VAR:
        env[CACHE_VAR[backend]] = cache_dir
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        return {"backend": backend, "phase": phase,
                "error": p.stderr.strip().splitlines()[-1:] or ["exit %d" % p.returncode],
                "stderr_tail": p.stderr[-3000:]}
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    rec["process_wall_s"] = round(time.time() - t0, 1)
    return rec


def _f(x: Any, unit: str = "s", digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f} {unit}".strip()


def write_markdown(path: str, meta: dict[str, Any], recs: dict[str, dict[str, Any]]) -> None:
    ec, ew = recs.get("effc/cold", {}), recs.get("effc/warm", {})
    ic, iw = recs.get("inductor/cold", {}), recs.get("inductor/warm", {})

    def ms(r: dict[str, Any], k: str) -> str:
        return _f(r[k] * 1e3, "ms", 1) if r.get(k) is not None else "n/a"

    loads = ", ".join(f"{k} {r.get('loadavg_1min_start')} -> {r.get('loadavg_1min_end')}" for k, r in recs.items())
    lines = [
        f"# Compile time: GPT-2 small, {meta['date']}, CPU",
        "",
        f"Machine: {meta['machine']}; {meta['threads']} threads. Model: {meta['model']}; batch "
        f"{meta['batch']}, sequence {meta['seq']}, eval, no_grad, random weights; effc target "
        f"`{meta['effc_target']}`. Script: `benchmarks/compile_time.py`; every row from a fresh process. "
        "Cold: empty compile caches (effc: a new `XDG_CACHE_HOME`, so the C compiler runs too; Inductor: a "
        "new `TORCHINDUCTOR_CACHE_DIR`). Warm: another fresh process over the caches the cold one filled. "
        "Compile time is the first call minus the median eager call, Dynamo tracing included; effc's own "
        "share is its explain report's `compile_seconds`.",
        "",
        f"1-minute load average, before / after the run: {meta['loadavg_1min_before_after'][0]} / "
        f"{meta['loadavg_1min_before_after'][1]}; per process (start -> end): {loads}. Above about 2.2, other "
        "processes were competing for the two cores and timings are unreliable.",
        "",
        "| | effc | TorchInductor |",
        "| --- | --- | --- |",
        f"| cold compile (first call minus eager call) | {_f(ec.get('compile_s'))} | {_f(ic.get('compile_s'))} |",
        f"| of which effc's own (report) | {_f(ec.get('effc_reported_compile_s'))} | |",
        f"| warm compile, fresh process, caches filled | {_f(ew.get('compile_s'))} | {_f(iw.get('compile_s'))} |",
        f"| of which effc's own (report; loaded from its cache: {ew.get('effc_cache_hits')}) | "
        f"{_f(ew.get('effc_reported_compile_s'))} | |",
        f"| second cold compile, same process as the cold one (dynamo.reset, empty caches) | "
        f"{_f(ec.get('second_cold_compile_s'))} | {_f(ic.get('second_cold_compile_s'))} |",
        f"| steady-state median of {meta['runs']} (cold / warm process) | {ms(ec, 'compiled_median_s')} / "
        f"{ms(ew, 'compiled_median_s')} | {ms(ic, 'compiled_median_s')} / {ms(iw, 'compiled_median_s')} |",
        f"| eager median, same processes | {ms(ec, 'eager_median_s')} / {ms(ew, 'eager_median_s')} | "
        f"{ms(ic, 'eager_median_s')} / {ms(iw, 'eager_median_s')} |",
        f"| speed-up over eager (cold / warm process) | {_f(ec.get('speedup_over_eager'), 'x')} / "
        f"{_f(ew.get('speedup_over_eager'), 'x')} | {_f(ic.get('speedup_over_eager'), 'x')} / "
        f"{_f(iw.get('speedup_over_eager'), 'x')} |",
        f"| output within tolerance policy of eager (cold / warm) | {ec.get('matches_eager')} / "
        f"{ew.get('matches_eager')} | {ic.get('matches_eager')} / {iw.get('matches_eager')} |",
        "",
        f"effc numerics (cold): {ec.get('numerics')}; (warm): {ew.get('numerics')}. Inductor numerics (cold): "
        f"{ic.get('numerics')}; (warm): {iw.get('numerics')}.",
        f"effc: {ec.get('effc_graphs')} graph(s), externs {ec.get('effc_externs')}, fallbacks "
        f"{ec.get('effc_fallbacks')}, {ec.get('effc_python_kernels')} kernels run in Python.",
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
    ap.add_argument("--effc-target", default="c", help="effc's target option (default c)")
    ap.add_argument("--phases", default="cold,warm", help="cold: empty caches; warm: the caches cold filled")
    ap.add_argument("--no-second", action="store_true", help="skip the second cold compile")
    ap.add_argument("--out", default="")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--phase", default="cold", help=argparse.SUPPRESS)
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
        cache_dir = tempfile.mkdtemp(prefix=f"compile-time-{b}-")
        try:
            for phase in args.phases.split(","):
                print(f"measuring {b} ({phase}) ...", flush=True)
                recs[f"{b}/{phase}"] = run_child(b, phase, cache_dir, args)
                print(json.dumps({k: v for k, v in recs[f"{b}/{phase}"].items() if not k.endswith("times_s")},
                                 indent=1), flush=True)
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
    import transformers
    meta = {"date": date, "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "model": "GPT2LMHeadModel(GPT2Config())" if not args.layers else f"GPT2LMHeadModel(GPT2Config(n_layer={args.layers}))",
            "batch": args.batch, "seq": args.seq, "threads": args.threads, "runs": args.runs,
            "effc_target": args.effc_target,
            "command": " ".join(["python", "benchmarks/compile_time.py", *sys.argv[1:]]),
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
