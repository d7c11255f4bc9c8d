"""Helpers for the command-line tests: tiny ONNX models and running ``effc`` in process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from effc.cli.main import app

# Input and output names that must never become file names or code: quotes, a semicolon, a
# newline, non-ASCII letters, a path separator.
WEIRD_IN = 'in "q";\nä/../→'
WEIRD_OUT = "out 'x';\nÿ"


def save_model(graph: Any, path: Path) -> Path:
    # IR version 8 so that the installed onnxruntime loads it too
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def mlp_graph() -> Any:
    """y = relu(x @ w + b), with a symbolic batch size."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    w = numpy_helper.from_array((np.arange(12, dtype=np.float32).reshape(4, 3) - 6) / 10, "w")
    b = numpy_helper.from_array(np.array([0.5, -0.25, 1.0], np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    return helper.make_graph(nodes, "mlp", [x], [y], [w, b])


def gemm_graph() -> Any:
    """Two outputs from fixed-size inputs: gemm(a, w, c) and a + 1."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 5])
    out1 = helper.make_tensor_value_info("g", TensorProto.FLOAT, [2, 3])
    out2 = helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 5])
    w = numpy_helper.from_array(np.linspace(-1, 1, 15, dtype=np.float32).reshape(3, 5), "w")
    c = numpy_helper.from_array(np.ones(3, np.float32), "c")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    nodes = [helper.make_node("Gemm", ["a", "w", "c"], ["g"], transB=1, alpha=0.5),
             helper.make_node("Add", ["a", "one"], ["s"])]
    return helper.make_graph(nodes, "gemm", [a], [out1, out2], [w, c, one])


def weird_graph() -> Any:
    x = helper.make_tensor_value_info(WEIRD_IN, TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info(WEIRD_OUT, TensorProto.FLOAT, ["n", 3])
    nodes = [helper.make_node("Relu", [WEIRD_IN], ["r"]),
             helper.make_node("Add", ["r", WEIRD_IN], [WEIRD_OUT])]
    return helper.make_graph(nodes, 'we"ird;\nname', [x], [y])


class Run:
    """The result of one ``effc`` invocation."""

    def __init__(self, code: int, stdout: str, stderr: str, exception: BaseException | None) -> None:
        self.code, self.stdout, self.stderr, self.exception = code, stdout, stderr, exception

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def effc(*args: Any) -> Run:
    r = CliRunner().invoke(app, [str(a) for a in args])
    return Run(r.exit_code, r.stdout, r.stderr, r.exception)


def assert_user_error(r: Run, *fragments: str) -> str:
    """Exit status 2 and exactly one line on stderr, ``effc: error: ...``, naming each fragment."""
    assert r.code == 2, r
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("effc: error: "), r
    for f in fragments:
        assert f in lines[0], r
    assert "Traceback" not in r.stdout + r.stderr, r
    return lines[0]


def listing(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}
