"""Fixtures for the command-line tests: tiny ONNX models written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_util import gemm_graph, mlp_graph, save_model, weird_graph


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    out = {"mlp": save_model(mlp_graph(), d / "mlp.onnx"),
           "gemm": save_model(gemm_graph(), d / "gemm.onnx"),
           "weird": save_model(weird_graph(), d / "weird.onnx")}
    data = (d / "mlp.onnx").read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (d / "text.onnx").write_text("this is not a model\n")
    out["truncated"], out["text"] = d / "truncated.onnx", d / "text.onnx"
    return out


@pytest.fixture(scope="session")
def _compiled(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from cli_util import effc

    d = tmp_path_factory.mktemp("artifacts")
    out = {}
    for name in ("mlp", "weird"):
        r = effc("compile", models[name], "-o", d / name)
        assert r.code == 0, r
        out[name] = d / name
    return out


@pytest.fixture
def artifact(_compiled: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """Fresh copies of compiled artifact folders (mlp, weird), free to damage."""
    import shutil

    return {k: Path(shutil.copytree(v, tmp_path / k)) for k, v in _compiled.items()}
