"""``effc compile --target c --standalone``: write a compiled ONNX model as a C library folder.

The folder (codegen/c_standalone.py says what each file holds) is written atomically like an
artifact folder, with a small ``effc-standalone.json`` marker (effc version, the model's
sha256, the files) so that ``--force`` may later replace it and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

from effc.errors import UserError
from effc.options import Options


def write_standalone(model_path: Path, out: Path, options: Options, *, embed_weights: bool,
                     force: bool) -> list[str]:
    """Compile ``model_path`` for the C target and write its library at ``out``; the file names."""
    from effc import artifact
    from effc.codegen.c_standalone import export
    from effc.onnx_model import compile_onnx

    if options.target != "c":
        raise UserError("--standalone writes a C library: use it with --target c")
    artifact.check_destination(out, force)
    model = compile_onnx(model_path, options)
    program = model.program.program
    plan = next(p.data["plan"] for p in model.report.passes if p.name == "plan_memory")
    weights = {**model.graph.constants, **program.packed}
    lib = export(model.graph, plan, program.host, program.kernel_sources, program.symbols, weights,
                 program.fallbacks, model_name=model_path.name, embed_weights=embed_weights)
    with artifact.staging(out, force) as tmp:
        for name, data in lib.files.items():
            (tmp / name).write_bytes(data)
        marker = {"format": "effc-standalone", "effc_version": artifact._effc_version(),
                  "model": {"file": model_path.name, "sha256": artifact.file_sha256(model_path)},
                  "files": sorted(lib.files)}
        (tmp / "effc-standalone.json").write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return sorted(lib.files)
