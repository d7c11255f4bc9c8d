"""``--memory-budget``: a static CNN over the budget runs its first stage patch by patch, with
the same outputs; a budget nothing can meet, or one that is not a size, is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from cli_util import assert_user_error, effc, save_model
from onnx import TensorProto, helper, numpy_helper

import effc as effc_api


def cnn_graph():
    """conv 3->16 (32x32) -> relu -> depthwise stride-2 conv -> relu -> global pool: the first
    activation (64 KiB) dominates a layer-by-layer plan."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 1, 1])
    w1 = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32) / 3, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 1, 3, 3)).astype(np.float32) / 3, "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=16),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["y"])]
    return helper.make_graph(nodes, "cnn", [x], [y], [w1, w2])


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(cnn_graph(), tmp_path_factory.mktemp("cnn") / "cnn.onnx")


def test_over_budget_the_first_stage_is_patched_and_outputs_agree(cnn: Path, tmp_path: Path) -> None:
    plain = effc_api.compile(str(cnn))
    assert plain.report.memory["arena"] > 40 * 1024
    model = effc_api.compile(str(cnn), memory_budget="40KiB")
    mem = model.report.memory
    assert mem["arena"] + mem["scratch"] <= 40 * 1024, mem
    assert 'kind="patched"' in str(model.graph)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = onnxruntime.InferenceSession(str(cnn)).run(None, {"x": x})[0]
    got = model(torch.from_numpy(x))[0]
    torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got, plain(torch.from_numpy(x))[0], rtol=1e-5, atol=1e-6)

    out = tmp_path / "art"
    r = effc("compile", cnn, "-o", out, "--memory-budget", "40KiB")
    assert r.code == 0, r
    assert 'kind="patched"' in (out / "model.effc").read_text()
    assert json.loads((out / "manifest.json").read_text())["options"]["memory_budget"] == 40960
    r = effc("explain", cnn, "--memory-budget", "40KiB")
    assert r.code == 0 and "tile scratch" in r.stdout and "patched" in r.stdout, r


def test_a_budget_nothing_meets_names_the_smallest_peak(cnn: Path, tmp_path: Path) -> None:
    out = tmp_path / "art"
    line = assert_user_error(effc("compile", cnn, "-o", out, "--memory-budget", "1KiB"),
                             "memory budget of 1.0 KiB", "smallest peak found is")
    assert "patch" in line or "tiles" in line
    assert not out.exists()


def test_a_budget_that_is_not_a_size(cnn: Path, tmp_path: Path) -> None:
    assert_user_error(effc("compile", cnn, "-o", tmp_path / "a", "--memory-budget", "lots"),
                      "memory_budget", "512KiB")
    assert_user_error(effc("compile", cnn, "-o", tmp_path / "a", "--memory-budget", "-3"), "memory_budget")
