"""effc --version, --help, global options, and how usage errors are reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_util import assert_user_error, effc

import effc as effc_pkg

COMMANDS = ("compile", "run", "check", "bench", "explain")


def test_version() -> None:
    r = effc("--version")
    assert r.code == 0 and r.stdout.strip() == f"effc {effc_pkg.__version__}", r


@pytest.mark.parametrize("command", (None,) + COMMANDS)
def test_help(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    r = effc(*args)
    assert r.code == 0, r
    assert "Usage" in r.stdout and r.stderr == "", r
    if command is None:
        for c in COMMANDS:
            assert c in r.stdout
    else:
        assert f"effc {command}" in r.stdout


def test_no_arguments_shows_help() -> None:
    r = effc()
    assert r.code == 2 and "Usage" in r.stdout, r


@pytest.mark.parametrize("args, fragment", [
    (["frobnicate"], "No such command"),
    (["compile"], ""),
    (["compile", "m.onnx"], "--output"),
    (["compile", "m.onnx", "-o", "x", "--bogus"], "--bogus"),
    (["bench", "m.onnx", "--repeat", "0"], "--repeat"),
    (["-v", "-q", "run", "x"], "-v and -q"),
])
def test_usage_errors_are_one_line(args: list[str], fragment: str) -> None:
    r = effc(*args)
    if args == ["compile"]:          # no arguments: the command's help, exit 2
        assert r.code == 2 and "Usage" in r.stdout, r
        return
    assert_user_error(r, fragment)


def _console_script(*args: object) -> subprocess.CompletedProcess:
    """The installed entry point (``effc = effc.cli.main:main``), in a fresh process."""
    exe = Path(sys.executable).with_name("effc")
    assert exe.exists(), "reinstall effc (pip install -e .) to get the effc command"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_console_script_version() -> None:
    out = _console_script("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"effc {effc_pkg.__version__}", out


def test_console_script_end_to_end(models: dict[str, Path], tmp_path: Path) -> None:
    out = _console_script("compile", models["mlp"], "-o", tmp_path / "a")
    assert out.returncode == 0 and (tmp_path / "a" / "manifest.json").is_file(), out
    r = effc("run", tmp_path / "a", "--dim", "batch=2")    # in process: a torch import costs 3 s
    assert r.code == 0 and "[2, 3]" in r.stdout, r
    out = _console_script("run", tmp_path / "a", "--dim", "batch=none")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out
    assert out.stderr.startswith("effc: error: --dim 'batch=none'"), out


def test_help_does_not_import_the_compiler() -> None:
    """``effc --help`` stays fast: torch, numpy and onnx load only when a command runs."""
    code = ("import sys, effc.cli.main; heavy = {'torch', 'numpy', 'onnx', 'onnxruntime'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out
