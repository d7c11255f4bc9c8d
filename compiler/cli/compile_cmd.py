"""``effc compile MODEL.onnx -o DIR``: compile and write an artifact folder (see effc.artifact)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from effc.cli.common import (DisablePassOpt, MemoryBudgetOpt, ModelArg, TargetOpt, build_options,
                             model_file, state)
from effc.cli.tables import fmt_bytes
from effc.errors import UserError


def compile_command(
    ctx: typer.Context,
    model: ModelArg,
    output: Annotated[str, typer.Option("--output", "-o", metavar="DIR",
                                        help="The artifact folder to write.", show_default=False)],
    target: TargetOpt = "auto",
    disable_pass: DisablePassOpt = None,
    memory_budget: MemoryBudgetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace DIR if it is an existing "
                                                        "artifact folder.")] = False,
    standalone: Annotated[bool, typer.Option(
        "--standalone", help="With --target c: write a self-contained C library (model.c, model.h, "
                             "weights.bin, Makefile, main.c) instead of an artifact folder.")] = False,
    embed_weights: Annotated[bool, typer.Option(
        "--embed-weights", help="With --standalone: compile the weights into model.c.")] = False,
) -> None:
    """Compile an ONNX model into an artifact folder (or, with --standalone, a C library).

    The folder holds manifest.json (versions, options, inputs and outputs, sha256 of every
    file), model.effc (the final IR), source.effc (the IR before passes), passes/ (the IR after
    each pass), sources/ (generated kernels) and weights.bin (raw little-endian weights indexed
    in the manifest). It is written atomically; an existing DIR is an error without --force.
    """
    from effc import artifact

    st = state(ctx)
    options = build_options(target, disable_pass, memory_budget)
    path = model_file(model)
    out = Path(output)
    if embed_weights and not standalone:
        raise UserError("--embed-weights applies to --standalone")
    if standalone:
        from effc.standalone import write_standalone
        with st.status(f"compiling {path.name} into a C library"):
            files = write_standalone(path, out, options, embed_weights=embed_weights, force=force)
        st.note(f"wrote {out}/: {' '.join(files)} (build with: make -C {out})")
        return
    artifact.check_destination(out, force)
    with st.status(f"compiling {path.name}"):
        compiled = artifact.compile_to(path, out, options, force=force)
    r = compiled.report
    weights = (out / artifact.WEIGHTS).stat().st_size
    st.note(f"compiled {path.name} -> {out}/ (target {r.target}; {r.nodes_in} IR nodes imported, "
            f"{r.nodes_out} after passes; weights {fmt_bytes(weights)})")
