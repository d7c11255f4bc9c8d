"""Formatting for the commands' tables.

Names from the model go into cells as ``rich.text.Text`` (never parsed as markup), with
control characters such as newlines shown escaped so one tensor stays on one row.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Sequence

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    import numpy as np


def add_row(table: Table, *cells: object) -> None:
    """A row whose plain strings are shown as they are: ``[batch, 3]`` is not rich markup."""
    table.add_row(*(Text(c) if isinstance(c, str) else c for c in cells))  # type: ignore[arg-type]


def name_cell(name: str) -> Text:
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return Text(shown)


def fmt_num(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    return f"{x:.4g}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_shape(shape: Sequence[object]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def summary_table(outputs: Mapping[str, np.ndarray], title: str = "outputs") -> Table:
    """One row per output: dtype, shape, min, max, mean, and whether it holds NaN or Inf."""
    t = Table(title=Text(title), title_justify="left")
    for col in ("output", "dtype", "shape"):
        t.add_column(col)
    for col in ("min", "max", "mean"):
        t.add_column(col, justify="right")
    t.add_column("NaN/Inf")
    for name, a in outputs.items():
        add_row(t, name_cell(name), str(a.dtype), fmt_shape(a.shape), *summarize(a))
    return t


def summarize(a: "np.ndarray") -> tuple[str, str, str, str]:
    import numpy as np

    if a.size == 0:
        return "-", "-", "-", "empty"
    x = a.astype(np.float64) if a.dtype.kind in "biuf" else a
    finite = x[np.isfinite(x)] if a.dtype.kind == "f" else x
    nan, inf = bool(np.isnan(x).any()), bool(np.isinf(x).any())
    flags = ", ".join(f for f, on in (("NaN", nan), ("Inf", inf)) if on) or "no"
    if finite.size == 0:
        return "-", "-", "-", flags
    return fmt_num(float(finite.min())), fmt_num(float(finite.max())), fmt_num(float(finite.mean())), flags
