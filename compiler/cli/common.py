"""What the commands share: per-invocation state, option parsing, and getting a model to run.

Everything here that can fail because of what the user typed raises ``UserError`` with a
one-line message; ``main.py`` prints it and exits with status 2.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, Optional, Sequence

import typer
from rich.console import Console

from effc.errors import UserError

if TYPE_CHECKING:
    from effc.onnx_model import OnnxModel
    from effc.options import Options


def _console(stderr: bool) -> Console:
    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal:
        c.width = max(c.width, 160)   # pipes and tests: do not fold numbers into "…"
    return c


@dataclass
class State:
    """Settings of one ``effc`` invocation (the global options), kept on the click context."""
    verbose: int = 0
    quiet: bool = False
    out: Console = field(default_factory=lambda: _console(False))
    err: Console = field(default_factory=lambda: _console(True))

    def note(self, message: str) -> None:
        """A status line on stderr (hidden by -q); ``message`` is plain text, not markup."""
        if not self.quiet:
            self.err.print(message, markup=False, soft_wrap=True)

    @contextmanager
    def status(self, message: str) -> Iterator[None]:
        if self.quiet or not self.err.is_terminal:
            yield
            return
        with self.err.status(message):
            yield


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


# Options several commands take, spelled once.
TargetOpt = Annotated[str, typer.Option(
    "--target", metavar="c|triton|reference|auto",
    help="Where the compiled model runs: c (CPU), triton (CUDA GPU, or the CPU under "
         "TRITON_INTERPRET=1), reference (torch ops), auto.")]
DisablePassOpt = Annotated[Optional[list[str]], typer.Option(
    "--disable-pass", metavar="NAME",
    help="Skip the pass NAME (repeatable; an unknown name lists the passes).")]
MemoryBudgetOpt = Annotated[Optional[str], typer.Option(
    "--memory-budget", metavar="SIZE",
    help="Peak activation memory allowed, such as 512KiB or 2MB; over it, the first stage of a "
         "CNN runs patch by patch (static sizes only).")]
DimOpt = Annotated[Optional[list[str]], typer.Option(
    "--dim", metavar="NAME=SIZE",
    help="Value of a symbolic size such as batch=8 (repeatable; sizes not given are 1).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")]
ModelArg = Annotated[str, typer.Argument(metavar="MODEL.onnx", help="The ONNX model file.",
                                         show_default=False)]


def build_options(target: str, disable_passes: Sequence[str] | None,
                  memory_budget: str | None = None) -> "Options":
    from effc.options import Options
    return Options(target=target, disable_passes=tuple(disable_passes or ()),
                   memory_budget=memory_budget)


_DIM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\d+)\s*$")


def parse_dims(values: Sequence[str] | None) -> dict[str, int]:
    """``["batch=8", "seq=128"]`` -> ``{"batch": 8, "seq": 128}``."""
    out: dict[str, int] = {}
    for v in values or ():
        m = _DIM.match(v)
        if m is None:
            raise UserError(f"--dim {v!r}: expected NAME=SIZE, such as batch=8")
        name, size = m.group(1), int(m.group(2))
        if size < 1:
            raise UserError(f"--dim {v!r}: sizes must be at least 1")
        if out.get(name, size) != size:
            raise UserError(f"--dim {name} is given twice with different sizes")
        out[name] = size
    return out


def parse_choices(value: str, allowed: Sequence[str], option: str) -> list[str]:
    """A comma-separated list of names, each one of ``allowed``, without repeats."""
    names = [s.strip() for s in value.split(",") if s.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        shown = ", ".join(map(repr, bad)) if bad else "nothing"
        raise UserError(f"{option}: unknown value {shown}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def model_file(path: str) -> Path:
    """``path`` checked to be an existing file (the frontend checks it is ONNX)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"no such file: {path}")
    if p.is_dir():
        raise UserError(f"{path} is a folder, expected an .onnx file")
    return p


def compile_model(path: Path, options: "Options", st: State) -> "OnnxModel":
    from effc.onnx_model import compile_onnx

    with st.status(f"compiling {path.name}"):
        return compile_onnx(path, options)


def load_model(path: str, target: str, disable_passes: Sequence[str] | None,
               st: State) -> "OnnxModel":
    """An artifact folder (read and verified) or an .onnx file (compiled now)."""
    p = Path(path)
    if p.is_dir():
        from effc import artifact

        if target != "auto" or disable_passes:
            raise UserError("--target and --disable-pass apply when compiling an .onnx file, "
                            "not to an artifact folder")
        if not artifact.is_artifact_folder(p):
            raise UserError(f"{path} is a folder but not an effc artifact (no manifest.json)")
        return artifact.load(p)[0]
    options = build_options(target, disable_passes)
    return compile_model(model_file(path), options, st)


def threads_default() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
