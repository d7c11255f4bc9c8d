"""Eager PyTorch's peak activation memory, measured on small functions with known answers."""

from __future__ import annotations

import torch

from effc.eager_memory import eager_peak_bytes

KIB4 = 1024 * 4   # a float32 tensor of 1024 elements


def test_a_chain_holds_two_temporaries_at_once() -> None:
    x = torch.randn(1024)
    # each op reads one temporary while writing the next; the older one is freed right after
    assert eager_peak_bytes(lambda t: (((t * 2).exp() + 1).sin()).cos().neg(), x) == 2 * KIB4


def test_a_value_kept_alive_adds_to_the_peak() -> None:
    def fn(t: torch.Tensor) -> torch.Tensor:
        a = t * 2
        b = a.exp()
        c = b + a          # a, b and c alive together, then the 4-byte sum beside them
        return c.sum()
    assert eager_peak_bytes(fn, torch.randn(1024)) == 3 * KIB4 + 4


def test_views_and_inputs_cost_nothing() -> None:
    x = torch.randn(1024)
    assert eager_peak_bytes(lambda t: t.view(32, 32).t()[:4], x) == 0


def test_in_place_ops_count_their_storage_once() -> None:
    def fn(t: torch.Tensor) -> torch.Tensor:
        a = t * 2
        a.relu_()
        a.mul_(3)
        return a
    assert eager_peak_bytes(fn, torch.randn(1024)) == KIB4


def test_module_parameters_are_not_activations() -> None:
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    # linear output (4x32) and relu output (4x32) are alive together; then 4x8 beside relu's
    assert eager_peak_bytes(m, torch.randn(4, 16)) == 2 * 4 * 32 * 4
