"""print -> parse -> print is the identity on random well-typed graphs (``tests.strategies``)."""

from __future__ import annotations

from hypothesis import given, note

from effc.ir import DType
from effc.ir.parser import parse_graph
from effc.ir.verify import verify

from tests.strategies import GraphCase, examples, graphs


@examples(100)
@given(case=graphs(max_nodes=16, dtypes=(DType.F32, DType.F64, DType.F16)))
def test_print_parse_print_is_identity(case: GraphCase) -> None:
    text = str(case.graph)
    note(text)
    parsed = parse_graph(text, constants=case.graph.constants)
    assert str(parsed) == text
    verify(parsed)
    assert [v.type for v in parsed.inputs] == [v.type for v in case.graph.inputs]
    assert parsed.constants.keys() == case.graph.constants.keys()
    assert all(parsed.constants[k] is t for k, t in case.graph.constants.items())


@examples(40)
@given(case=graphs(max_nodes=16, symbolic=True))
def test_print_parse_print_is_identity_symbolic(case: GraphCase) -> None:
    text = str(case.graph)
    note(text)
    assert str(parse_graph(text, constants=case.graph.constants)) == text
