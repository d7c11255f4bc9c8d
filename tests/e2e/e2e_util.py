"""Helpers shared by the end-to-end tests: flatten model outputs, build the float64
reference, and judge a compiled result by the tolerance policy (effc.tolerance)."""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Sequence

import torch

from effc.report import Explain
from effc.tolerance import assert_equivalent


def flat_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output, in a fixed order (ModelOutput, dict, tuple, tensor).
    Non-tensor leaves (None, caches) are skipped."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):  # transformers' ModelOutput is an OrderedDict
        return [t for k in out.keys() for t in flat_tensors(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flat_tensors(o)]
    return []


def to_double(x: Any) -> Any:
    """Floating tensors widened to float64; everything else (ids, masks, ints) unchanged."""
    if isinstance(x, torch.Tensor):
        return x.double() if x.is_floating_point() else x
    if isinstance(x, (tuple, list)):
        return type(x)(to_double(v) for v in x)
    if isinstance(x, dict):
        return {k: to_double(v) for k, v in x.items()}
    return x


def reference64(model: torch.nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any] | None = None) -> list[torch.Tensor]:
    """The fp64 reference: a float64 copy of the eager model run on widened inputs."""
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        return flat_tensors(m64(*to_double(tuple(args)), **to_double(dict(kwargs or {}))))


def check_inference(model: torch.nn.Module, compiled: Callable, args: Sequence[Any],
                    kwargs: Mapping[str, Any] | None = None, context: str = "") -> list[torch.Tensor]:
    """Run ``compiled`` and eager under no_grad and assert the policy against fp64."""
    kwargs = dict(kwargs or {})
    with torch.no_grad():
        actual = flat_tensors(compiled(*args, **kwargs))
        eager = flat_tensors(model(*args, **kwargs))
    ref = reference64(model, args, kwargs)
    assert len(actual) == len(eager) > 0, f"{context}: {len(actual)} outputs, eager has {len(eager)}"
    assert_equivalent(actual, eager, ref, context)
    return actual


def externs_of(explain: Explain) -> dict[str, int]:
    """Extern counts by op name over all graphs; checks the record's shape on the way."""
    total: dict[str, int] = {}
    for g in explain.graphs:
        assert isinstance(g.externs, dict), type(g.externs)
        for op, n in g.externs.items():
            assert isinstance(op, str) and op.startswith("aten."), op
            assert isinstance(n, int) and n > 0, (op, n)
            total[op] = total.get(op, 0) + n
    return total


def fell_back(explain: Explain) -> list[str]:
    return [f"{g.label}: {g.fallback}" for g in explain.graphs if g.fallback]


def pass_modified(explain: Explain, name: str) -> bool:
    return any(p.name == name and p.modified for g in explain.graphs for p in g.passes)
