"""effc explain: passes, kernels, fallbacks and peak memory, as tables and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_util import WEIRD_IN, WEIRD_OUT, assert_user_error, effc

from effc.onnx_model import compile_onnx
from effc.options import Options
from effc.passes import PASS_NAMES


def test_explain_json(models: dict[str, Path]) -> None:
    r = effc("explain", models["mlp"], "--json", "--dim", "batch=8")
    assert r.code == 0, r
    data = json.loads(r.stdout)
    assert {"passes", "kernels", "fallbacks", "peak_bytes", "graphs"} <= set(data)
    assert [p["name"] for p in data["passes"]] == list(PASS_NAMES)
    # one kernel per non-constant top-level node of the final IR, named as in model.effc
    final = str(compile_onnx(models["mlp"], Options()).graph).splitlines()
    nodes = [ln.split()[0:3] for ln in final
             if ln.startswith("  %") and " = " in ln and "constant()" not in ln]
    assert [(k["name"], k["op"]) for k in data["kernels"]] == [(n[0], n[2].split("(")[0]) for n in nodes]
    # the mlp (gemm, relu, gemm, relu) fuses into two matmul kernels with relu epilogues
    last = data["kernels"][-1]
    assert (last["op"], last["kind"]) == ("kernel", "matmul")
    assert last["nodes"][-1] == "relu" and len(last["nodes"]) == 2, last["nodes"]
    assert (last["dtype"], last["shape"]) == ("f32", "[batch, 3]")
    assert last["output_bytes"] == 8 * 3 * 4
    assert last["measured_seconds"] is None and data["measured"] is False
    assert last["predicted_seconds"] is None or last["predicted_seconds"] > 0
    assert data["fallbacks"] == [] and data["sizes"] == {"batch": 8}
    assert data["peak_bytes"] >= 8 * 3 * 4


def test_explain_measure(models: dict[str, Path]) -> None:
    r = effc("explain", models["gemm"], "--json", "--measure", "--repeat", "2")
    assert r.code == 0, r
    data = json.loads(r.stdout)
    assert data["measured"] and data["kernels"]
    assert all(k["measured_seconds"] > 0 for k in data["kernels"])


def test_explain_table(models: dict[str, Path]) -> None:
    r = effc("explain", models["mlp"], "--measure", "--repeat", "1")
    assert r.code == 0, r
    for text in ("passes", "kernels", "fallbacks: none", "peak intermediate memory", "matmul",
                 "f32[batch, 3]", *PASS_NAMES):
        assert text in r.stdout, r


def test_explain_weird_names(models: dict[str, Path]) -> None:
    r = effc("explain", models["weird"], "--json")
    assert r.code == 0, r
    data = json.loads(r.stdout)
    assert data["inputs"][0]["name"] == WEIRD_IN and data["outputs"][0]["name"] == WEIRD_OUT
    assert r.stdout.isascii()


def test_explain_bad_input(models: dict[str, Path], tmp_path: Path) -> None:
    assert_user_error(effc("explain", tmp_path / "x.onnx"), "no such file")
    assert_user_error(effc("explain", models["truncated"]), "truncated.onnx")
    assert_user_error(effc("explain", models["mlp"], "--disable-pass", "nope"), "unknown pass nope")


def test_cost_model_answers_and_failures(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from effc.cli import explain_data

    def seconds(node: object, env: dict) -> float:
        return 1e-3

    def broken(node: object, env: dict) -> float:
        raise ValueError("no rule for this op")

    monkeypatch.setattr(explain_data, "cost_model", lambda: seconds)
    data = json.loads(effc("explain", models["mlp"], "--json").stdout)
    assert [k["predicted_seconds"] for k in data["kernels"]] == [1e-3] * len(data["kernels"])
    assert data["cost_model"].endswith("seconds")
    monkeypatch.setattr(explain_data, "cost_model", lambda: broken)
    r = effc("explain", models["mlp"], "--json")
    assert r.code == 0, r
    for k in json.loads(r.stdout)["kernels"]:
        assert k["predicted_seconds"] is None and k["prediction_error"] == "ValueError: no rule for this op"
    r = effc("explain", models["mlp"])
    assert r.code == 0 and "cost model failed on" in r.stdout, r
