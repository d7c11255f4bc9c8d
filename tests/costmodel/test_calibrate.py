"""Calibration: the ceilings are measured, cached atomically per target, read back, and a
missing or damaged cache falls back to the defaults."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from effc.cli.main import app
from effc.costmodel import CPU_DEFAULT, predict_node
from effc.costmodel import calibrate as cal
from effc.ir import DType, GraphBuilder, Op, TensorType


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cal.forget()
    yield tmp_path
    cal.forget()


def _relu_node():
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (256, 256)))
    return b.op(Op.RELU, [x]).node


def test_calibration_is_cached_and_used_by_predictions(cache_home):
    assert cal.cached_target() is None
    assert predict_node(_relu_node(), {}).confidence == "low"  # uncalibrated defaults
    m = cal.calibrate(quick=True)
    t = m.target
    assert t.calibrated and t.bandwidth > 0 and t.peak_flops > 0 and t.overhead > 0
    assert m.path.startswith(str(cache_home)) and os.path.exists(m.path)
    assert cal.target_key() in t.name
    cal.forget()
    assert cal.current_target() == t
    p = predict_node(_relu_node(), {})
    assert p.confidence == "medium" and p.features["target"] == t.name
    assert not [f for f in os.listdir(os.path.dirname(m.path)) if f.startswith(".calibration-")]


@pytest.mark.parametrize("damage", ["truncated", "negative", "other target", "old format"])
def test_a_damaged_or_foreign_cache_means_the_defaults(damage):
    path = cal.calibrate(quick=True).path
    d = json.load(open(path))
    if damage == "truncated":
        open(path, "w").write(json.dumps(d)[:20])
    else:
        d.update({"negative": {"bandwidth": -1.0}, "other target": {"key": "sm90 some GPU"},
                  "old format": {"format": 0}}[damage])
        json.dump(d, open(path, "w"))
    cal.forget()
    assert cal.cached_target() is None
    assert cal.current_target() is CPU_DEFAULT


def test_the_calibrate_command():
    r = CliRunner().invoke(app, ["calibrate", "--quick", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out) >= {"target", "bandwidth_bytes_per_s", "peak_flops", "overhead_s", "cache"}
    assert os.path.exists(out["cache"])
    r = CliRunner().invoke(app, ["calibrate", "--device", "tpu"])
    assert r.exit_code == 2
