"""``effc check MODEL.onnx``: does effc compute what the model means, within the tolerance policy?

[Note: what check compares]
Every output is judged by ``effc.tolerance.compare(actual, eager, ref)`` against ``ref``, the
imported graph run in float64 on the reference backend ([Note: tolerance policy]):

  --against reference    eager is the imported graph run op by op in its own dtypes; this
                         checks effc's passes and backend.
  --against onnxruntime  eager is ONNX Runtime's output, as the policy's "eager". Because the
                         float64 reference is computed from effc's own import, an import that
                         misreads the model would pass that test unnoticed, so ONNX Runtime's
                         output is also judged against the reference (with the op-by-op run as
                         eager): a failure there means effc and ONNX Runtime disagree about what
                         the model computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from effc.cli.common import (DimOpt, DisablePassOpt, ModelArg, SeedOpt, TargetOpt, build_options,
                             compile_model, model_file, parse_choices, parse_dims, state)
from effc.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from effc.onnx_model import OnnxModel

AGAINST = ("onnxruntime", "reference")


def check_command(
    ctx: typer.Context,
    model: ModelArg,
    against: Annotated[str, typer.Option("--against", metavar="onnxruntime|reference",
                                         help="What to compare with (see effc.cli.check_cmd).")] = "onnxruntime",
    inputs: Annotated[Optional[str], typer.Option("--inputs", metavar="IN.npz",
                                                  help="Also check on these inputs.")] = None,
    seed: SeedOpt = 0,
    dim: DimOpt = None,
    target: TargetOpt = "auto",
    disable_pass: DisablePassOpt = None,
) -> None:
    """Compare effc's outputs with a reference; exit 1 when any is beyond tolerance.

    effc and the reference run on random inputs (and on IN.npz when given). Each output's
    largest absolute and relative error against the float64 reference is judged by the
    project's tolerance policy, with ONNX Runtime (or the imported graph run op by op in
    torch) as the eager result whose error effc may not exceed by more than a small factor.
    """
    from effc.cli.inputs import check_feeds, random_feeds, resolve_sizes
    from effc.cli.npz import read_npz

    st = state(ctx)
    chosen = parse_choices(against, AGAINST, "--against")
    if len(chosen) != 1:
        raise UserError(f"--against takes one of {', '.join(AGAINST)}, not several")
    which = chosen[0]
    dims = parse_dims(dim)
    options = build_options(target, disable_pass)
    path = model_file(model)
    arrays = read_npz(inputs) if inputs is not None else None
    m = compile_model(path, options, st)
    cases: list[tuple[str, dict[str, np.ndarray]]] = []
    sizes = resolve_sizes(m.inputs, dims)
    cases.append((f"random (seed {seed})", random_feeds(m.inputs, sizes, seed)))
    if arrays is not None:
        cases.append((Path(inputs).name, check_feeds(m.inputs, arrays, dims, str(inputs))[0]))
    rows = _compare(m, path, which, cases)
    bad = [r for r in rows if not r["ok"]]
    if not st.quiet:
        st.out.print(_table(rows, which))
        verdict = (f"{len(bad)} of {len(rows)} output checks beyond tolerance" if bad
                   else f"all {len(rows)} output checks within tolerance")
        st.out.print(Text(verdict))
    else:
        for r in bad:
            st.err.print(Text(f"effc: mismatch: output {r['output']!r} on {r['case']}: {r['reason']}"))
    if bad:
        raise typer.Exit(1)


def _compare(m: "OnnxModel", path: Path, which: str, cases: list[tuple[str, dict[str, np.ndarray]]]) -> list[dict]:
    from effc.cli.inputs import to_tensors
    from effc.cli.oracles import OrtSession, graph_runner
    from effc.tolerance import compare

    native, ref64 = graph_runner(m, upcast=False), graph_runner(m, upcast=True)
    ort = OrtSession(path, m) if which == "onnxruntime" else None
    rows = []
    for case, feeds in cases:
        tensors = to_tensors(m.inputs, feeds)
        actual = list(m(*tensors))
        ref = ref64(tensors)
        local = native(tensors)
        eager = ort.run_tensors(feeds) if ort else local
        results = compare(actual, eager, ref)
        imports = compare(eager, local, ref) if ort else [None] * len(results)
        for spec, a, e, r, c, imp in zip(m.outputs, actual, eager, ref, results, imports):
            ok = c.ok and (imp is None or imp.ok)
            reason = c.reason or ("" if c.ok else f"error {c.max_abs:.3g} > allowed {c.allowed:.3g}")
            if imp is not None and not imp.ok:
                reason = ("onnxruntime disagrees with effc's import of the model "
                          f"(max abs {imp.max_abs:.3g} from the float64 reference"
                          f"{', ' + imp.reason if imp.reason else ''})")
            rows.append({"case": case, "output": spec.name, "dtype": str(a.dtype).replace("torch.", ""),
                         "shape": list(a.shape), "max_abs": c.max_abs, "max_rel": c.max_rel,
                         "allowed": c.allowed, "eager_abs": _max_abs(e, r), "ok": ok, "reason": reason})
    return rows


def _max_abs(x: "torch.Tensor", ref: "torch.Tensor") -> float | None:
    import torch
    if not x.is_floating_point() or x.shape != ref.shape:
        return None
    d = (x.double() - ref.double()).abs()
    d = d[torch.isfinite(d)]
    return float(d.max()) if d.numel() else 0.0


def _table(rows: list[dict], which: str) -> Table:
    from effc.cli.tables import add_row, fmt_num, fmt_shape, name_cell

    other = "onnxruntime" if which == "onnxruntime" else "op-by-op torch"
    t = Table(title=Text(f"effc against the float64 reference (eager: {other})"), title_justify="left")
    t.add_column("inputs")
    t.add_column("output")
    t.add_column("dtype")
    t.add_column("shape")
    for col in ("max abs err", "max rel err", "allowed", f"{other} abs err"):
        t.add_column(col, justify="right")
    t.add_column("status")
    for r in rows:
        status = Text("ok", style="green") if r["ok"] else Text("MISMATCH: " + r["reason"], style="red")
        add_row(t, name_cell(r["case"]), name_cell(r["output"]), r["dtype"], fmt_shape(r["shape"]),
                  fmt_num(r["max_abs"]), fmt_num(r["max_rel"]), fmt_num(r["allowed"]),
                  fmt_num(r["eager_abs"]), status)
    return t
