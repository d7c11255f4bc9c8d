"""Fusion and memory planning on the benchmark models: what the compiler decided, in figures.

For GPT-2 small and BERT-base (batch 1, sequence 128), ResNet-50 (ONNX's light model, 1x3x224x224)
and a MobileNetV2-style CNN (1x3x224x224), compiled by effc with the default pipeline:

- IR nodes (every node that computes, before fusion) against kernels after fusion;
- bytes moved and predicted time, unfused against fused, from the cost model (roofline at this
  machine's calibrated ceilings when ``effc calibrate`` has run, else the defaults);
- peak activation memory: the planned arena (and each placement strategy's), one allocation
  per value (naive), the liveness lower bound, and eager PyTorch's peak measured on the same
  model and input (``effc.eager_memory``; for ResNet-50, transformers' ``ResNetModel`` with the
  default config, which is ResNet-50);
- for the MobileNetV2-style CNN, patch-based scheduling (MCUNetV2): the smallest peak over every
  stage end and tile grid the scheduler considers, planned in full, and the patched program's
  output checked against the layer-by-layer one.

These are compiler figures (sizes and predictions), not timings; nothing here is timed.

    python benchmarks/fusion_memory.py        # writes benchmarks/results/fusion_memory-<date>-cpu.{json,md}
    python benchmarks/fusion_memory.py --models mobilenetv2 --size 96 --out /tmp/fm.json
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import effc  # noqa: E402
import models  # noqa: E402
from results_io import write_results  # noqa: E402
from effc.eager_memory import eager_peak_bytes  # noqa: E402

MODELS = ("gpt2-small", "bert-base", "resnet-50", "mobilenetv2")


def _graph_figures(g: Any) -> dict[str, Any]:
    return {"fusion": dict(g.fusion), "memory": dict(g.memory), "compile_seconds": g.compile_seconds}


def _merge(graphs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several graphs (a graph break) add up; one graph is itself."""
    if len(graphs) == 1:
        return graphs[0]
    out: dict[str, Any] = {"fusion": {}, "memory": {}, "graphs": graphs}
    for key in ("ir_nodes", "kernels", "bytes_unfused", "bytes_fused", "activation_bytes_unfused",
                "activation_bytes_fused", "seconds_unfused", "seconds_fused"):
        out["fusion"][key] = sum(g["fusion"][key] for g in graphs)
    for key in ("arena", "scratch", "naive", "lower_bound"):
        out["memory"][key] = max(g["memory"][key] for g in graphs)
    return out


def torch_model(name: str, size: int) -> dict[str, Any]:
    build = models.TORCH_MODELS[name]
    model, args = build(size) if name == "mobilenetv2" else build()
    torch._dynamo.reset()
    with torch.no_grad():
        eager = eager_peak_bytes(model, *args)
        t0 = time.perf_counter()
        compiled = effc.compile(model, args)
        seconds = time.perf_counter() - t0
        ref, out = model(*args), compiled(*args)
    row = _merge([_graph_figures(g) for g in compiled.explain().graphs])
    row.update(eager_peak=eager, compile_wall_seconds=seconds, max_abs_diff=_diff(ref, out))
    return row


def resnet50() -> dict[str, Any]:
    import transformers
    t0 = time.perf_counter()
    m = effc.compile(models.resnet50_onnx())
    seconds = time.perf_counter() - t0
    row = _graph_figures(m.report)
    torch.manual_seed(0)
    eager_model = transformers.ResNetModel(transformers.ResNetConfig()).eval()
    with torch.no_grad():
        row["eager_peak"] = eager_peak_bytes(eager_model, torch.randn(1, 3, 224, 224))
    row.update(compile_wall_seconds=seconds, eager_model="transformers ResNetModel(ResNetConfig())")
    return row


def _diff(a: Any, b: Any) -> float:
    ta = [t for t in _leaves(a) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    tb = [t for t in _leaves(b) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return max((float((x - y).abs().max()) for x, y in zip(ta, tb)), default=0.0)


def _leaves(x: Any) -> list[Any]:
    if hasattr(x, "to_tuple"):
        x = x.to_tuple()
    return torch.utils._pytree.tree_leaves(x)


def patch_search(size: int) -> dict[str, Any]:
    """The smallest peak patch-based scheduling reaches on the MobileNetV2-style CNN."""
    from effc.ir.kernel_node import inline_kernels
    from effc.passes import fuse
    from effc.passes.memory_budget import total_bytes
    from effc.passes.plan_memory import live_peak
    from effc.passes.schedule_patches import candidates

    model, args = models.mobilenet_v2(size)
    torch._dynamo.reset()
    compiled = effc.compile(model, args)
    g = compiled.explain().graphs[0]
    layer_by_layer = g.memory["arena"]
    flat = inline_kernels(g.graph, lambda k: k.attrs["kind"] in ("conv", "pointwise"))
    t0 = time.perf_counter()
    cands, _ = candidates(flat, {}, lambda c: live_peak(c, {}))
    # the candidates' bound is cheap; plan the best few in full, fused as the compiler would
    best = []
    for c in sorted(cands, key=lambda c: c.peak)[:8]:
        fused = fuse.run(c.graph, compiled.options).graph
        best.append((min(total_bytes(fused, {}), total_bytes(c.graph, {})), c))
    peak, chosen = min(best, key=lambda b: b[0])
    search_seconds = time.perf_counter() - t0
    # the patched program computes what the layer-by-layer one does
    from effc.backends.reference import ReferenceProgram
    x = args[0]
    got = ReferenceProgram(chosen.graph)(x)[0]
    want = ReferenceProgram(g.graph)(x)[0]
    return {"size": size, "layer_by_layer_arena": layer_by_layer, "smallest_patched_peak": peak,
            "reduction": layer_by_layer / peak, "schedule": chosen.label,
            "recompute_flops_pct": 100 * chosen.recompute / max(1, chosen.stage_flops),
            "candidates": len(cands), "search_seconds": search_seconds,
            "max_abs_diff_vs_layer_by_layer": float((got - want).abs().max())}


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Fusion and memory planning, {result['date']}", "",
             f"Machine: {result['machine']}. torch {result['torch']}. Cost model target: {result['target']}.",
             f"Reproduce: `{result['command']}`", "",
             "| model | IR nodes | kernels | bytes moved unfused | fused | of which activations, unfused | "
             "fused | predicted unfused | fused |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["models"].items():
        f = r["fusion"]
        lines.append(
            f"| {name} | {f['ir_nodes']} | {f['kernels']} | {_mib(f['bytes_unfused'])} | {_mib(f['bytes_fused'])} "
            f"| {_mib(f['activation_bytes_unfused'])} | {_mib(f['activation_bytes_fused'])} "
            f"| {f['seconds_unfused'] * 1e3:.2f} ms | {f['seconds_fused'] * 1e3:.2f} ms |")
    lines += ["", "| model | arena (chosen) | greedy_by_size | first_fit | naive | lower bound | eager PyTorch "
              "| arena / naive | arena / eager |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["models"].items():
        m = r["memory"]
        s = m.get("strategies", {})
        lines.append(
            f"| {name} | {_mib(m['arena'])} ({m.get('strategy', '-')}) | {_mib(s['greedy_by_size']) if s else '-'} "
            f"| {_mib(s['first_fit']) if s else '-'} | {_mib(m['naive'])} | {_mib(m['lower_bound'])} "
            f"| {_mib(r['eager_peak'])} | {m['arena'] / m['naive']:.2f}x | {m['arena'] / r['eager_peak']:.2f}x |")
    p = result.get("patches")
    if p:
        lines += ["", f"MobileNetV2-style CNN at {p['size']}x{p['size']}, patch-based scheduling: "
                  f"layer-by-layer arena {_mib(p['layer_by_layer_arena'])}, smallest patched peak "
                  f"{_mib(p['smallest_patched_peak'])} (arena plus tile scratch), "
                  f"{p['reduction']:.2f}x lower, with {p['schedule']}; recomputes "
                  f"{p['recompute_flops_pct']:.0f}% of the stage's FLOPs; {p['candidates']} schedules "
                  f"searched in {p['search_seconds']:.1f} s; patched vs layer-by-layer max |diff| "
                  f"{p['max_abs_diff_vs_layer_by_layer']:.2e}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--size", type=int, default=224, help="MobileNetV2 input size")
    ap.add_argument("--out", help="JSON path (default: benchmarks/results/fusion_memory-<date>-cpu.json)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from effc.costmodel import current_target
    date = datetime.date.today().isoformat()
    result: dict[str, Any] = {
        "date": date, "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or ''}".strip(", "),
        "torch": torch.__version__, "target": current_target().name,
        "command": "python benchmarks/fusion_memory.py " + " ".join(sys.argv[1:]), "models": {}}
    for name in args.models.split(","):
        print(f"{name} ...", flush=True)
        result["models"][name] = resnet50() if name == "resnet-50" else torch_model(name, args.size)
    if "mobilenetv2" in args.models:
        print("patch search ...", flush=True)
        result["patches"] = patch_search(args.size)
    write_results("fusion_memory", result, markdown, args.out)


if __name__ == "__main__":
    main()
