"""Test-suite set-up: the verifier on, the compile cache off, deterministic hypothesis profiles,
one torch thread count."""

from __future__ import annotations

import os

os.environ.setdefault("EFFC_VERIFY", "1")
# No whole-program cache ([Note: C program cache]): a test that patches effc's code at run time
# would otherwise load what another compiled (the key covers effc's files, not patches).
# tests/backends/test_c_program_cache.py turns it on, in a folder of its own.
os.environ.setdefault("EFFC_CACHE", "0")

import torch  # noqa: E402

# Without CUDA, Triton kernels run under the interpreter. triton fixes the mode when it is first
# imported (torch._dynamo imports it), so the variable is set here, before any test module loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=40, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "deep", max_examples=1000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("dev", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Tests marked ``gpu`` need CUDA; on machines without it they are reported as skipped."""
    import pytest

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
