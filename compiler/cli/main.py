"""The ``effc`` command: the typer app, global options, and errors turned into exit codes.

    effc compile model.onnx -o build/model      # an artifact folder
    effc run build/model --inputs in.npz        # or: effc run model.onnx
    effc check model.onnx --against onnxruntime
    effc bench model.onnx --against onnxruntime,torch
    effc explain model.onnx --json

Exit status: 0 success; 1 a check found outputs beyond tolerance, or an internal error; 2 a
user error (bad file, option or input), reported as one line ``effc: error: <message>``.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any, Sequence

import typer
from typer.core import TyperGroup

from effc.cli import bench_cmd, calibrate_cmd, check_cmd, compile_cmd, explain_cmd, run_cmd
from effc.cli.common import State
from effc.errors import UserError

EXIT_USER = 2
EXIT_INTERNAL = 1


class _Group(TyperGroup):
    """Runs the app with click's standalone mode off, so that every error, click's usage
    errors included, is reported the same way whether from the console script or a test's
    CliRunner."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(args, prog_name or "effc", complete_var, standalone_mode=False, **extra)
        except BaseException as e:  # noqa: BLE001 - this is the one place errors become exit codes
            try:
                code = _report(e, _verbosity(args))
            except Exception:  # the reporter must not hide the error it reports
                sys.stderr.write(f"effc: internal error: {type(e).__name__}\n")
                code = EXIT_INTERNAL
            sys.exit(code)
        sys.exit(rv if isinstance(rv, int) else 0)


def _verbosity(args: Sequence[str]) -> int:
    """-v/--verbose count among the global options (those before the command name)."""
    n = 0
    for a in args:
        if not a.startswith("-"):
            break
        if a == "--verbose":
            n += 1
        elif a.startswith("-") and not a.startswith("--") and set(a[1:]) <= {"v", "q"}:
            n += a.count("v")
    return n


def _one_line(message: str) -> str:
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    return " | ".join(lines) or "(no message)"


def _click_exceptions() -> Any:
    """click's exception classes: typer >= 0.20 carries its own copy of click."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer, on click itself
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


def _report(e: BaseException, verbose: int) -> int:
    ce = _click_exceptions()

    def kind(name: str) -> Any:
        return getattr(ce, name, ())

    if isinstance(e, SystemExit):
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if isinstance(e, (KeyboardInterrupt, typer.Abort, kind("Abort"))):
        sys.stderr.write("effc: interrupted\n")
        return 130
    if isinstance(e, (typer.Exit, kind("Exit"))):
        return int(getattr(e, "exit_code", 1))
    if isinstance(e, kind("NoArgsIsHelpError")):
        if e.format_message().strip():  # plain click returns the help; typer's rich mode printed it
            sys.stdout.write(e.format_message() + "\n")
        return EXIT_USER
    if isinstance(e, kind("UsageError")):
        path = e.ctx.command_path if getattr(e, "ctx", None) is not None else ""
        hint = f" (see {path} --help)" if path else ""
        sys.stderr.write(f"effc: error: {_one_line(e.format_message())}{hint}\n")
        return EXIT_USER
    if isinstance(e, kind("ClickException")):
        sys.stderr.write(f"effc: error: {_one_line(e.format_message())}\n")
        return EXIT_USER
    if isinstance(e, UserError):
        if verbose >= 2:
            traceback.print_exception(type(e), e, e.__traceback__)
        sys.stderr.write(f"effc: error: {_one_line(str(e))}\n")
        return EXIT_USER
    if verbose:
        traceback.print_exception(type(e), e, e.__traceback__)
    sys.stderr.write(f"effc: internal error: {type(e).__name__}: {_one_line(str(e))[:500]}"
                     f"{'' if verbose else ' (run with -v for the traceback)'}\n")
    return EXIT_INTERNAL


app = typer.Typer(
    cls=_Group, name="effc", no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="effc: an optimizing compiler for neural-network inference. Compile, run, check, "
         "benchmark and explain ONNX models.",
)


def _version(value: bool) -> None:
    if value:
        import effc
        typer.echo(f"effc {effc.__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="More detail: tracebacks of internal errors, "
                                              "effc's log at info level.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="Print only errors and requested JSON.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print effc's version and exit.")] = False,
) -> None:
    if verbose and quiet:
        raise UserError("-v and -q cannot be used together")
    ctx.obj = State(verbose=verbose, quiet=quiet)
    if verbose:
        import logging
        logging.getLogger("effc").setLevel(logging.INFO if verbose == 1 else logging.DEBUG)


app.command("compile", no_args_is_help=True)(compile_cmd.compile_command)
app.command("run", no_args_is_help=True)(run_cmd.run_command)
app.command("check", no_args_is_help=True)(check_cmd.check_command)
app.command("bench", no_args_is_help=True)(bench_cmd.bench_command)
app.command("explain", no_args_is_help=True)(explain_cmd.explain_command)
app.command("calibrate")(calibrate_cmd.calibrate_command)


def main(argv: Sequence[str] | None = None) -> None:
    """The console script's entry point."""
    app(args=argv, prog_name="effc")


if __name__ == "__main__":
    main()
