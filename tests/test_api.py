"""effc.compile, options, the explain record, debug dumps and the torch.compile entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import effc
from effc.options import Options


@pytest.fixture(autouse=True)
def _reset() -> None:
    torch._dynamo.reset()


def _model() -> torch.nn.Module:
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    m[1].running_mean.uniform_(-1, 1)
    m[1].running_var.uniform_(0.5, 2)
    return m.eval()


def test_compile_returns_callable_with_explain() -> None:
    m, x = _model(), torch.randn(2, 3, 8, 8)
    compiled = effc.compile(m, [x])
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), rtol=1e-5, atol=1e-5)
    ex = compiled.explain()
    data = json.loads(ex.json())
    assert {"graphs", "passes", "kernels", "fallbacks", "peak_bytes"} <= set(data)
    assert [p["name"] for p in data["passes"]] == list(effc.passes.PASS_NAMES)
    assert "graph g" in str(ex)
    # parameters became constants, so batch norm folded into the convolution
    g = ex.graphs[0]
    assert next(p for p in g.passes if p.name == "fold_batchnorm").modified
    assert "batch_norm" not in g.ops and g.ops["constant"] >= 2


def test_parameters_are_constants_through_torch_compile_too() -> None:
    m, x = _model(), torch.randn(2, 3, 8, 8)
    b = effc.backend()
    with torch.no_grad():
        torch.compile(m, backend=b)(x)
    g = b.explain().graphs[0]
    assert "batch_norm" not in g.ops, g.ir
    assert "0.weight" in g.ir  # constants keep their parameter names


def test_disable_passes_is_recorded() -> None:
    m, x = _model(), torch.randn(2, 3, 8, 8)
    compiled = effc.compile(m, [x], disable_passes=["fold_batchnorm"])
    recs = {p.name: p for p in compiled.explain().graphs[0].passes}
    assert recs["fold_batchnorm"].skipped and not recs["simplify"].skipped


@pytest.mark.parametrize("bad, message", [
    ({"target": "gpu"}, "unknown target"),
    ({"disable_passes": ["no_such_pass"]}, "unknown pass no_such_pass"),
    ({"bogus": 1}, "unknown option bogus"),
    ({"training": "maybe"}, "training"),
])
def test_bad_options_are_rejected_clearly(bad, message) -> None:
    with pytest.raises(effc.OptionError, match=message):
        Options.from_mapping(bad)


def test_unavailable_target_is_a_clear_error(monkeypatch) -> None:
    import effc.backends.triton as triton_backend
    monkeypatch.setattr(triton_backend, "triton_available", lambda: False)
    with pytest.raises(effc.OptionError, match="target 'triton' needs the triton package"):
        effc.compile(_model(), [torch.randn(1, 3, 8, 8)], target="triton")


def test_options_reach_the_backend_through_torch_compile() -> None:
    m, x = _model(), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.compile(m, backend="effc", options={"disable_passes": ["simplify"]})(x)
    g = effc.explain().graphs[-1]
    assert next(p for p in g.passes if p.name == "simplify").skipped


def test_dump_dir_gets_ir_after_every_pass(tmp_path) -> None:
    m, x = _model(), torch.randn(2, 3, 8, 8)
    effc.compile(m, [x], dump_dir=str(tmp_path))
    (folder,) = list(tmp_path.iterdir())
    names = sorted(p.name for p in folder.iterdir())
    assert names[0] == "00_input.txt" and "passes.json" in names
    assert len([n for n in names if n.endswith(".txt")]) == 1 + len(effc.passes.PASS_NAMES)
    assert "convolution(" in (folder / "00_input.txt").read_text()
    timings = json.loads((folder / "passes.json").read_text())
    assert all("seconds" in t for t in timings)


def test_entry_point_registers_backend_without_importing_effc() -> None:
    code = (
        "import sys, torch\n"
        "assert 'effc' not in sys.modules\n"
        "f = torch.compile(lambda x: torch.relu(x) * 2, backend='effc')\n"
        "x = torch.randn(4)\n"
        "assert torch.equal(f(x), torch.relu(x) * 2)\n"
        "import effc\n"
        "assert effc.explain().graphs, 'no graph compiled by effc'\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_onnx_paths_go_to_the_onnx_frontend() -> None:
    with pytest.raises(effc.UserError, match="no such file: model.onnx"):
        effc.compile("model.onnx")
    with pytest.raises(effc.UserError, match="no example inputs"):
        effc.compile("model.onnx", [torch.ones(1)])


def test_memory_budget_patches_a_cnn_or_says_what_it_reached() -> None:
    from effc.errors import MemoryBudgetError
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU6(),
                            torch.nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16), torch.nn.ReLU6(),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    x = torch.randn(1, 3, 48, 48)
    plain = effc.compile(m, (x,)).explain().graphs[0].memory
    assert plain["arena"] > 100 * 1024
    torch._dynamo.reset()
    compiled = effc.compile(m, (x,), memory_budget="100KiB")
    g = compiled.explain().graphs[0]
    assert g.memory["arena"] + g.memory["scratch"] <= 100 * 1024
    assert g.ops.get("kernel", 0) >= 1 and 'kind="patched"' in g.ir
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()
    with pytest.raises(MemoryBudgetError, match="smallest peak found is"):
        effc.compile(m, (x,), memory_budget="2KiB")
