"""``effc run DIR|MODEL.onnx``: run an artifact folder or an ONNX file once and summarize the
outputs (or save them to an .npz)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from effc.cli.common import DimOpt, DisablePassOpt, SeedOpt, TargetOpt, load_model, parse_dims, state


def run_command(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(metavar="DIR|MODEL.onnx", show_default=False,
                                         help="An artifact folder from effc compile, or an ONNX file.")],
    inputs: Annotated[Optional[str], typer.Option("--inputs", metavar="IN.npz",
                                                  help="Inputs by name (default: random).")] = None,
    outputs: Annotated[Optional[str], typer.Option("--outputs", metavar="OUT.npz",
                                                   help="Write the outputs here, by name.")] = None,
    dim: DimOpt = None,
    seed: SeedOpt = 0,
    target: TargetOpt = "auto",
    disable_pass: DisablePassOpt = None,
) -> None:
    """Run an artifact folder or an ONNX file and summarize its outputs.

    An artifact folder's files are checked against the sha256 in its manifest first; an ONNX
    file is compiled first. Inputs come from IN.npz (checked against the model's names, dtypes
    and shapes) or are random; symbolic sizes of random inputs come from --dim (default 1).
    """
    from effc.cli.inputs import check_feeds, random_feeds, resolve_sizes, run_model
    from effc.cli.npz import read_npz, write_npz
    from effc.cli.tables import summary_table

    st = state(ctx)
    dims = parse_dims(dim)
    arrays = read_npz(inputs) if inputs is not None else None
    m = load_model(model, target, disable_pass, st)
    if arrays is not None:
        feeds, sizes = check_feeds(m.inputs, arrays, dims, str(inputs))
        where = f"inputs from {inputs}"
    else:
        sizes = resolve_sizes(m.inputs, dims)
        feeds = random_feeds(m.inputs, sizes, seed)
        where = f"random inputs (seed {seed})"
    if sizes:
        where += "; sizes " + ", ".join(f"{k}={v}" for k, v in sizes.items())
    results = run_model(m, feeds)
    if outputs is not None:
        write_npz(outputs, results)
        st.note(f"wrote {len(results)} outputs to {outputs}")
    if not st.quiet:
        st.out.print(summary_table(results, title=f"outputs, {where}"))
