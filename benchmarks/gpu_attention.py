"""GPU benchmark of the Triton attention kernels (codegen/triton_attention.py) against torch.

    python benchmarks/gpu_attention.py --out results/gpu_attention-h200.json [--configs 4]

Prefill: B=8, H=16, S=4096, D=128, fp16, causal and not: effc's forward kernel with each of
the cost model's top ``--configs`` tiles (the first ``--tma-configs`` also through tensor
descriptors), torch SDPA restricted to its flash backend, and the
naive matmul-softmax-matmul; TFLOP/s (4*B*H*Sq*Sk*D, halved when causal) and peak memory.
Decode: one query, B=8, H=32, D=128, fp16, KV 8k/16k/32k (plus GQA 32/8 heads at 32k): the
split-KV kernel with the top decode configs and a few fixed split counts, torch SDPA; achieved
bandwidth (K, V, q and out bytes over the time) against the 4.1 TB/s copy ceiling.
Every effc variant's output is checked against torch's (relative L2 error) before it is timed.
Timing: CUDA events around each call, median of ``--reps`` after warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F


from cuda_timing import median_ms  # noqa: E402
from effc.codegen.triton_attention import attention_problem, generate_attention  # noqa: E402
from effc.costmodel.triton_attention_configs import (DecodeConfig, rank_attention_configs,  # noqa: E402
                                                      rank_decode_configs)
from effc.ir import DType, GraphBuilder, Op, TensorType  # noqa: E402
from effc.ir.kernel_lower import lower  # noqa: E402
from effc.ir.kernel_node import add_kernel, extract_body  # noqa: E402

COPY_BW = 4.1e12
FLASH = {"non-causal": 586.0, "causal": 515.0}   # DESIGN.md anchors, TFLOP/s
TMP = Path(tempfile.mkdtemp(prefix="effc_att_"))
DEV = "cuda"
SIZES = {"prefill": (8, 16, 4096, 128), "decode": (8, 32, 128, (8192, 16384, 32768))}


def kernel(q: tuple, kv: tuple, causal: bool = False, gqa: bool = False) -> Any:
    b = GraphBuilder()
    ins = [b.input(r, TensorType(DType.F16, s)) for r, s in (("q", q), ("k", kv), ("v", kv))]
    g = b.build([b.op(Op.SDPA, ins, scale=None, is_causal=causal, enable_gqa=gqa)])
    body, vals = extract_body(g.nodes, g.outputs)
    outer = GraphBuilder()
    return lower(add_kernel(outer, "op", "att", [outer.input(x.name or "x", x.type) for x in vals], body))


def load(src: Any) -> Callable:
    path = TMP / f"{src.name}_{abs(hash(src.source))}.py"
    path.write_text(src.source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, src.entry)


def bench(fn: Callable[[], Any], reps: int, warmup: int = 3) -> tuple[float, float]:
    """(median seconds, peak GiB allocated during one call)."""
    for _ in range(warmup):
        fn()
    if DEV == "cpu":   # --smoke under TRITON_INTERPRET=1: the script's logic, not its numbers
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0, 0.0
    seconds = median_ms(fn, reps, warmup=0) / 1e3
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return seconds, torch.cuda.max_memory_allocated() / 2**30


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def naive_row(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, want: torch.Tensor, flops: float,
              mode: str, reps: int) -> dict:
    row: dict[str, Any] = {"case": "prefill", "mode": mode, "impl": "naive"}
    try:
        row["seconds"], row["peak_gib"] = bench(lambda: naive(q, k, v, causal), max(3, reps // 4), warmup=1)
        row["tflops"] = flops / row["seconds"] / 1e12
        row["rel_err"] = rel_err(naive(q, k, v, causal), want)
    except torch.cuda.OutOfMemoryError as e:
        row["error"] = str(e)
    return row


def effc_variant(kern: Any, config: Any, ins: list, out: torch.Tensor, want: torch.Tensor, reps: int) -> dict:
    row: dict[str, Any] = {"config": [c.to_json() for c in config]}
    try:
        t0 = time.time()
        entry = load(generate_attention(kern, "att", config))
        out.fill_(float("nan"))
        entry(ins, [out], [])
        if DEV == "cuda":
            torch.cuda.synchronize()
        row["compile_s"] = round(time.time() - t0, 2)
        row["rel_err"] = rel_err(out, want)
        row["ok"] = bool(row["rel_err"] < 1e-2 and not torch.isnan(out).any())
        row["seconds"], row["peak_gib"] = bench(lambda: entry(ins, [out], []), reps)
    except Exception as e:   # one variant failing must not lose the others' numbers
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc()[-2000:]
    return row


def prefill(args: argparse.Namespace, tma: bool = False) -> list[dict]:
    """The pointer kernels' top configs, or (``tma``) the first ``--tma-configs`` of them through
    tensor descriptors: timed last, so that a fault there cannot cost the other numbers."""
    B, H, S, D = SIZES["prefill"]
    gen = torch.Generator(device=DEV).manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device=DEV, dtype=torch.float16, generator=gen) for _ in range(3))
    out = torch.empty_like(q)
    rows = []
    for causal in (False, True):
        mode = "causal" if causal else "non-causal"
        flops = 4.0 * B * H * S * S * D * (0.5 if causal else 1.0)
        flash = [torch.nn.attention.SDPBackend.FLASH_ATTENTION if DEV == "cuda" else torch.nn.attention.SDPBackend.MATH]
        with torch.nn.attention.sdpa_kernel(flash):
            want = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            t, peak = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), args.reps)
        rows.append({"case": "prefill", "mode": mode, "impl": "torch-sdpa-flash", "seconds": t, "peak_gib": peak,
                     "tflops": flops / t / 1e12})
        if DEV == "cuda" and not tma:   # torch's other fused backends, where this build has them
            for label, backend in (("torch-sdpa-cudnn", "CUDNN_ATTENTION"), ("torch-sdpa-efficient", "EFFICIENT_ATTENTION")):
                try:
                    with torch.nn.attention.sdpa_kernel([getattr(torch.nn.attention.SDPBackend, backend)]):
                        t, peak = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), args.reps)
                    rows.append({"case": "prefill", "mode": mode, "impl": label, "seconds": t, "peak_gib": peak,
                                 "tflops": flops / t / 1e12})
                except Exception as e:  # noqa: BLE001 - a backend this build or GPU lacks
                    rows.append({"case": "prefill", "mode": mode, "impl": label, "error": f"{type(e).__name__}: {e}"[:300]})
        if not tma:   # the naive baseline once is enough
            rows.append(naive_row(q, k, v, causal, want, flops, mode, args.reps))
        if DEV == "cuda":
            torch.cuda.empty_cache()
        kern = kernel((B, H, S, D), (B, H, S, D), causal)
        ranked = [r for r in rank_attention_configs(attention_problem(kern)) if r[1] is not None][:args.configs]
        if tma:
            ranked = [(dataclasses.replace(c, tma=True), p, w) for c, p, w in ranked[:args.tma_configs]]
        for rank, (cfg, pred, _) in enumerate(ranked):
            row = effc_variant(kern, (cfg, DecodeConfig()), [q, k, v], out, want, args.reps)
            row.update(case="prefill", mode=mode, impl="effc", rank=rank, predicted_s=pred)
            if "seconds" in row:
                row["tflops"] = flops / row["seconds"] / 1e12
                row["of_flash_anchor"] = row["tflops"] / FLASH[mode]
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
    return rows


def decode(args: argparse.Namespace) -> list[dict]:
    rows = []
    B, H, D, lengths = SIZES["decode"]
    for HKV, SK in [(H, n) for n in lengths] + [(H // 4, lengths[-1])]:
        gen = torch.Generator(device=DEV).manual_seed(SK)
        q = torch.randn(B, H, 1, D, device=DEV, dtype=torch.float16, generator=gen)
        k, v = (torch.randn(B, HKV, SK, D, device=DEV, dtype=torch.float16, generator=gen) for _ in range(2))
        out = torch.empty_like(q)
        nbytes = (k.numel() + v.numel() + q.numel() + out.numel()) * 2
        gqa = HKV != H
        case = f"decode B{B} H{H}/{HKV} KV{SK}"
        want = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        t, peak = bench(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa), args.reps)
        rows.append({"case": case, "impl": "torch-sdpa", "seconds": t, "peak_gib": peak,
                     "tb_s": nbytes / t / 1e12, "of_copy_bw": nbytes / t / COPY_BW})
        kern = kernel((B, H, 1, D), (B, HKV, SK, D), gqa=gqa)
        prob = attention_problem(kern)
        ranked = [r for r in rank_decode_configs(prob) if r[1] is not None][:args.configs]
        variants = [(c, p) for c, p, _ in ranked]
        best = ranked[0][0]
        variants += [(DecodeConfig(best.block_n, best.num_warps, best.num_stages, s), None) for s in (8, 16, 32)]
        for rank, (cfg, pred) in enumerate(variants):
            row = effc_variant(kern, (cfg,), [q, k, v], out, want, args.reps)
            row.update(case=case, impl="effc", rank=rank, predicted_s=pred)
            if "seconds" in row:
                row["tb_s"] = nbytes / row["seconds"] / 1e12
                row["of_copy_bw"] = nbytes / row["seconds"] / COPY_BW
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
        del q, k, v, out
        if DEV == "cuda":
            torch.cuda.empty_cache()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| case | mode | impl | config | ms | TFLOP/s | TB/s | of target | peak GiB | rel err |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cfg = " ".join("/".join(str(x) for x in c.values()) for c in r.get("config", []))
        frac = r.get("of_flash_anchor", r.get("of_copy_bw"))
        lines.append(" | ".join(["", r["case"], r.get("mode", ""), r["impl"], cfg,
                                 f"{r['seconds'] * 1e3:.3f}" if "seconds" in r else r.get("error", "?")[:60],
                                 f"{r['tflops']:.0f}" if "tflops" in r else "",
                                 f"{r['tb_s']:.2f}" if "tb_s" in r else "",
                                 f"{frac:.2f}" if frac is not None else "",
                                 f"{r['peak_gib']:.2f}" if "peak_gib" in r else "",
                                 f"{r['rel_err']:.1e}" if "rel_err" in r else "", ""]).strip())
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--configs", type=int, default=4, help="cost-model candidates to time per case")
    ap.add_argument("--tma-configs", type=int, default=2, help="... of which also timed through tensor descriptors")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--skip", choices=("prefill", "decode"), default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU under TRITON_INTERPRET=1")
    args = ap.parse_args()
    global DEV
    if args.smoke:
        DEV = "cpu"
        SIZES.update(prefill=(1, 2, 64, 32), decode=(1, 4, 32, (256, 512)))
    import triton
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"),
                              "device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu (interpreted)",
                              "torch": torch.__version__, "triton": triton.__version__, "rows": []}
    if args.skip != "prefill":
        result["rows"] += prefill(args)
    if args.skip != "decode":
        result["rows"] += decode(args)
    if args.skip != "prefill" and args.tma_configs:
        Path(args.out).write_text(json.dumps(result, indent=2))   # kept should the TMA variants fault
        result["rows"] += prefill(args, tma=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(table(result["rows"]))


if __name__ == "__main__":
    main()
