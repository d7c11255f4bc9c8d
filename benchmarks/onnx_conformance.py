"""ONNX conformance: every backend node case and every light model, through effc and onnxruntime.

    python benchmarks/onnx_conformance.py [--only effc|onnxruntime] [--filter SUBSTR] [--jobs N]

Each case runs in a forked child with a time limit. Writes
benchmarks/results/onnx_conformance-DATE-cpu.{json,md}: pass counts for both systems on the
same cases, and every failing case with its reason.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from effc.onnx_conformance import (CaseResult, effc_runner, light_models, node_cases, ort_runner,
                                   run_isolated)

RUNNERS = {"effc": effc_runner, "onnxruntime": ort_runner}


def run_all(cases, runner, jobs: int, timeout: float, label: str) -> list[CaseResult]:
    done = 0
    t0 = time.perf_counter()
    out: list[CaseResult] = [None] * len(cases)  # type: ignore[list-item]

    def one(i: int) -> None:
        nonlocal done
        out[i] = run_isolated(cases[i], runner, timeout)
        done += 1
        if done % 100 == 0 or done == len(cases):
            print(f"  {label}: {done}/{len(cases)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, range(len(cases))))
    return out


def summary(results: list[CaseResult]) -> dict:
    c = collections.Counter(r.status for r in results)
    return {"cases": len(results), **{k: c.get(k, 0) for k in ("pass", "mismatch", "unsupported", "error", "crash", "timeout")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=sorted(RUNNERS))
    p.add_argument("--filter", default="")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--known-out", help="also write effc's non-passing cases (name -> reason) to this "
                   "JSON file: tests/frontends/onnx_known_failures.json, which the CI sample checks")
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)
    sets = {"node": [c for c in node_cases() if args.filter in c.name],
            "light": [c for c in light_models() if args.filter in c.name]}
    report: dict = {"date": datetime.date.today().isoformat(), "machine": platform.node(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "systems": {}}
    import onnx
    import onnxruntime
    report["versions"] = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                          "torch": torch.__version__}
    for sysname, runner in RUNNERS.items():
        if args.only and sysname != args.only:
            continue
        entry = {}
        for setname, cases in sets.items():
            res = run_all(cases, runner, args.jobs, args.timeout, f"{sysname} {setname}")
            entry[setname] = {"summary": summary(res), "results": [r.to_json() for r in res]}
            print(f"{sysname:12s} {setname:6s} {summary(res)}")
        report["systems"][sysname] = entry
    if args.known_out and "effc" in report["systems"]:
        known = {r["name"]: f"{r['status']}: {r['detail'][:160]}"
                 for e in report["systems"]["effc"].values() for r in e["results"] if r["status"] != "pass"}
        with open(args.known_out, "w") as f:
            json.dump(dict(sorted(known.items())), f, indent=1)
            f.write("\n")
    if args.no_write:
        return
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"onnx_conformance-{report['date']}-cpu")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(report))
    print(f"wrote {stem}.json and .md")


def markdown(report: dict) -> str:
    lines = [f"# ONNX conformance, {report['date']} ({report['machine']}, {report['cpu_count']} cores)", "",
             f"Versions: {report['versions']}", "",
             "| system | set | cases | pass | mismatch | unsupported | error | crash | timeout |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for sysname, entry in report["systems"].items():
        for setname, e in entry.items():
            s = e["summary"]
            lines.append(f"| {sysname} | {setname} | {s['cases']} | {s['pass']} | {s['mismatch']} | "
                         f"{s['unsupported']} | {s['error']} | {s['crash']} | {s['timeout']} |")
    if "effc" in report["systems"]:
        lines += ["", "## effc: cases that do not pass", ""]
        for setname, e in report["systems"]["effc"].items():
            for r in e["results"]:
                if r["status"] != "pass":
                    lines.append(f"- {setname} `{r['name']}`: {r['status']}: {r['detail'][:200]}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
