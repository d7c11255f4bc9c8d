"""The C GEMM template against torch.mm on this CPU (2 threads), float32.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/c_matmul.py [--repeats 20] [--sizes 1024]

Builds each shape as a matmul kernel of the kernel IR, generates C with
``codegen.c_templates.template_function`` (epilogue: store ``acc``), compiles it with
``cc -O3 -march=native -fopenmp -shared -fPIC``, checks it against torch, and times both with
medians of ``--repeats`` runs after warm-up, torch.mm and the kernel interleaved. Linear rows
marked "prepacked" generate the kernel with the weight as a constant input
(``constant_inputs={1}``) and pass it packed once by ``c_templates.prepack`` (outside the
timing), against torch.nn.functional.linear on the plain weight. Writes
``benchmarks/results/c_matmul-<date>-cpu.md``.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import statistics
import subprocess
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

from effc.codegen.c_abi import PRELUDE, c_name  # noqa: E402
from effc.codegen.c_gemm import gemm_plan
from effc.codegen.c_gemm_tiles import gemm_tiles, vector_width  # noqa: E402
from effc.codegen.c_templates import prepack, scratch_bytes, store_acc_epilogue, template_function  # noqa: E402
from effc.ir import DType, GraphBuilder, Op, TensorType  # noqa: E402
from effc.ir.kernel import Kernel  # noqa: E402
from effc.ir.kernel_lower import lower  # noqa: E402
from effc.ir.kernel_node import add_kernel  # noqa: E402

CFLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]


def matmul_kernel(name: str, m: int, n: int, k: int, linear: bool = False) -> Kernel:
    """``x[m, k] @ w[k, n]``, or ``linear(x, w[n, k])`` (the weight read transposed)."""
    body = GraphBuilder()
    x = body.input("a0", TensorType(DType.F32, (m, k)))
    w = body.input("a1", TensorType(DType.F32, (n, k) if linear else (k, n)))
    y = body.op(Op.LINEAR if linear else Op.MATMUL, [x, w])
    g = body.build([y])
    outer = GraphBuilder()
    node = add_kernel(outer, "matmul", name, [outer.input(f"x{i}", v.type) for i, v in enumerate(g.inputs)], g)
    return lower(node)


def build(kernels: list[Kernel], consts: list[frozenset[int]], workdir: str) -> ctypes.CDLL:
    src = PRELUDE + "\n".join(template_function(k, [], store_acc_epilogue(k), constant_inputs=c)
                              for k, c in zip(kernels, consts))
    path = os.path.join(workdir, "gemm.c")
    with open(path, "w") as f:
        f.write(src)
    subprocess.run(["cc", *CFLAGS, "-o", path[:-2] + ".so", path], check=True)
    return ctypes.CDLL(path[:-2] + ".so")


def _median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024, 2048])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    shapes = [(f"{s}x{s}x{s}", s, s, s, False, False) for s in args.sizes]
    shapes.append(("linear 128x768 @ 768x3072 (w^T)", 128, 3072, 768, True, False))
    shapes.append(("linear 64x1024 @ 1024x4096 (w^T)", 64, 4096, 1024, True, False))
    shapes.append(("linear 128x768 @ 768x3072 (w^T), prepacked", 128, 3072, 768, True, True))
    shapes.append(("linear 64x1024 @ 1024x4096 (w^T), prepacked", 64, 4096, 1024, True, True))
    kernels = [matmul_kernel(f"mm{i}", m, n, k, lin) for i, (_, m, n, k, lin, _) in enumerate(shapes)]
    consts = [frozenset({1}) if pre else frozenset() for *_, pre in shapes]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        lib = build(kernels, consts, d)
        sizes = (ctypes.c_int64 * 1)()
        for (label, m, n, k, lin, _), kern, const in zip(shapes, kernels, consts):
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(m, k, generator=gen)
            w = torch.randn((n, k) if lin else (k, n), generator=gen)
            out = torch.empty(m, n)
            fn = getattr(lib, c_name(kern.name))
            need = int(scratch_bytes(kern, const))  # the kernel's packed panels and tiles, allocated once
            raw = torch.empty(need + 64, dtype=torch.uint8)
            scratch = raw[(-raw.data_ptr()) % 64:]
            packs = prepack(kern, const)
            assert set(packs) == set(const)
            wk = packs[1](w) if 1 in packs else w  # the weight as the kernel reads it, packed once
            ptrs = [ctypes.c_void_p(t.data_ptr()) for t in (x, wk, out)]

            def ours() -> None:
                fn(*ptrs, sizes, ctypes.c_void_p(scratch.data_ptr()))

            def theirs() -> torch.Tensor:
                return torch.nn.functional.linear(x, w) if lin else torch.mm(x, w)
            ours()
            ref = theirs()
            err = (out - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
            for _ in range(3):
                ours()
                theirs()
            t_ours, t_torch = [], []
            for _ in range(3):  # interleave so a neighbour's load hits both
                t_ours.append(_median_time(ours, args.repeats))
                t_torch.append(_median_time(theirs, args.repeats))
            flops = 2.0 * m * n * k
            g_ours, g_torch = flops / min(t_ours) / 1e9, flops / min(t_torch) / 1e9
            tiles = gemm_tiles(m, n, k)
            rows.append((label, g_ours, g_torch, g_ours / g_torch, err, tiles))
            print(f"{label:46s} effc {g_ours:7.1f} GFLOP/s  torch {g_torch:7.1f} GFLOP/s  "
                  f"ratio {g_ours / g_torch:5.2f}  rel err {err:.1e}  tiles mc={tiles.mc} nc={tiles.nc} "
                  f"kc={tiles.kc}", flush=True)
    assert all(gemm_plan(k) is not None for k in kernels)
    date = datetime.date.today().isoformat()
    path = args.out or os.path.join(os.path.dirname(__file__), "results", f"c_matmul-{date}-cpu.md")
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    with open(path, "w") as f:
        f.write(f"# C GEMM template vs torch.mm, float32, {date}\n\n")
        f.write(f"CPU: {cpu}, {os.cpu_count()} cores; 2 threads (torch.set_num_threads(2), "
                f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}); torch {torch.__version__}; "
                f"vector width {vector_width()} floats; `cc {' '.join(CFLAGS)}`.\n")
        f.write(f"Best of 3 medians of {args.repeats} runs each after warm-up, the two interleaved "
                "(the machine is shared; neighbours' load moves absolute figures).\n\n")
        f.write("| shape (m x n x k) | effc GFLOP/s | torch GFLOP/s | effc / torch | max rel err | MC, NC, KC |\n")
        f.write("| --- | ---: | ---: | ---: | ---: | --- |\n")
        for label, g, t, r, e, tl in rows:
            f.write(f"| {label} | {g:.1f} | {t:.1f} | {r:.2f} | {e:.1e} | {tl.mc}, {tl.nc}, {tl.kc} |\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
