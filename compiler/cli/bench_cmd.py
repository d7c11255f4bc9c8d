"""``effc bench MODEL.onnx``: effc's speed against ONNX Runtime and op-by-op PyTorch, measured
in the same process on the same inputs.

Rounds are interleaved (each round runs every system once) so that a slow stretch of the
machine touches all systems alike; the table gives the median and the fastest run of each,
and effc's speedup (the other system's median over effc's).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer
from rich.table import Table
from rich.text import Text

from effc.cli.common import (DimOpt, DisablePassOpt, ModelArg, SeedOpt, TargetOpt, build_options,
                             compile_model, model_file, parse_choices, parse_dims, state,
                             threads_default)

if TYPE_CHECKING:
    from pathlib import Path

    from effc.cli.common import State
    from effc.options import Options

AGAINST = ("onnxruntime", "torch")
TORCH_LABEL = "torch eager, op by op (imported graph, no passes)"


def bench_command(
    ctx: typer.Context,
    model: ModelArg,
    against: Annotated[str, typer.Option("--against", metavar="onnxruntime,torch",
                                         help="Comma-separated systems to compare with; torch "
                                              "runs effc's imported graph op by op with eager "
                                              "torch ops.")] = "onnxruntime,torch",
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Timed runs of each system.")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first.")] = 3,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, show_default="all cores",
                                                   help="torch and ORT intra-op threads.")] = None,
    dim: DimOpt = None,
    seed: SeedOpt = 0,
    target: TargetOpt = "auto",
    disable_pass: DisablePassOpt = None,
) -> None:
    """Time effc against ONNX Runtime and op-by-op torch, in one process.

    Reports the median and fastest run of each system and effc's speedup over each (the
    other's median over effc's). Rounds are interleaved so that every system sees the same
    machine state.
    """
    import torch

    st = state(ctx)
    others = parse_choices(against, AGAINST, "--against")
    dims = parse_dims(dim)
    options = build_options(target, disable_pass)
    path = model_file(model)
    n_threads = threads or threads_default()
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        _bench(st, path, options, others, dims, seed, n_threads, repeat, warmup)
    finally:
        torch.set_num_threads(before)


def _bench(st: "State", path: "Path", options: "Options", others: list[str], dims: dict[str, int],
           seed: int, n_threads: int, repeat: int, warmup: int) -> None:
    import torch

    from effc.cli.inputs import random_feeds, resolve_sizes, to_tensors
    from effc.cli.oracles import OrtSession, graph_runner

    m = compile_model(path, options, st)
    sizes = resolve_sizes(m.inputs, dims)
    feeds = random_feeds(m.inputs, sizes, seed)
    tensors = to_tensors(m.inputs, feeds)

    systems: list[tuple[str, Callable[[], Any]]] = [(f"effc ({m.report.target} target)", lambda: m(*tensors))]
    for name in others:
        if name == "onnxruntime":
            ort = OrtSession(path, m, threads=n_threads)
            ort.run(feeds)  # fail here, with a clear message, not inside the timing loop
            systems.append((f"onnxruntime {ort.version} (CPU)", ort.callable(feeds)))
        else:
            runner = graph_runner(m, upcast=False)
            systems.append((TORCH_LABEL, lambda r=runner: r(tensors)))
    times = _measure(systems, repeat, warmup, st)
    if st.quiet:
        return
    shown = ", ".join(f"{k}={v}" for k, v in sizes.items())
    st.out.print(_table(systems, times, f"{path.name}: {repeat} runs after {warmup} warm-up, "
                        f"{n_threads} threads, torch {torch.__version__}" + (f", sizes {shown}" if shown else "")))


def _measure(systems: list[tuple[str, Callable[[], Any]]], repeat: int, warmup: int,
             st: "State") -> list[list[float]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    times: list[list[float]] = [[] for _ in systems]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=st.err, transient=True, disable=st.quiet) as progress:
        task = progress.add_task("benchmarking", total=(repeat + warmup) * len(systems))
        for r in range(warmup + repeat):
            for i, (_, fn) in enumerate(systems):
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                if r >= warmup:
                    times[i].append(dt)
                progress.advance(task)
    return times


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _table(systems: list[tuple[str, Callable[[], Any]]], times: list[list[float]], title: str) -> Table:
    from effc.cli.tables import add_row, fmt_seconds

    t = Table(title=Text(title), title_justify="left")
    t.add_column("system")
    t.add_column("median", justify="right")
    t.add_column("fastest", justify="right")
    t.add_column("effc speedup", justify="right")
    base = _median(times[0])
    for (label, _), ts in zip(systems, times):
        med = _median(ts)
        speedup = "-" if ts is times[0] else f"{med / base:.2f}x"
        add_row(t, Text(label), fmt_seconds(med), fmt_seconds(min(ts)), speedup)
    return t
