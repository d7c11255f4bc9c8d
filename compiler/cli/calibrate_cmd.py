"""``effc calibrate``: measure this machine's memory bandwidth, peak float32 FLOP/s and per-call
overhead once, and cache them for the cost model (``costmodel/calibrate.py``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from effc.cli.common import state
from effc.errors import UserError


def calibrate_command(
    ctx: typer.Context,
    device: Annotated[str, typer.Option("--device", metavar="cpu|cuda",
                                        help="What to measure: this CPU, or the current CUDA GPU.")] = "cpu",
    quick: Annotated[bool, typer.Option("--quick", help="Smaller, faster measurements (less exact).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ceilings as JSON.")] = False,
) -> None:
    """Measure the ceilings the cost model predicts with, and cache them.

    Times a large copy (bytes read and written per second), a float32 matrix product (FLOP/s)
    and a one-element op (seconds per call); the median of repeated runs of each. The result
    goes to $XDG_CACHE_HOME/effc/calibration/ (default ~/.cache), under a name for this
    target, and every later compile on this machine reads it.
    """
    import torch

    from effc.costmodel.calibrate import calibrate, forget
    st = state(ctx)
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available here")
    with st.status(f"calibrating {device}"):
        m = calibrate(device, quick=quick, progress=lambda what: st.note(f"measuring {what}") if st.verbose else None)
    forget()
    t = m.target
    if as_json:
        typer.echo(json.dumps({"target": t.name, "bandwidth_bytes_per_s": t.bandwidth, "peak_flops": t.peak_flops,
                               "overhead_s": t.overhead, "cache": m.path, "quick": quick}, indent=2))
        return
    if not st.quiet:
        st.out.print(f"{t.name}: memory bandwidth {t.bandwidth / 1e9:.1f} GB/s, float32 peak "
                     f"{t.peak_flops / 1e9:.1f} GFLOP/s, call overhead {t.overhead * 1e6:.2f} us "
                     f"(measured in {m.seconds_spent:.1f} s)", markup=False, soft_wrap=True)
        st.note(f"cached in {m.path}")
