"""``effc compile --target c --standalone``: the exported library builds with cc and make, its
example program runs the model from files, and the outputs match onnxruntime; with weights
embedded too. A model with a step no C generator covers is refused, naming it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from cli_util import assert_user_error, effc, listing, save_model
from onnx import TensorProto, helper

from effc.backends.c.build import compiler_available

pytestmark = pytest.mark.skipif(not (compiler_available() and shutil.which("make")),
                                reason="no C compiler or make")

SMALLNET = Path(__file__).resolve().parents[2] / "examples" / "smallnet.onnx"
FILES = {"model.c", "model.h", "Makefile", "main.c", "effc-standalone.json"}


def _run_example(folder: Path, batch: int, x: np.ndarray, weights: bool) -> np.ndarray:
    subprocess.run(["make", "-s", "-C", str(folder)], check=True, capture_output=True)
    (folder / "x.bin").write_bytes(x.tobytes())
    args = [str(folder / "main"), str(batch), str(folder / "x.bin"), str(folder / "y.bin")]
    if weights:
        args.append(str(folder / "weights.bin"))
    subprocess.run(args, check=True, capture_output=True, cwd=folder)
    return np.frombuffer((folder / "y.bin").read_bytes(), dtype=np.float32).reshape(batch, 10)


@pytest.mark.parametrize("embed", [False, True], ids=["weights.bin", "embedded"])
def test_standalone_library_builds_runs_and_matches(tmp_path: Path, embed: bool) -> None:
    out = tmp_path / "lib"
    args = ["compile", SMALLNET, "-o", out, "--target", "c", "--standalone"]
    r = effc(*args, *(["--embed-weights"] if embed else []))
    assert r.code == 0, r
    assert FILES <= listing(out) and ("weights.bin" in listing(out)) == (not embed)
    header = (out / "model.h").read_text()
    assert "effc_model_run" in header and "sizes[0] = batch" in header
    assert "malloc" not in (out / "model.c").read_text()   # the library allocates nothing
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    got = _run_example(out, 3, x, weights=not embed)
    want = onnxruntime.InferenceSession(str(SMALLNET)).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_standalone_refuses_steps_without_c_and_needs_target_c(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    axis = helper.make_tensor("axis", TensorProto.INT64, [], [1])
    nodes = [helper.make_node("Exp", ["x"], ["e"]), helper.make_node("CumSum", ["e", "axis"], ["y"])]
    model = save_model(helper.make_graph(nodes, "scan", [x], [y], [axis]), tmp_path / "scan.onnx")
    assert_user_error(effc("compile", model, "-o", tmp_path / "a", "--target", "c", "--standalone"),
                      "cumsum")
    assert not (tmp_path / "a").exists()
    assert_user_error(effc("compile", model, "-o", tmp_path / "b", "--standalone"), "--target c")
    assert_user_error(effc("compile", model, "-o", tmp_path / "c", "--embed-weights"), "--standalone")
