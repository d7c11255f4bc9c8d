"""ONNX conformance in CI: a fixed sample of ONNX's backend node cases (every light model is in
``test_onnx_light_models.py``).

The full run (all 1884 node cases, against onnxruntime on the same cases) is
``benchmarks/onnx_conformance.py``; it also writes ``onnx_known_failures.json`` beside this file:
the cases effc does not pass yet, each with its reason. A sampled case on that list must still
fail (so the list cannot go stale when one is fixed); every other sampled case must pass.
"""

from __future__ import annotations

import json
import os

import pytest

from effc.onnx_conformance import effc_runner, light_models, node_cases, run_case

SAMPLE_EVERY = 12   # about 160 of the 1884 node cases, spread over every op family
_KNOWN = json.load(open(os.path.join(os.path.dirname(__file__), "onnx_known_failures.json")))
_NODE = node_cases()
_SAMPLE = {c.name: c for c in _NODE[::SAMPLE_EVERY]}


@pytest.mark.parametrize("name", sorted(_SAMPLE))
def test_node_case(name):
    r = run_case(_SAMPLE[name], effc_runner)
    if name in _KNOWN:
        assert r.status != "pass", f"{name} passes now: remove it from onnx_known_failures.json"
    else:
        assert r.status == "pass", f"{r.status}: {r.detail}"


def test_known_failures_name_real_cases():
    names = {c.name for c in _NODE} | {c.name for c in light_models()}
    assert set(_KNOWN) <= names
