"""Property tests over random well-typed graphs (``tests.strategies``).

Every pass in the pipeline, and the whole pipeline, must: keep the graph's meaning within the
tolerance policy ([Note: tolerance policy] in ``effc.tolerance``), judged against the float64
reference of the graph before it; leave its input graph untouched; and produce a graph the
verifier accepts. The verifier must accept every generated graph and reject each kind of broken
one. A failure prints the minimal graph as IR text (the case's repr and a ``note``).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from effc.backends.reference import ReferenceProgram
from effc.ir import DType, Graph
from effc.ir.verify import VerificationError, verify
from effc.options import Options
from effc.passes import PIPELINE, PassFn, run_pipeline
from effc.tolerance import assert_equivalent

from .strategies import GraphCase, broken_graphs, examples, graphs, sizes


def _concrete(data: st.DataObject, case: GraphCase) -> list[tuple[dict, list[torch.Tensor]]]:
    """Inputs at one size assignment, or at two different ones when the graph is symbolic."""
    first = data.draw(sizes(case), label="sizes")
    envs = [first] + ([data.draw(sizes(case, avoid=first), label="sizes2")] if case.symbols else [])
    seed = data.draw(st.integers(0, 2**16), label="seed")
    return [(env, case.inputs(env, seed)) for env in envs]


def _check_equivalent(before: Graph, after: Graph, data: st.DataObject, case: GraphCase,
                      what: str) -> None:
    eager, ref, actual = (ReferenceProgram(before), ReferenceProgram(before, upcast=True),
                          ReferenceProgram(after))
    for env, ins in _concrete(data, case):
        sizes_text = ", ".join(f"{k}={v}" for k, v in env.items()) or "static"
        context = f"{what} changed the result ({sizes_text})\nbefore:\n{before}after:\n{after}"
        assert_equivalent(actual(*ins), eager(*ins), ref(*ins), context=context)


def _pass_property(name: str, fn: PassFn, case: GraphCase, data: st.DataObject) -> None:
    graph = case.graph
    text = str(graph)
    note(f"graph before {name}:\n{text}")
    verify(graph)
    result = fn(graph, Options())
    note(f"graph after {name} (modified={result.modified}):\n{result.graph}")
    assert str(graph) == text, f"{name} mutated its input graph"
    if not result.modified:
        assert result.graph is graph, f"{name} reports no change but returns a different graph"
    verify(result.graph)
    _check_equivalent(graph, result.graph, data, case, name)


@pytest.mark.parametrize("name,fn", PIPELINE, ids=[n for n, _ in PIPELINE])
@examples(40)
@given(case=graphs(), data=st.data())
def test_pass_preserves_meaning(name: str, fn: PassFn, case: GraphCase, data: st.DataObject) -> None:
    _pass_property(name, fn, case, data)


@pytest.mark.parametrize("name,fn", PIPELINE, ids=[n for n, _ in PIPELINE])
@examples(20)
@given(case=graphs(symbolic=True), data=st.data())
def test_pass_preserves_meaning_symbolic(name: str, fn: PassFn, case: GraphCase,
                                         data: st.DataObject) -> None:
    _pass_property(name, fn, case, data)


@examples(40)
@given(case=graphs(dtypes=(DType.F32, DType.F32, DType.F64, DType.F16)), data=st.data())
def test_pipeline_preserves_meaning(case: GraphCase, data: st.DataObject) -> None:
    graph = case.graph
    text = str(graph)
    note(f"graph before the pipeline:\n{text}")
    after, records = run_pipeline(graph, PIPELINE, Options(verify=True))
    note(f"graph after the pipeline:\n{after}")
    assert str(graph) == text, "the pipeline mutated its input graph"
    assert [r.name for r in records] == [n for n, _ in PIPELINE]
    verify(after)
    _check_equivalent(graph, after, data, case, "the pipeline")


@examples(40)
@given(case=graphs(), data=st.data())
def test_generated_graphs_verify_and_run(case: GraphCase, data: st.DataObject) -> None:
    """The strategy's own contract: graphs verify, run, and stay finite [Note: safe values]."""
    note(str(case.graph))
    verify(case.graph)
    for env, ins in _concrete(data, case):
        outs = ReferenceProgram(case.graph)(*ins)
        for v, t in zip(case.graph.outputs, outs):
            assert t.dtype == v.type.dtype.to_torch()
            assert tuple(t.shape) == tuple(int(d.subs(env)) if not isinstance(d, int) else d
                                           for d in v.type.shape)
            assert not t.is_floating_point() or bool(torch.isfinite(t).all()), f"non-finite output {v}"


@examples(60)
@given(broken=broken_graphs())
def test_verifier_rejects_broken_graphs(broken: tuple[GraphCase, str, Graph]) -> None:
    case, kind, graph = broken
    note(f"mutation: {kind}\nbroken graph:\n{_printable(graph)}")
    verify(case.graph)
    with pytest.raises(VerificationError):
        verify(graph)


def _printable(graph: Graph) -> str:
    try:
        return str(graph)
    except Exception as e:  # a mutated graph the printer cannot show
        return f"<unprintable: {e}>"
