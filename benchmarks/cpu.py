"""CPU inference: effc's C target against eager PyTorch, TorchInductor and ONNX Runtime.

In one process, 2 threads for everyone (torch.set_num_threads, OMP_NUM_THREADS, ONNX Runtime's
intra-op threads; ONNX Runtime's workers do not spin), float32, medians of ``--runs`` calls
after warm-up, timed in rounds (each round gives every system two untimed calls and then up
to five timed ones: ``interleaved_medians``), on:
  mlp          1024-4096-1024 with GELU, batch 64
  bert-base    transformers BertModel(BertConfig()), batch 1, sequence 128
  gpt2-small   transformers GPT2Model(GPT2Config()), batch 1, sequence 128
  resnet-50    transformers ResNetModel(ResNetConfig()) (ResNet-50), 1x3x224x224
  mobilenetv2  benchmarks/models.py's MobileNetV2-style CNN, 1x3x224x224
and a 1024^3 float32 matmul (effc's one-kernel program against torch.mm). ONNX Runtime runs
the model exported with torch.onnx's TorchScript exporter. Every system's output is compared
with eager's (max abs difference, reported). Random weights; inputs fixed by seed.

    OMP_NUM_THREADS=2 python benchmarks/cpu.py                   # writes benchmarks/results/cpu-<date>-cpu.{json,md}
    python benchmarks/cpu.py --models mlp --runs 10 --out /tmp/cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import effc  # noqa: E402
import models  # noqa: E402
from results_io import write_results  # noqa: E402

THREADS = 2


def mlp() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 1024)).eval()
    return m, (torch.randn(64, 1024),)


def resnet50() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    import transformers
    torch.manual_seed(0)
    return transformers.ResNetModel(transformers.ResNetConfig()).eval(), (torch.randn(1, 3, 224, 224),)


MODELS: dict[str, Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...]]]] = {
    "mlp": mlp, "bert-base": models.bert_base, "gpt2-small": models.gpt2_small,
    "resnet-50": resnet50, "mobilenetv2": models.mobilenet_v2}


def interleaved_medians(systems: dict[str, Callable[[], Any]], runs: int, warmup: int = 3,
                        block: int = 5, settle: int = 2) -> dict[str, float]:
    """Median seconds per system over ``runs`` timed calls, taken in rounds so that a change in
    the machine's load hits every system alike: per round and system, ``settle`` untimed calls,
    then up to ``block`` timed calls in a row.

    Rounds of several calls, not one call each in turn: each system has its own thread pool
    (torch's OpenMP, the OpenMP of effc's shared objects, ONNX Runtime's spinning workers), and
    a pool keeps its threads busy for a while after its call returns. Alternating call by call,
    every call shared the two cores with the previous system's threads: measured on
    MobileNetV2, eager 30.8 -> 60.0 ms, ONNX Runtime 7.0 -> 15.6, effc 17.3 -> 42.8."""
    for fn in systems.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in systems}
    while any(len(ts) < runs for ts in times.values()):
        for name, fn in systems.items():
            for _ in range(settle):
                fn()
            for _ in range(min(block, runs - len(times[name]))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def onnxruntime_runner(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> Callable[[], Any]:
    import onnxruntime
    f = io.BytesIO()
    names = [f"in{i}" for i in range(len(args))]
    torch.onnx.export(model, args, f, input_names=names, output_names=["out"], dynamo=False,
                      opset_version=17)
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    # ONNX Runtime's workers spin after a run; sharing two cores with the other systems' pools,
    # that spinning took time from whoever ran next (MobileNetV2: effc 19.6 ms after ONNX Runtime
    # without spinning, 28.8 with), and ONNX Runtime itself measured no slower without it
    # (8.7 ms against 11.0 in the same rounds)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = onnxruntime.InferenceSession(f.getvalue(), opts, providers=["CPUExecutionProvider"])
    feeds = {n: a.numpy() for n, a in zip(names, args)}
    return lambda: torch.from_numpy(sess.run(None, feeds)[0])


def bench_model(name: str, runs: int) -> dict[str, Any]:
    model, args = MODELS[name]()
    model = models.Plain(model).eval()
    row: dict[str, Any] = {"systems": {}}
    with torch.no_grad():
        want = model(*args)
        systems: dict[str, Callable[[], Any]] = {"eager": lambda: model(*args)}
        t0 = time.perf_counter()
        torch._dynamo.reset()
        inductor = torch.compile(model)
        inductor(*args)
        row["inductor_compile_seconds"] = time.perf_counter() - t0
        systems["inductor"] = lambda: inductor(*args)
        try:
            systems["onnxruntime"] = onnxruntime_runner(model, args)
        except Exception as e:  # noqa: BLE001 - reported in the results, the run goes on
            row["onnxruntime_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        torch._dynamo.reset()
        t0 = time.perf_counter()
        compiled = effc.compile(model, args, target="c")
        row["effc_compile_seconds"] = time.perf_counter() - t0
        systems["effc"] = lambda: compiled(*args)
        g = compiled.explain().graphs
        row["effc_python_kernels"] = sum(len(x.python_kernels) for x in g)
        row["effc_kernels"] = sum(x.fusion.get("kernels", 0) for x in g)
        row["effc_own_compile_seconds"] = sum(x.compile_seconds for x in g)
        medians = interleaved_medians(systems, runs)
        for sys_name, fn in systems.items():
            out = fn()
            diff = float((out.float() - want.float()).abs().max())
            row["systems"][sys_name] = {"median_seconds": medians[sys_name], "max_abs_diff": diff}
    eager = row["systems"]["eager"]["median_seconds"]
    for r in row["systems"].values():
        r["speedup_over_eager"] = eager / r["median_seconds"]
    return row


def bench_matmul(runs: int) -> dict[str, Any]:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    compiled = effc.compile(lambda x, y: x @ y, (a, b), target="c")
    med = interleaved_medians({"torch": lambda: torch.mm(a, b), "effc": lambda: compiled(a, b)}, runs)
    torch_s, effc_s = med["torch"], med["effc"]
    flops = 2 * 1024**3
    return {"torch_mm_gflops": flops / torch_s / 1e9, "effc_gflops": flops / effc_s / 1e9,
            "ratio": torch_s / effc_s,
            "max_abs_diff": float((compiled(a, b) - a @ b).abs().max())}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# CPU inference, {result['date']}", "",
             f"Machine: {result['machine']}; {THREADS} threads; torch {result['torch']}; "
             f"onnxruntime {result.get('onnxruntime')}.", f"Reproduce: `{result['command']}`", "",
             "| model | eager | inductor | onnxruntime | effc (c) | effc / eager | effc / inductor | "
             "effc / onnxruntime | kernels in Python | effc max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["models"].items():
        s = r["systems"]
        ms = {k: f"{v['median_seconds'] * 1e3:.2f} ms" for k, v in s.items()}
        e = s["effc"]["median_seconds"]
        ort = s.get("onnxruntime")
        lines.append(f"| {name} | {ms['eager']} | {ms['inductor']} | {ms.get('onnxruntime', 'failed')} | "
                     f"{ms['effc']} | {s['eager']['median_seconds'] / e:.2f}x | "
                     f"{s['inductor']['median_seconds'] / e:.2f}x | "
                     f"{(ort['median_seconds'] / e) if ort else float('nan'):.2f}x | "
                     f"{r['effc_python_kernels']} | {s['effc']['max_abs_diff']:.1e} |")
    m = result.get("matmul")
    if m:
        lines += ["", f"1024^3 float32 matmul: effc {m['effc_gflops']:.1f} GFLOP/s, torch.mm "
                  f"{m['torch_mm_gflops']:.1f} GFLOP/s ({m['ratio']:.2f}x of torch.mm)."]
    speedups = [r["systems"]["eager"]["median_seconds"] / r["systems"]["effc"]["median_seconds"]
                for r in result["models"].values()]
    if speedups:
        geo = 1.0
        for x in speedups:
            geo *= x
        lines += ["", f"Geomean speedup of effc over eager: {geo ** (1 / len(speedups)):.2f}x."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-matmul", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    import onnxruntime
    date = datetime.date.today().isoformat()
    result: dict[str, Any] = {"date": date, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                              "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                              "command": "python benchmarks/cpu.py " + " ".join(sys.argv[1:]), "models": {}}
    for name in args.models.split(","):
        print(f"{name} ...", flush=True)
        result["models"][name] = bench_model(name, args.runs)
    if not args.no_matmul:
        result["matmul"] = bench_matmul(args.runs)
    write_results("cpu", result, markdown, args.out)


if __name__ == "__main__":
    main()
