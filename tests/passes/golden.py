"""Shared checks for pass tests: golden IR text before -> after, and before/after equivalence.

    res = assert_rewrites(simplify.run, BEFORE, EXPECTED)   # text, no mutation, verify, numerics
    res = assert_unchanged(simplify.run, BEFORE)            # the same graph object comes back

Constants named in the text come from ``constants`` or, when missing there, from seeded random
tensors (``filler``). Inputs are random too, with every size symbol bound to a small value.
"""

from __future__ import annotations

import textwrap
from typing import Callable, Mapping, Sequence

import pytest
import sympy
import torch

from effc.backends.reference import ReferenceProgram
from effc.ir import Graph, TensorType, print_graph
from effc.ir.parser import parse_graph
from effc.ir.verify import verify
from effc.options import Options
from effc.passes import PassResult
from effc.tolerance import assert_equivalent

PassRun = Callable[[Graph, Options], PassResult]


def filler(seed: int = 1234) -> Callable[[TensorType], torch.Tensor]:
    """Random tensors for constants a test does not name: different each, the same every run."""
    gen = torch.Generator().manual_seed(seed)
    return lambda t: random_tensor(t, {}, gen)


def random_tensor(t: TensorType, sizes: Mapping[sympy.Symbol, int],
                  gen: torch.Generator) -> torch.Tensor:
    shape = [d if isinstance(d, int) else int(d.subs(sizes)) for d in t.shape]
    dt = t.dtype.to_torch()
    if t.dtype.is_float:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dt)
    if t.dtype.is_bool:
        return torch.rand(shape, generator=gen) > 0.5
    lo = 0 if dt == torch.uint8 else -5
    return torch.randint(lo, 6, shape, generator=gen, dtype=dt)


def random_inputs(graph: Graph, seed: int = 0) -> list[torch.Tensor]:
    # Distinct small sizes, so a pass that confuses two symbols changes a shape.
    sizes = {s: 2 + i for i, s in enumerate(sorted(graph.symbols(), key=str))}
    gen = torch.Generator().manual_seed(seed)
    return [random_tensor(v.type, sizes, gen) for v in graph.inputs]


def params(table: Sequence[tuple[object, ...]]) -> list[object]:
    """pytest parameters from rows ``(id, *values)``."""
    return [pytest.param(*row[1:], id=str(row[0])) for row in table]


def parse(text: str, constants: Mapping[str, torch.Tensor] | None = None) -> Graph:
    return parse_graph(textwrap.dedent(text), constants, fill=filler())


def normalise(text: str) -> str:
    return textwrap.dedent(text).strip()


def assert_same_results(before: Graph, after: Graph, inputs: Sequence[torch.Tensor] | None = None,
                        eager: Sequence[torch.Tensor] | None = None) -> None:
    """``after`` agrees with ``before`` (or ``eager``) within the tolerance policy."""
    ins = list(inputs) if inputs is not None else random_inputs(before)
    expected = list(eager) if eager is not None else ReferenceProgram(before)(*ins)
    reference = ReferenceProgram(before, upcast=True)(*ins)
    actual = ReferenceProgram(after)(*ins)
    assert_equivalent(actual, expected, reference,
                      f"before:\n{print_graph(before)}after:\n{print_graph(after)}")


def apply(run: PassRun, graph: Graph) -> PassResult:
    """Run a pass, checking that it leaves its input alone and returns valid IR."""
    text = print_graph(graph)
    res = run(graph, Options())
    assert print_graph(graph) == text, "the pass mutated its input graph"
    if res.modified:
        verify(res.graph)
        assert res.graph is not graph
        assert res.notes, "a pass that changed the graph must say what it did"
    else:
        assert res.graph is graph, "an unmodified graph must come back as the same object"
    return res


def assert_rewrites(run: PassRun, before: str, expected: str, *,
                    constants: Mapping[str, torch.Tensor] | None = None,
                    inputs: Sequence[torch.Tensor] | None = None) -> PassResult:
    graph = parse(before, constants)
    res = apply(run, graph)
    got = print_graph(res.graph)
    assert normalise(got) == normalise(expected), f"got:\n{got}expected:\n{normalise(expected)}"
    assert res.modified
    assert_same_results(graph, res.graph, inputs)
    return res


def assert_unchanged(run: PassRun, before: str, *,
                     constants: Mapping[str, torch.Tensor] | None = None) -> PassResult:
    graph = parse(before, constants)
    res = apply(run, graph)
    assert not res.modified, f"expected no change, got:\n{print_graph(res.graph)}"
    assert normalise(print_graph(res.graph)) == normalise(before)
    return res
