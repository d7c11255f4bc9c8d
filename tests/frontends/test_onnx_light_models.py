"""Every real model shipped inside the onnx package (``onnx/backend/test/data/light``: AlexNet,
DenseNet-121, Inception v1 and v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512, with
light weights) compiles and matches its expected output, fed the input ONNX's own runner uses."""

from __future__ import annotations

import pytest

from effc.onnx_conformance import effc_runner, light_models, run_case

_LIGHT = {c.name: c for c in light_models()}


def test_all_nine_models_are_found():
    assert len(_LIGHT) == 9, sorted(_LIGHT)


@pytest.mark.parametrize("name", sorted(_LIGHT))
def test_light_model(name):
    r = run_case(_LIGHT[name], effc_runner)
    assert r.status == "pass", f"{r.status}: {r.detail}"
