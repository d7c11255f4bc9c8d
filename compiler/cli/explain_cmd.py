"""``effc explain MODEL.onnx``: what each pass changed, the kernels that run, what falls back to
PyTorch, predicted and measured time per kernel, and peak memory.

Until the code generators fuse nodes, the reference target runs one torch op per IR node, so
each non-constant node of the final graph is listed as a kernel of its own. Sizes that are
symbolic in the model take their ``--dim`` values (1 when not given) for byte counts, times and
peak memory.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from effc.cli.common import (DimOpt, DisablePassOpt, MemoryBudgetOpt, ModelArg, SeedOpt, TargetOpt,
                             build_options, compile_model, model_file, parse_dims, state)

if TYPE_CHECKING:
    from effc.cli.common import State
    from effc.onnx_model import OnnxModel


def explain_command(
    ctx: typer.Context,
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (stable top-level keys: "
                                                         "passes, kernels, fallbacks, peak_bytes).")] = False,
    measure: Annotated[bool, typer.Option("--measure", help="Time every kernel (median of "
                                                            "--repeat runs).")] = False,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Runs for --measure.")] = 5,
    dim: DimOpt = None,
    seed: SeedOpt = 0,
    target: TargetOpt = "auto",
    disable_pass: DisablePassOpt = None,
    memory_budget: MemoryBudgetOpt = None,
) -> None:
    """Show what effc did: passes, kernels, fallbacks and peak memory.

    For every pass what it changed; each kernel with its fused nodes, bytes moved, predicted
    time (when a cost model exists) and with --measure the measured time; every fallback to
    PyTorch with its reason; and the peak memory of intermediates.
    """
    from effc.cli.explain_data import explain_data

    st = state(ctx)
    dims = parse_dims(dim)
    options = build_options(target, disable_pass, memory_budget)
    path = model_file(model)
    m = compile_model(path, options, st)
    data = explain_data(m, dims, seed, repeat if measure else 0)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=True) + "\n")
    elif not st.quiet:
        _print(st, m, data)


def _print(st: "State", m: "OnnxModel", data: dict[str, Any]) -> None:
    from effc.cli.tables import add_row, fmt_bytes, fmt_seconds, name_cell

    for g in data["graphs"]:
        st.out.print(Text(f"graph {g['label']} -> target {g['target']}: {g['nodes_in']} IR nodes "
                          f"imported, {g['nodes_out']} after passes, compiled in "
                          f"{g['compile_seconds']:.2f} s"))
    sizes = ", ".join(f"{k}={v}" for k, v in data["sizes"].items())
    if sizes:
        st.out.print(Text(f"sizes: {sizes}"))

    t = _table("passes", "pass", "status", "nodes", "time", "what changed")
    for p in data["passes"]:
        status = "disabled" if p["skipped"] else ("changed" if p["modified"] else "no change")
        notes = list(p["notes"]) + [f"rejected: {r}" for r in p["rejected"]]
        add_row(t, p["name"], status, f"{p['nodes_before']} -> {p['nodes_after']}",
                  fmt_seconds(p["seconds"]), Text("\n".join(notes) if notes else "-"))
    st.out.print(t)

    t = _table("kernels", "kernel", "op", "fused nodes", "output", "in bytes", "out bytes",
               "predicted", "measured")
    for k in data["kernels"]:
        op = f"{k['kind']} kernel" if k["op"] == "kernel" else k["op"]
        add_row(t, k["name"], op, ", ".join(k["nodes"]), f"{k['dtype']}{k['shape']}",
                  fmt_bytes(k["input_bytes"]), fmt_bytes(k["output_bytes"]),
                  fmt_seconds(k["predicted_seconds"]), fmt_seconds(k["measured_seconds"]))
    st.out.print(t)
    if data["cost_model"] is None:
        st.out.print(Text("predicted: no cost model in this version of effc"))
    else:
        st.out.print(Text(f"predicted by {data['cost_model']}"))
    for k in data["kernels"]:
        if "prediction_error" in k:
            st.out.print(Text(f"cost model failed on {k['name']} ({k['op']}): {k['prediction_error']}"))

    if data["fallbacks"]:
        t = _table("fallbacks to PyTorch", "kind", "op", "count", "why")
        for f in data["fallbacks"]:
            add_row(t, f["kind"], Text(str(f.get("op", "-"))), str(f.get("count", "-")),
                      name_cell(str(f.get("reason") or "-")))
        st.out.print(t)
    else:
        st.out.print(Text("fallbacks: none (every node is an effc IR op)"))
    python = {k: why for g in data["graphs"] for k, why in g.get("python_kernels", {}).items()}
    if python:   # target c: kernels the generated program hands back to Python
        t = _table("kernels run in Python by the C program", "kernel", "why")
        for k, why in python.items():
            add_row(t, k, name_cell(why))
        st.out.print(t)
    at = f" at {sizes}" if sizes else ""
    mem = data.get("memory")
    if mem:
        scratch = f" + {fmt_bytes(mem['scratch'])} tile scratch" if mem["scratch"] else ""
        st.out.print(Text(f"peak intermediate memory{at}: {fmt_bytes(mem['arena'])}{scratch} in one "
                          f"planned arena ({mem['strategy']}, {mem['in_place']} in place); "
                          f"{fmt_bytes(mem['naive'])} without reuse, lower bound "
                          f"{fmt_bytes(mem['lower_bound'])}"))
    else:
        st.out.print(Text(f"peak intermediate memory{at}: {fmt_bytes(data['peak_bytes'])} "
                          "(node by node, no buffer reuse)"))


def _table(title: str, *columns: str) -> Table:
    t = Table(title=Text(title), title_justify="left")
    for c in columns:
        t.add_column(c, justify="right" if c in ("in bytes", "out bytes", "predicted", "measured",
                                                 "time", "count") else "left")
    return t

