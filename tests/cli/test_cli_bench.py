"""effc bench: medians and speedups against onnxruntime and op-by-op torch (no timing asserts)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from cli_util import assert_user_error, effc

from effc.cli.bench_cmd import TORCH_LABEL


def test_bench_against_both(models: dict[str, Path]) -> None:
    threads = torch.get_num_threads()
    r = effc("bench", models["mlp"], "--repeat", "3", "--warmup", "1", "--threads", "1", "--dim", "batch=2")
    assert r.code == 0, r
    for text in ("effc (reference target)", "onnxruntime", TORCH_LABEL, "median", "effc speedup",
                 "1 threads", "batch=2"):
        assert text in r.stdout, r
    assert len(re.findall(r"\b\d+\.\d\dx\b", r.stdout)) == 2, r    # a speedup for each other system
    assert torch.get_num_threads() == threads      # restored after the run


@pytest.mark.parametrize("against, present, absent", [
    ("torch", TORCH_LABEL, "onnxruntime"),
    ("onnxruntime", "onnxruntime", TORCH_LABEL),
])
def test_bench_one_other(models: dict[str, Path], against: str, present: str, absent: str) -> None:
    r = effc("bench", models["gemm"], "--against", against, "--repeat", "2", "--warmup", "0")
    assert r.code == 0, r
    assert present in r.stdout and absent not in r.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--against", "tvm"], "unknown value 'tvm'"),
    (["--against", ""], "unknown value nothing"),
    (["--repeat", "0"], "--repeat"),
    (["--threads", "0"], "--threads"),
    (["--dim", "x=1"], "no size of that name"),
])
def test_bench_bad_input(models: dict[str, Path], args: list[str], fragment: str) -> None:
    assert_user_error(effc("bench", models["mlp"], *args), fragment)
