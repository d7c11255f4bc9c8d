"""effc check: against the float64 reference and onnxruntime; mismatches exit 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_util import WEIRD_IN, assert_user_error, effc

from effc.cli.npz import write_npz
from effc.onnx_model import OnnxModel


@pytest.mark.parametrize("against", ["reference", "onnxruntime"])
def test_check_passes(models: dict[str, Path], against: str) -> None:
    r = effc("check", models["mlp"], "--against", against, "--dim", "batch=6")
    assert r.code == 0, r
    for text in ("y", "[6, 3]", "max abs err", "max rel err", "ok", "all 1 output checks within tolerance"):
        assert text in r.stdout, r
    assert "MISMATCH" not in r.stdout


def test_check_two_outputs_and_given_inputs(models: dict[str, Path], tmp_path: Path) -> None:
    write_npz(tmp_path / "in.npz", {"a": np.full((2, 5), 3.0, np.float32)})
    r = effc("check", models["gemm"], "--inputs", tmp_path / "in.npz")
    assert r.code == 0, r
    assert "random (seed 0)" in r.stdout and "in.npz" in r.stdout
    assert "all 4 output checks within tolerance" in r.stdout, r


def test_check_weird_names(models: dict[str, Path], tmp_path: Path) -> None:
    write_npz(tmp_path / "in.npz", {WEIRD_IN: np.ones((2, 3), np.float32)})
    r = effc("check", models["weird"], "--inputs", tmp_path / "in.npz")
    assert r.code == 0, r
    assert "out 'x';\\nÿ" in r.stdout


@pytest.mark.parametrize("against", ["reference", "onnxruntime"])
def test_mismatch_exits_1(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, against: str) -> None:
    call = OnnxModel.__call__

    def wrong(self: OnnxModel, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t + 1e-3 for t in call(self, *tensors))

    monkeypatch.setattr(OnnxModel, "__call__", wrong)
    r = effc("check", models["mlp"], "--against", against)
    assert r.code == 1, r
    assert "MISMATCH" in r.stdout and "1 of 1 output checks beyond tolerance" in r.stdout, r
    r = effc("-q", "check", models["mlp"], "--against", against)
    assert r.code == 1 and r.stdout == "" and "mismatch: output 'y'" in r.stderr, r


def test_onnxruntime_disagreeing_with_the_import_is_a_mismatch(models: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from effc.cli import oracles

    run = oracles.OrtSession.run

    def off(self: oracles.OrtSession, feeds: dict) -> list[np.ndarray]:
        return [a * 1.01 for a in run(self, feeds)]

    monkeypatch.setattr(oracles.OrtSession, "run", off)
    r = effc("check", models["mlp"])
    assert r.code == 1 and "onnxruntime disagrees with effc's import" in r.stdout, r


def test_onnxruntime_failure_is_reported(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Load model failed:/onnxruntime_src/x.cc:1 "
                           "onnxruntime::Model::Model(int, char) Unsupported model IR version: 99\n")

    monkeypatch.setattr(onnxruntime, "InferenceSession", broken)
    line = assert_user_error(effc("check", models["mlp"]), "onnxruntime cannot load this model",
                             "Unsupported model IR version: 99")
    assert "onnxruntime_src" not in line
    assert effc("check", models["mlp"], "--against", "reference").code == 0


@pytest.mark.parametrize("args, fragment", [
    (["--against", "tensorflow"], "unknown value 'tensorflow'"),
    (["--against", "reference,onnxruntime"], "not several"),
    (["--dim", "batch=two"], "NAME=SIZE"),
    (["--inputs", "{tmp}/missing.npz"], "no such file"),
])
def test_check_bad_input(models: dict[str, Path], tmp_path: Path, args: list[str], fragment: str) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    assert_user_error(effc("check", models["mlp"], *args), fragment)


def test_check_bad_model(models: dict[str, Path], tmp_path: Path) -> None:
    assert_user_error(effc("check", tmp_path), "is a folder")
    assert_user_error(effc("check", models["text"]), "text.onnx")
