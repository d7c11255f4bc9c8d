"""OpInfo coverage: how many of PyTorch's OpInfo ops effc compiles and gets right.

For every entry of ``torch.testing._internal.common_methods_invocations.op_db`` (float32, CPU)
the first few sample inputs are run eagerly and through
``torch.compile(fn, backend=effc.backend(), fullgraph=False)`` under ``torch.no_grad()``,
and the outputs compared (NaN-aware; tuples and lists flattened). An op

* passes when every sample it tried compiled and matched eager,
* fails when a sample crashed in compilation or at run time, or mismatched,
* is ``eager-error`` when eager itself failed on every sample (excluded from the totals),
* is ``dynamo-error`` when the failure reproduces with Dynamo alone (backend "eager"), so it is
  not effc's (excluded from the totals, listed), and
* is ``skipped`` when it has no float32 CPU variant or no usable sample.

Passing ops are further split by how they ran, from ``backend.explain()``: ``native`` (every
op inside effc IR), ``extern`` (some nodes call the torch op), ``fallback`` (a whole graph ran
in PyTorch) or ``no-graph`` (Dynamo handed effc nothing: the op was traced away or broke the
graph). A failure is also re-run through AOT autograd with effc's decompositions and no-op
compilers, so the report can say whether the decomposition table or effc itself is at fault.

Outputs match when ``torch.testing.assert_close`` accepts them at the OpInfo's float32
tolerance (its toleranceOverride decorators) or rtol 1e-4 / atol 1e-5, whichever is looser;
failing that, when they are inside effc's tolerance policy against a float64 evaluation of
the op. Ops whose eager output changes from seed to seed (dropout, sampling) are compared on
shapes and dtypes only.

    python benchmarks/opinfo_coverage.py                 # everything, 2 worker processes
    python benchmarks/opinfo_coverage.py --ops add,nn.functional.conv2d --jobs 1
    python benchmarks/opinfo_coverage.py --limit 50 --out /tmp/cov.json

Writes ``benchmarks/results/opinfo_coverage-<date>-cpu.json`` and a ``.md`` summary beside it.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


# -- one op --------------------------------------------------------------------------------------

class OpTimeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise OpTimeout("time limit reached")


def op_key(op: Any) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def float32_tolerance(op: Any) -> tuple[float, float]:
    """The loosest float32 (atol, rtol) the OpInfo's toleranceOverride decorators give for
    CPU (or any device), at least atol 1e-5 / rtol 1e-4."""
    import torch
    atol, rtol = 1e-5, 1e-4
    for info in op.decorators:
        if getattr(info, "device_type", None) not in (None, "cpu"):
            continue
        for dec in getattr(info, "decorators", [info]):
            d = getattr(dec, "d", None)
            if type(dec).__name__ == "toleranceOverride" and isinstance(d, dict) and torch.float32 in d:
                atol, rtol = max(atol, d[torch.float32].atol), max(rtol, d[torch.float32].rtol)
    return atol, rtol


_LEAF_TYPES = (bool, int, float, complex, str, type(None), slice, type(Ellipsis))


def usable(leaves: list[Any]) -> str | None:
    """Why a sample cannot be used, or None when every leaf is a dense tensor or a plain value."""
    import torch
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            if leaf.layout != torch.strided or leaf.is_quantized or leaf.is_nested or leaf.device.type != "cpu":
                return f"tensor with layout {leaf.layout}"
        elif isinstance(leaf, (torch.dtype, torch.memory_format, torch.layout, torch.device)):
            continue
        elif not isinstance(leaf, _LEAF_TYPES):
            return f"argument of type {type(leaf).__name__}"
    return None


def innermost(e: BaseException) -> BaseException:
    """The exception Dynamo wrapped (BackendCompilerFailed and friends keep it as __cause__)."""
    seen = set()
    while e.__cause__ is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__
    return e


def first_line(e: BaseException) -> str:
    inner = innermost(e)
    text = [t for t in str(inner).strip().splitlines() if t.strip()]
    if len(text) > 1 and text[0].rstrip().endswith("raised:"):  # Dynamo's BackendCompilerFailed
        return text[1].strip()[:300]
    return f"{type(inner).__name__}: {text[0] if text else ''}"[:300]


def flatten(out: Any) -> list[Any]:
    import torch
    from torch.utils._pytree import tree_flatten
    if isinstance(out, torch.Tensor):
        return [out]
    return tree_flatten(out)[0]


def compare(actual: Any, expected: Any, atol: float, rtol: float, shape_only: bool,
            ref64: Any | None) -> str | None:
    """None when the outputs match, else the first line of why not."""
    import torch
    a, e = flatten(actual), flatten(expected)
    if len(a) != len(e):
        return f"{len(a)} outputs, eager has {len(e)}"
    r = flatten(ref64) if ref64 is not None else None
    if r is not None and len(r) != len(e):
        r = None
    for i, (x, y) in enumerate(zip(a, e)):
        if isinstance(y, torch.Tensor):
            if not isinstance(x, torch.Tensor):
                return f"output {i}: {type(x).__name__}, eager has a tensor"
            if x.shape != y.shape or x.dtype != y.dtype:
                return f"output {i}: {x.dtype}{list(x.shape)}, eager {y.dtype}{list(y.shape)}"
            if shape_only:
                continue
            try:
                torch.testing.assert_close(x, y, atol=atol, rtol=rtol, equal_nan=True)
            except AssertionError as err:
                why = str(err).strip().splitlines()
                if r is not None and isinstance(r[i], torch.Tensor) and (x.is_floating_point()):
                    from effc.tolerance import compare_one
                    c = compare_one(i, x, y, r[i])
                    if c.ok:
                        continue
                    return str(c)
                return f"output {i}: " + " ".join(why[:3])[:300]
        else:
            same = x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y)
            if not same and not shape_only:
                return f"output {i}: {x!r}, eager {y!r}"
    return None


def _double(x: Any) -> Any:
    import torch
    return x.double() if isinstance(x, torch.Tensor) and x.dtype == torch.float32 else x


def run_op(op: Any, samples: int, limit_s: int) -> dict[str, Any]:
    """Try the first ``samples`` usable samples of one OpInfo; return its record."""
    import torch
    import torch._dynamo
    from torch.utils._pytree import tree_flatten, tree_unflatten

    import effc
    from effc.dynamo import decompositions

    key = op_key(op)
    rec: dict[str, Any] = {"op": key, "status": "skipped", "samples": 0, "eager_errors": 0,
                           "unusable": 0, "path": None, "externs": {}, "fallbacks": [],
                           "error": None, "stage": None, "cause": None, "shape_only": False}
    if torch.float32 not in op.supported_dtypes("cpu"):
        rec["error"] = "no float32 CPU variant"
        return rec
    atol, rtol = float32_tolerance(op)
    t0 = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit_s)
    paths: set[str] = set()
    try:
        with torch.no_grad():
            it = iter(op.sample_inputs("cpu", torch.float32, requires_grad=False))
            tried = 0
            while tried < samples:
                try:
                    sample = next(it)
                except StopIteration:
                    break
                leaves, spec = tree_flatten((sample.input, sample.args, sample.kwargs))
                why = usable(leaves)
                if why:
                    rec["unusable"] += 1
                    continue
                tensor_pos = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]

                def call(*tensors: Any, _leaves=leaves, _pos=tensor_pos, _spec=spec) -> Any:
                    vals = list(_leaves)
                    for p, t in zip(_pos, tensors):
                        vals[p] = t
                    inp, args, kwargs = tree_unflatten(vals, _spec)
                    return op.op(inp, *args, **kwargs)

                def fresh() -> list[Any]:
                    return [leaves[p].clone() for p in tensor_pos]

                try:
                    torch.manual_seed(0)
                    expected = call(*fresh())
                    torch.manual_seed(1)
                    again = call(*fresh())
                except Exception:
                    rec["eager_errors"] += 1
                    continue
                tried += 1
                shape_only = op.has_nondeterministic_output or op.skip_correctness_check_compile_vs_eager \
                    or compare(again, expected, 0.0, 0.0, False, None) is not None
                rec["shape_only"] = rec["shape_only"] or shape_only
                ref64 = None
                if not shape_only:
                    try:
                        ref64 = call(*[_double(t) for t in fresh()])
                    except Exception:
                        ref64 = None

                torch._dynamo.reset()
                backend = effc.backend()
                compiled = torch.compile(call, backend=backend, fullgraph=False)
                try:
                    torch.manual_seed(0)
                    actual = compiled(*fresh())
                    err = compare(actual, expected, atol, rtol, shape_only, ref64)
                    stage = "mismatch"
                except OpTimeout:
                    raise
                except Exception as e:
                    err = first_line(e)
                    stage = "run" if backend.explain().graphs and not _backend_failed(e) else "compile"
                ex = backend.explain()
                for g in ex.graphs:
                    for name, n in g.externs.items():
                        rec["externs"][name] = rec["externs"].get(name, 0) + n
                    if g.fallback:
                        rec["fallbacks"].append(g.fallback[:200])
                if err is not None:
                    rec.update(status="fail", error=err, stage=stage,
                               cause=attribute(call, fresh, expected, atol, rtol, shape_only, ref64, decompositions))
                    if rec["cause"] == "dynamo":
                        rec["status"] = "dynamo-error"
                    break
                paths.add("fallback" if any(g.fallback for g in ex.graphs) else
                          "extern" if any(g.externs for g in ex.graphs) else
                          "native" if ex.graphs else "no-graph")
            rec["samples"] = tried
    except OpTimeout:
        rec.update(status="fail", error=f"timeout after {limit_s} s", stage="timeout", cause="timeout")
    except Exception as e:  # sample generation itself
        rec.update(status="skipped", error="sample inputs: " + first_line(e))
    finally:
        signal.alarm(0)
        torch._dynamo.reset()
    if rec["status"] == "skipped" and rec["error"] is None:
        if rec["samples"] > 0:
            rec["status"] = "pass"
        elif rec["eager_errors"]:
            rec["status"], rec["error"] = "eager-error", "eager failed on every sample"
        else:
            rec["error"] = "no usable sample" if rec["unusable"] else "no sample inputs"
    if rec["status"] == "pass":
        for p in ("fallback", "extern", "no-graph", "native"):  # the weakest path any sample took
            if p in paths:
                rec["path"] = p
                break
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    return rec


def _backend_failed(e: BaseException) -> bool:
    return type(e).__name__ == "BackendCompilerFailed"


def attribute(call: Any, fresh: Any, expected: Any, atol: float, rtol: float, shape_only: bool,
              ref64: Any, decompositions: Any) -> str:
    """Who is at fault for a failure: "dynamo" when Dynamo alone fails too, "decomposition"
    when AOT autograd with effc's decomposition table and no-op compilers already fails,
    else "effc"."""
    import torch
    import torch._dynamo
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def attempt(backend: Any) -> bool:
        torch._dynamo.reset()
        try:
            torch.manual_seed(0)
            out = torch.compile(call, backend=backend, fullgraph=False)(*fresh())
            return compare(out, expected, atol, rtol, shape_only, ref64) is None
        except OpTimeout:
            raise
        except Exception:
            return False

    if not attempt("eager"):
        return "dynamo"
    nop = lambda gm, _: make_boxed_func(gm.forward)  # noqa: E731
    if not attempt(aot_autograd(fw_compiler=nop, bw_compiler=nop, inference_compiler=nop,
                                decompositions=decompositions())):
        return "decomposition"
    return "effc"


# -- a worker: one shard of the op list, one JSON line per op --------------------------------------

def worker(args: argparse.Namespace) -> None:
    if not args.no_verify:
        os.environ["EFFC_VERIFY"] = "1"  # read once, when effc is imported
    import torch
    torch.set_num_threads(1)
    import logging
    logging.getLogger("effc").setLevel(logging.ERROR)
    import torch._dynamo
    torch._dynamo.config.cache_size_limit = 64
    from torch.testing._internal.common_methods_invocations import op_db
    ops = select(op_db, args)
    done = set()
    if os.path.exists(args.worker_out):
        with open(args.worker_out) as f:
            done = {json.loads(line)["op"] for line in f if line.strip()}
    shard, nshards = (int(x) for x in args.shard.split("/"))
    with open(args.worker_out, "a") as out:
        for i, op in enumerate(ops):
            if i % nshards != shard or op_key(op) in done:
                continue
            with open(args.worker_out + ".current", "w") as cur:
                cur.write(op_key(op))
            try:
                rec = run_op(op, args.samples, args.time_limit)
            except BaseException as e:  # never lose the shard to one op
                rec = {"op": op_key(op), "status": "fail", "error": "harness: " + first_line(e),
                       "stage": "harness", "cause": "effc", "samples": 0, "externs": {}, "fallbacks": []}
                traceback.print_exc()
            out.write(json.dumps(rec) + "\n")
            out.flush()
            print(f"[{shard}] {rec['op']}: {rec['status']} {rec.get('path') or ''} "
                  f"{(rec.get('error') or '')[:120]}", flush=True)


def select(op_db: list, args: argparse.Namespace) -> list:
    ops = list(op_db)
    if args.ops:
        wanted = set(args.ops.split(","))
        ops = [o for o in ops if o.name in wanted or op_key(o) in wanted]
    if args.limit:
        ops = ops[: args.limit]
    return ops


def run_shards(args: argparse.Namespace, tmp: str) -> list[dict[str, Any]]:
    """Run ``args.jobs`` worker processes; restart one that dies, recording the op it was on."""
    outs = [os.path.join(tmp, f"shard{k}.jsonl") for k in range(args.jobs)]
    procs: dict[int, subprocess.Popen] = {}
    last: dict[int, tuple[str, float]] = {}

    def launch(k: int) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker-out", outs[k], "--shard", f"{k}/{args.jobs}",
               "--samples", str(args.samples), "--time-limit", str(args.time_limit)]
        if args.ops:
            cmd += ["--ops", args.ops]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        if args.no_verify:
            cmd += ["--no-verify"]
        procs[k] = subprocess.Popen(cmd, stdout=sys.stdout, stderr=subprocess.DEVNULL)
        last[k] = ("", time.time())

    for k in range(args.jobs):
        launch(k)
    while procs:
        time.sleep(2)
        for k, p in list(procs.items()):
            cur_file = outs[k] + ".current"
            cur = open(cur_file).read() if os.path.exists(cur_file) else ""
            if last[k][0] != cur:
                last[k] = (cur, time.time())
            stuck = time.time() - last[k][1] > 4 * args.time_limit + 60
            rc = p.poll()
            if rc is None and not stuck:
                continue
            if stuck:
                p.kill()
                p.wait()
            del procs[k]
            if rc == 0:
                continue
            done = set()
            if os.path.exists(outs[k]):
                with open(outs[k]) as f:
                    done = {json.loads(line)["op"] for line in f if line.strip()}
            if cur and cur not in done:  # the op that killed or hung the worker
                why = "worker hung (no progress)" if stuck else f"worker process died (exit {rc})"
                with open(outs[k], "a") as f:
                    f.write(json.dumps({"op": cur, "status": "fail", "error": why, "stage": "crash",
                                        "cause": "timeout" if stuck else "crash", "samples": 0,
                                        "externs": {}, "fallbacks": []}) + "\n")
            print(f"[{k}] restarting after {cur}", flush=True)
            launch(k)
    records: list[dict[str, Any]] = []
    for path in outs:
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    order = {}
    from torch.testing._internal.common_methods_invocations import op_db
    for i, o in enumerate(op_db):
        order.setdefault(op_key(o), i)
    records.sort(key=lambda r: order.get(r["op"], 1 << 30))
    return records


# -- the report ----------------------------------------------------------------------------------

def _cause_key(err: str) -> str:
    """Group failure messages: numbers, shapes and quoted names blanked."""
    s = re.sub(r"\[[^\]]*\]", "[..]", err)
    s = re.sub(r"'[^']*'", "'..'", s)
    s = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "N", s)
    return s[:140]


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    status = collections.Counter(r["status"] for r in records)
    paths = collections.Counter(r.get("path") for r in records if r["status"] == "pass")
    fails = [r for r in records if r["status"] == "fail"]
    causes = collections.Counter(_cause_key(r["error"] or "") for r in fails)
    examples: dict[str, list[str]] = collections.defaultdict(list)
    for r in fails:
        examples[_cause_key(r["error"] or "")].append(r["op"])
    fallback_reasons = collections.Counter()
    fallback_examples: dict[str, list[str]] = collections.defaultdict(list)
    for r in records:
        for why in sorted(set(r.get("fallbacks", []))):
            fallback_reasons[why] += 1
            fallback_examples[why].append(r["op"])
    externs = collections.Counter()
    for r in records:
        if r["status"] == "pass":
            for name in r.get("externs", {}):
                externs[name] += 1
    considered = status["pass"] + status["fail"]
    return {
        "ops": len(records),
        "status": dict(status),
        "considered": considered,
        "pass_rate": round(status["pass"] / considered, 4) if considered else None,
        "passing_paths": {k or "none": v for k, v in paths.items()},
        "fail_stage": dict(collections.Counter(r.get("stage") for r in fails)),
        "fail_cause": dict(collections.Counter(r.get("cause") for r in fails)),
        "top_failure_causes": [{"cause": c, "ops": n, "examples": examples[c][:6]} for c, n in causes.most_common(15)],
        "top_externs_in_passing_ops": dict(externs.most_common(25)),
        "fallback_reasons": [{"reason": k, "ops": n, "examples": fallback_examples[k][:6]}
                             for k, n in fallback_reasons.most_common(10)],
    }


def write_markdown(path: str, meta: dict[str, Any], summary: dict[str, Any], records: list[dict[str, Any]]) -> None:
    s = summary
    st = s["status"]
    lines = [
        f"# OpInfo coverage, {meta['date']}, CPU float32",
        "",
        f"Machine: {meta['machine']}. effc {meta['effc']}; {meta['samples']} samples per op at most, "
        f"{meta['time_limit_s']} s per op; IR verifier {'on' if meta['verify'] else 'off'}; wall time {meta['wall_s'] / 60:.1f} min with {meta['jobs']} workers.",
        f"Script: `benchmarks/opinfo_coverage.py`. Raw records: `{os.path.basename(meta['json'])}`. "
        f"effc at commit {meta['effc_tree']['commit'][:10]}"
        + (f" plus {len(meta['effc_tree']['changed'])} uncommitted changed files." if meta['effc_tree']['changed'] else "."),
        "",
        "| OpInfo entries | pass | fail | eager-error (excluded) | dynamo-error (excluded) | skipped |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {s['ops']} | {st.get('pass', 0)} | {st.get('fail', 0)} | {st.get('eager-error', 0)} | "
        f"{st.get('dynamo-error', 0)} | {st.get('skipped', 0)} |",
        "",
        f"Pass rate over pass + fail: **{100 * (s['pass_rate'] or 0):.1f}%**.",
        "",
        "How the passing ops ran: " + ", ".join(f"{k} {v}" for k, v in sorted(s["passing_paths"].items())) +
        " (native: all in effc IR; extern: some nodes call the torch op; fallback: a whole graph ran "
        "in PyTorch; no-graph: Dynamo gave effc no graph).",
        "",
        ("Failures by stage: " + ", ".join(f"{k} {v}" for k, v in sorted(s["fail_stage"].items(), key=str)) +
         "; by who is at fault: " + ", ".join(f"{k} {v}" for k, v in sorted(s["fail_cause"].items(), key=str)) +
         " (decomposition: AOT autograd with effc's decomposition table fails already; effc: only effc fails)."
         if st.get("fail") else "No op failed."),
        "",
    ]
    if s["top_failure_causes"]:
        lines += ["## Top failure causes", "", "| ops | cause (normalized first error line) | examples |",
                  "| --- | --- | --- |"]
    for c in s["top_failure_causes"]:
        lines.append(f"| {c['ops']} | `{c['cause'].replace('|', '/')}` | {', '.join(c['examples'])} |")
    lines += ["" if s["top_failure_causes"] else "", "## Why whole graphs ran in PyTorch (ops counted once per reason)", "",
              "| ops | reason | examples |", "| --- | --- | --- |"]
    for f in s.get("fallback_reasons", []):
        lines.append(f"| {f['ops']} | {f['reason'].replace('|', '/')} | {', '.join(f['examples'])} |")
    lines += ["", "## Most common externs among passing ops", "",
              ", ".join(f"`{k}` ({v})" for k, v in s["top_externs_in_passing_ops"].items()) or "none"]
    if st.get("fail"):
        lines += ["", "## Failing ops", "", "| op | stage | fault | first error line |", "| --- | --- | --- | --- |"]
    for r in records:
        if r["status"] == "fail":
            err = (r.get("error") or "").replace("|", "/").replace("\n", " ")
            lines.append(f"| {r['op']} | {r.get('stage')} | {r.get('cause')} | {err[:220]} |")
    dyn = [r for r in records if r["status"] == "dynamo-error"]
    if dyn:
        lines += ["", "## Dynamo errors (not effc's; excluded)", ""]
        lines += [f"- {r['op']}: {(r.get('error') or '')[:160]}" for r in dyn]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def effc_tree() -> dict[str, Any]:
    """The commit effc was measured at, and its files changed since (the working tree may
    be ahead of the commit)."""
    root = os.path.dirname(HERE)

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = git("status", "--short", "--", "compiler", "ir", "passes", "backends", "codegen")
    return {"commit": git("rev-parse", "HEAD"), "changed": changed.splitlines()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="only the first N OpInfo entries")
    ap.add_argument("--ops", default="", help="comma-separated op names (name or name.variant)")
    ap.add_argument("--out", default="", help="JSON result path (the .md goes beside it)")
    ap.add_argument("--samples", type=int, default=5, help="samples per op (default 5)")
    ap.add_argument("--time-limit", type=int, default=20, help="seconds per op (default 20)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--no-verify", action="store_true",
                    help="do not run effc's IR verifier after every pass (on by default, as in the tests)")
    ap.add_argument("--from-json", default="", help="rewrite the summary and .md of an earlier run's JSON")
    ap.add_argument("--worker-out", default="", help=argparse.SUPPRESS)
    ap.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker_out:
        worker(args)
        return
    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        data["summary"] = summarize(data["ops"])
        with open(args.from_json, "w") as f:
            json.dump(data, f, indent=1)
        write_markdown(os.path.splitext(args.from_json)[0] + ".md", data["meta"], data["summary"], data["ops"])
        return
    import torch
    import effc
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = args.out or os.path.join(RESULTS, f"opinfo_coverage-{date}-cpu.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="opinfo-") as tmp:
        records = run_shards(args, tmp)
    meta = {"date": date, "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}",
            "effc_tree": effc_tree(), "loadavg_1min_end": round(os.getloadavg()[0], 2),
            "torch": torch.__version__, "effc": effc.__version__, "python": platform.python_version(),
            "samples": args.samples, "time_limit_s": args.time_limit, "jobs": args.jobs,
            "verify": not args.no_verify,
            "wall_s": round(time.time() - t0, 1), "json": out,
            "selection": {"ops": args.ops or None, "limit": args.limit or None}}
    summary = summarize(records)
    with open(out, "w") as f:
        json.dump({"meta": meta, "summary": summary, "ops": records}, f, indent=1)
    md = os.path.splitext(out)[0] + ".md"
    write_markdown(md, meta, summary, records)
    print(json.dumps(summary, indent=1))
    print(f"wrote {out} and {md}")


if __name__ == "__main__":
    main()
