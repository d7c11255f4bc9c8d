"""GPU inference (issue 6): effc's Triton target against eager PyTorch and TorchInductor.

In one process, on one CUDA device, fp16, random weights built from code (no downloads):
  gpt2         transformers GPT2Model(GPT2Config()), batch 8, sequence 512
  bert         transformers BertModel(BertConfig()), batch 32, sequence 128
  resnet50     torchvision resnet50(weights=None), 64x3x224x224
  mobilenetv3  torchvision mobilenet_v3_large(weights=None), 64x3x224x224
Each system (eager; TorchInductor, ``torch.compile`` defaults; effc, ``target="triton"``) is
compiled and warmed up, then timed over ``--runs`` calls with CUDA events: medians, compile
seconds, ratios over eager, and the output's largest difference from eager's (relative to
eager's largest magnitude). effc's row also counts its kernels and the kernels that fell back
to torch ops (what the Triton generators do not cover yet); a model effc cannot lower at all
still runs and says so. A system that fails records its error and the run goes on.
Plus one kernel: LayerNorm over 8192x4096 fp16, each system's time as a share of the
bandwidth floor (bytes read and written at the copy bandwidth measured in the same run).

    python benchmarks/gpu.py                                         # benchmarks/results/gpu-<date>-<gpu>.{json,md}
    python benchmarks/gpu.py --models gpt2 --runs 10 --out /tmp/gpu.json
    python benchmarks/gpu.py --models gpt2,bert --batch 8 --seq 1024 --no-layer-norm   # issue 7's whole models
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
import traceback
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import effc  # noqa: E402
import models  # noqa: E402
from cuda_timing import median_ms  # noqa: E402
from results_io import RESULTS, write_results  # noqa: E402

Model = tuple[torch.nn.Module, tuple[torch.Tensor, ...]]


# (batch, sequence) of the transformer models; --batch / --seq override both
SHAPES = {"gpt2": (8, 512), "bert": (32, 128)}


def gpt2() -> Model:
    import transformers
    torch.manual_seed(0)
    m = transformers.GPT2Model(transformers.GPT2Config())
    return m, (torch.randint(0, 50257, SHAPES["gpt2"]),)


def bert() -> Model:
    import transformers
    torch.manual_seed(0)
    # BERT-base; longer sequences than its 512 positions get a longer position table
    m = transformers.BertModel(transformers.BertConfig(max_position_embeddings=max(512, SHAPES["bert"][1])))
    return m, (torch.randint(0, 30522, SHAPES["bert"]),)


def resnet50() -> Model:
    import torchvision
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None), (torch.randn(64, 3, 224, 224),)


def mobilenetv3() -> Model:
    import torchvision
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_large(weights=None), (torch.randn(64, 3, 224, 224),)


MODELS: dict[str, Callable[[], Model]] = {"gpt2": gpt2, "bert": bert, "resnet50": resnet50,
                                          "mobilenetv3": mobilenetv3}


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def _effc_counts(compiled: Any) -> dict[str, Any]:
    graphs = compiled.explain().graphs
    fell = {k: v for g in graphs for k, v in g.python_kernels.items()}
    return {"effc_graphs": len(graphs),
            "effc_targets": sorted({g.target for g in graphs}),
            "effc_graph_fallbacks": [g.fallback for g in graphs if g.fallback],
            "effc_kernels": sum(g.fusion.get("kernels", 0) for g in graphs if g.fusion),
            "effc_python_kernels": len(fell),
            "effc_python_kernel_reasons": dict(list(fell.items())[:20])}


def kernel_profile(fn: Callable[[], Any], calls: int = 5, top: int = 12) -> list[dict[str, Any]]:
    """The GPU kernels of ``calls`` calls under torch.profiler, most device time first: name,
    launches per call and microseconds per call (where a compiled model spends its time)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages() if e.device_time_total > 0]
    rows.sort(key=lambda e: -e.device_time_total)
    return [{"kernel": e.key[:90], "launches": e.count / calls, "us": e.device_time_total / calls}
            for e in rows[:top]]


def bench_model(name: str, runs: int, autotune: bool, profile: bool = False) -> dict[str, Any]:
    try:
        model, args = MODELS[name]()
    except Exception as e:  # noqa: BLE001 - a missing package (torchvision): recorded, the run goes on
        return {"systems": {}, "error": _error(e)}
    model = models.Plain(model).eval().half().cuda()
    args = tuple(a.half().cuda() if a.is_floating_point() else a.cuda() for a in args)
    row: dict[str, Any] = {"systems": {}}
    with torch.no_grad():
        want = model(*args).float()
        scale = float(want.abs().max()) or 1.0
        row["output_max_abs"] = float(want.abs().max())   # 0: an all-zero output checks nothing
        builders: dict[str, Callable[[], Callable[[], Any]]] = {
            "eager": lambda: (lambda: model(*args)),
            "inductor": lambda: _compiled(torch.compile(model), args),
            "effc": lambda: _effc(model, args, row, autotune),
        }
        for sys_name, make in builders.items():
            torch._dynamo.reset()
            entry: dict[str, Any] = {}
            try:
                t0 = time.perf_counter()
                fn = make()
                fn()
                torch.cuda.synchronize()
                entry["compile_seconds"] = time.perf_counter() - t0
                out = fn().float()
                entry["max_abs_diff"] = float((out - want).abs().max())
                entry["max_rel_diff"] = entry["max_abs_diff"] / scale
                entry["median_ms"] = median_ms(fn, runs)
                if profile:
                    entry["profile"] = kernel_profile(fn)
            except Exception as e:  # noqa: BLE001 - recorded; the other systems still run
                entry["error"] = _error(e)
                traceback.print_exc()
            row["systems"][sys_name] = entry
            print(f"  {sys_name}: {entry}", flush=True)
    eager = row["systems"]["eager"].get("median_ms")
    for r in row["systems"].values():
        if eager and r.get("median_ms"):
            r["speedup_over_eager"] = eager / r["median_ms"]
    return row


def _compiled(fn: Callable, args: tuple) -> Callable[[], Any]:
    return lambda: fn(*args)


def _effc(model: torch.nn.Module, args: tuple, row: dict[str, Any], autotune: bool) -> Callable[[], Any]:
    compiled = effc.compile(model, args, target="triton", autotune=autotune)
    row.update(_effc_counts(compiled))
    return lambda: compiled(*args)


def bench_layer_norm(runs: int) -> dict[str, Any]:
    """LayerNorm 8192x4096 fp16: each system's time against the bandwidth floor."""
    rows, cols = 8192, 4096
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(cols).half().cuda().eval()
    x = torch.randn(rows, cols, device="cuda", dtype=torch.float16)
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_ms = median_ms(lambda: dst.copy_(src), runs)
    bandwidth = 2 * src.numel() / (copy_ms * 1e-3)           # read + write, bytes per second
    moved = 2 * x.numel() * 2 + 2 * cols * 2                  # x in, y out, weight and bias
    floor_ms = moved / bandwidth * 1e3
    out: dict[str, Any] = {"shape": [rows, cols], "copy_bandwidth_tb_s": bandwidth / 1e12,
                           "bytes_moved": moved, "floor_ms": floor_ms, "systems": {}}
    with torch.no_grad():
        want = ln(x).float()
        makers: dict[str, Callable[[], Callable[[], Any]]] = {
            "eager": lambda: (lambda: ln(x)),
            "inductor": lambda: _compiled(torch.compile(ln), (x,)),
            "effc": lambda: _effc_layer_norm_kernel(ln, x),
            "effc_program": lambda: _compiled(effc.compile(ln, (x,), target="triton"), (x,)),
        }
        for name, make in makers.items():
            torch._dynamo.reset()
            try:
                fn = make()
                got = fn()
                got = (got[0] if isinstance(got, (tuple, list)) else got).float()
                ms = median_ms(fn, runs)
                out["systems"][name] = {"median_ms": ms, "share_of_floor": floor_ms / ms,
                                        "max_abs_diff": float((got - want).abs().max())}
            except Exception as e:  # noqa: BLE001
                out["systems"][name] = {"error": _error(e)}
                traceback.print_exc()
            print(f"  layer_norm {name}: {out['systems'][name]}", flush=True)
    return out


def _effc_layer_norm_kernel(ln: torch.nn.LayerNorm, x: torch.Tensor) -> Callable[[], Any]:
    """The one kernel effc generates for ``ln``, launched by itself on preallocated tensors
    (the ``effc_program`` row adds the program's input copy and output clone)."""
    from effc.backends.triton.autotune import pick_config
    from effc.backends.triton.build import load
    from effc.codegen.triton import generate
    from effc.costmodel.triton_configs import gpu_target
    from effc.ir import DType, GraphBuilder, Op, TensorType
    from effc.ir.kernel_lower import lower
    from effc.options import Options
    from effc.passes import fuse

    b = GraphBuilder()
    h = DType.F16
    ins = [b.input(n, TensorType(h, s)) for n, s in (("x", tuple(x.shape)), ("w", (x.shape[1],)), ("b", (x.shape[1],)))]
    g = b.build([b.op(Op.LAYER_NORM, ins, normalized_shape=(x.shape[1],), eps=ln.eps, has_weight=True,
                      has_bias=True)])
    node = next(n for n in fuse.run(g, Options()).graph.nodes if n.op is Op.KERNEL)
    kernel = lower(node)
    config = pick_config(kernel, {}, gpu_target(x.device), x.device, autotune=True)
    entry = load(generate(kernel, kernel.name, config)).entry
    y = torch.empty_like(x)
    order = {n.name: t for n, t in zip(ins, (x, ln.weight, ln.bias))}
    inputs = [order[v.name] for v in node.inputs]   # the kernel's buffers are the node's inputs, in order

    def run() -> torch.Tensor:
        entry(inputs, [y], [])
        return y
    return run


def _version(package: str) -> str | None:
    try:
        return __import__(package).__version__
    except ImportError:
        return None


def _fmt(v: Any, spec: str, unit: str = "") -> str:
    return f"{v:{spec}}{unit}" if isinstance(v, (int, float)) else "failed"


def bench_overhead(calls: int = 300) -> dict[str, Any]:
    """Host time per call of a tiny model (two 64-wide fp16 linears, batch 1): what each
    system's Python side costs when the GPU work is negligible. Wall time of ``calls`` calls
    issued back to back, then one synchronize."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 64)).half().cuda().eval()
    x = torch.randn(1, 64, device="cuda", dtype=torch.float16)
    out: dict[str, Any] = {}
    with torch.no_grad():
        makers: dict[str, Callable[[], Callable[[], Any]]] = {
            "eager": lambda: (lambda: m(x)),
            "inductor": lambda: _compiled(torch.compile(m), (x,)),
            "effc": lambda: _compiled(effc.compile(m, (x,), target="triton"), (x,)),
            "effc_no_cuda_graph": lambda: _compiled(effc.compile(m, (x,), target="triton", cuda_graphs=False), (x,)),
        }
        for name, make in makers.items():
            torch._dynamo.reset()
            try:
                fn = make()
                for _ in range(20):
                    fn()
                torch.cuda.synchronize()
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        fn()
                    torch.cuda.synchronize()
                    times.append((time.perf_counter() - t0) / calls * 1e6)
                out[name] = {"us_per_call": statistics.median(times)}
            except Exception as e:  # noqa: BLE001 - recorded; the others still run
                out[name] = {"error": _error(e)}
            print(f"  overhead {name}: {out[name]}", flush=True)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# GPU inference, {result['date']}", "",
             f"Device: {result['device']}; torch {result['torch']}; triton {result['triton']}; "
             f"transformers {result.get('transformers')}; fp16; "
             f"medians of {result['runs']} CUDA-event-timed calls.", f"Reproduce: `{result['command']}`", "",
             "| model | eager | inductor | effc (triton) | inductor / eager | effc / eager | effc / inductor | "
             "compile inductor / effc | effc kernels | fell back to torch | effc max rel diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["models"].items():
        s = r["systems"]
        e, i, f = (s.get(k, {}) for k in ("eager", "inductor", "effc"))
        ratio = (i["median_ms"] / f["median_ms"]) if i.get("median_ms") and f.get("median_ms") else None
        lines.append(
            f"| {name} | {_fmt(e.get('median_ms'), '.2f', ' ms')} | {_fmt(i.get('median_ms'), '.2f', ' ms')} | "
            f"{_fmt(f.get('median_ms'), '.2f', ' ms')} | {_fmt(i.get('speedup_over_eager'), '.2f', 'x')} | "
            f"{_fmt(f.get('speedup_over_eager'), '.2f', 'x')} | {_fmt(ratio, '.2f', 'x')} | "
            f"{_fmt(i.get('compile_seconds'), '.1f', ' s')} / {_fmt(f.get('compile_seconds'), '.1f', ' s')} | "
            f"{r.get('effc_kernels', '?')} | {r.get('effc_python_kernels', '?')} | "
            f"{_fmt(f.get('max_rel_diff'), '.1e')} |")
    for name, r in result["models"].items():
        if r.get("output_max_abs") == 0:
            lines.append(f"\n{name}: eager's output is all zeros (random weights in fp16), so its "
                         "max rel diff column checks nothing.")
        errs = {k: v["error"] for k, v in r["systems"].items() if "error" in v}
        if r.get("error"):
            errs["model"] = r["error"]
        if errs:
            lines.append(f"\n{name} errors: " + "; ".join(f"{k}: {v}" for k, v in errs.items()))
        if r.get("effc_python_kernel_reasons"):
            lines.append(f"\n{name}, kernels effc ran as torch ops: "
                         + "; ".join(f"{k}: {v}" for k, v in list(r["effc_python_kernel_reasons"].items())[:8]))
    for name, r in result["models"].items():
        for sys_name, s in r["systems"].items():
            if s.get("profile"):
                lines += ["", f"{name}, {sys_name}: costliest GPU kernels per call", "",
                          "| kernel | launches | us |", "|---|---|---|"]
                lines += [f"| `{k['kernel']}` | {k['launches']:g} | {k['us']:.0f} |" for k in s["profile"]]
    ln = result.get("layer_norm")
    oh = result.get("overhead")
    if oh:
        lines += ["", "Per-call host time of a tiny model (two 64-wide linears, batch 1): "
                  + ", ".join(f"{k} {_fmt(v.get('us_per_call'), '.1f', ' us')}" for k, v in oh.items()) + "."]
    if ln:
        lines += ["", f"LayerNorm {ln['shape'][0]}x{ln['shape'][1]} fp16: bandwidth floor "
                  f"{ln['floor_ms'] * 1e3:.1f} us at the measured copy bandwidth {ln['copy_bandwidth_tb_s']:.2f} TB/s."]
        lines += ["", "| system | time | share of the floor |", "|---|---|---|"]
        for k, v in ln["systems"].items():
            lines.append(f"| {k} | {_fmt(v.get('median_ms', None) and v['median_ms'] * 1e3, '.1f', ' us')} | "
                         f"{_fmt(v.get('share_of_floor'), '.0%')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--no-layer-norm", action="store_true", help="skip the layer-norm and per-call overhead figures")
    ap.add_argument("--autotune", action="store_true", help="effc measures its top launch configs")
    ap.add_argument("--batch", type=int, help="batch of gpt2 and bert (default 8 and 32)")
    ap.add_argument("--seq", type=int, help="sequence of gpt2 and bert (default 512 and 128)")
    ap.add_argument("--profile", action="store_true", help="also list each system's costliest GPU kernels")
    ap.add_argument("--out", help="the JSON path (markdown beside it)")
    args = ap.parse_args()
    for k, (b, n) in SHAPES.items():
        SHAPES[k] = (args.batch or b, args.seq or n)
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA device")
    import triton
    date = datetime.date.today().isoformat()
    device = torch.cuda.get_device_name(0)
    result: dict[str, Any] = {"date": date, "device": device, "torch": torch.__version__,
                              "triton": triton.__version__,
                              "transformers": _version("transformers"), "runs": args.runs, "shapes": dict(SHAPES),
                              "command": "python benchmarks/gpu.py " + " ".join(sys.argv[1:]), "models": {}}
    names = [m for m in args.models.split(",") if m]   # --models "": the kernel figures only
    bad = [m for m in names if m not in MODELS]
    if bad:
        sys.exit(f"unknown models {bad}; choose from {', '.join(MODELS)}")
    for name in names:
        print(f"{name} ...", flush=True)
        result["models"][name] = bench_model(name, args.runs, args.autotune, args.profile)
    if not args.no_layer_norm:
        print("per-call overhead ...", flush=True)
        result["overhead"] = bench_overhead()
        print("layer_norm ...", flush=True)
        result["layer_norm"] = bench_layer_norm(args.runs)
    tag = "".join(c if c.isalnum() else "-" for c in device.lower().replace("nvidia ", ""))[:20]
    write_results("gpu", result, markdown, args.out or os.path.join(RESULTS, f"gpu-{date}-{tag}.json"))


if __name__ == "__main__":
    main()
