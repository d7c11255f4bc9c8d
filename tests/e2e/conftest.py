"""End-to-end test set-up: one torch thread, and every test starts from an empty Dynamo cache.

Compiled code and guards from one test would otherwise serve (or be recompiled by) the next,
so graph counts and explain records would depend on test order.

One thread because these tests are dominated by many small kernels (and float64 references,
whose convolutions take a slow path): with two OpenMP threads on a two-core machine where
anything else is running, every parallel region waits for a descheduled thread, and the
float64 MobileNetV2 reference went from 0.03 s to 20 s.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
