"""The verifier accepts well-formed graphs and rejects each kind of broken one.

Broken graphs are made by constructing Node and Graph objects directly, the way a buggy pass
would, since GraphBuilder and the parser refuse to make them.
"""

from __future__ import annotations

import pytest
import sympy
import torch

from effc.ir import DType, Graph, GraphBuilder, InputRef, Node, Op, TensorType, Value, size_symbol
from effc.ir.parser import parse_graph
from effc.ir.verify import VerificationError, verify

s0, s1 = size_symbol("s0"), size_symbol("s1")
F = DType.F32


def good() -> Graph:
    """x -> relu -> matmul(w) -> add(x) -> split -> cat; symbolic batch, one constant."""
    b = GraphBuilder()
    x = b.input("x", TensorType(F, (s0, 4)))
    w = b.constant(torch.randn(4, 4), "w")
    r = b.op(Op.RELU, [x])
    m = b.op(Op.MATMUL, [r, w])
    a = b.op(Op.ADD, [m, x])
    p, q = b.node(Op.SPLIT, [a], {"dim": 1, "sizes": (1, 3)}).outputs
    c = b.op(Op.CAT, [q, p], dim=1)
    return b.build([c])


def rebuilt(g: Graph, nodes: list[Node] | None = None, outputs: list[Value] | None = None,
            constants: dict[str, torch.Tensor] | None = None) -> Graph:
    return Graph(g.inputs, g.nodes if nodes is None else nodes,
                 g.outputs if outputs is None else outputs,
                 g.constants if constants is None else constants)


def replace_node(g: Graph, index: int, node: Node) -> Graph:
    """Put ``node`` at ``index``, rewiring later uses of the old node's outputs to the new ones."""
    old = g.nodes[index]
    remap = dict(zip(old.outputs, node.outputs))
    nodes = list(g.nodes[:index]) + [node]
    for n in g.nodes[index + 1:]:
        nodes.append(Node(n.op, [remap.get(v, v) for v in n.inputs], n.attrs, [v.type for v in n.outputs]))
        remap.update(zip(n.outputs, nodes[-1].outputs))
    return rebuilt(g, nodes, [remap.get(v, v) for v in g.outputs])


def rejects(g: Graph, *words: str) -> str:
    with pytest.raises(VerificationError) as err:
        verify(g)
    msg = str(err.value)
    for w in words:
        assert w in msg, msg
    return msg


def test_accepts_built_and_parsed_graphs() -> None:
    g = good()
    verify(g)
    verify(parse_graph(str(g), g.constants))


def test_accepts_extern_and_empty_graphs() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(F, (s0, 2)))
    e = b.node(Op.EXTERN, [x], {"target": "aten::erfc", "args": (InputRef(0),), "kwargs": {}},
               [TensorType(F, (s0, 2))]).output
    verify(b.build([e]))
    verify(GraphBuilder().build([]))


def test_use_before_def() -> None:
    g = good()
    nodes = list(g.nodes)
    nodes[1], nodes[2] = nodes[2], nodes[1]  # matmul now precedes the relu it reads
    msg = rejects(rebuilt(g, nodes), "(matmul, #1)", "used before it is defined")
    assert ">>   %1 = matmul(%<undefined>, %0) : f32[s0, 4]" in msg  # marker on the offending line


def test_value_from_another_graph() -> None:
    g = good()
    stranger = Value(TensorType(F, (s0, 4)), None, 0, "y")
    bad = Node(Op.RELU, [stranger], {}, [TensorType(F, (s0, 4))])
    rejects(replace_node(g, 2, bad), "(relu, #2)", "not defined in this graph")


def test_node_listed_twice() -> None:
    g = good()
    rejects(rebuilt(g, list(g.nodes) + [g.nodes[1]]), "appears twice")


def test_undefined_output() -> None:
    g = good()
    rejects(rebuilt(g, outputs=[g.nodes[1].output, Value(TensorType(F, (4,)))]),
            "return", "graph output", "not defined")


def test_wrong_recorded_type() -> None:
    g = good()
    relu = g.nodes[1]
    bad = Node(Op.RELU, relu.inputs, {}, [TensorType(F, (s0, 5))])
    rejects(replace_node(g, 1, bad), "%1 (relu, #1)", "recorded as f32[s0, 5], the rule infers f32[s0, 4]")
    bad = Node(Op.RELU, relu.inputs, {}, [TensorType(DType.F16, (s0, 4))])
    rejects(replace_node(g, 1, bad), "recorded as f16[s0, 4]")


def test_wrong_number_of_outputs() -> None:
    g = good()
    split = g.nodes[4]
    bad = Node(Op.SPLIT, split.inputs, split.attrs, [split.outputs[0].type])
    rejects(rebuilt(g, list(g.nodes[:4]) + [bad]), "records 1 outputs, the rule infers 2")


def test_equivalent_symbolic_types_are_accepted() -> None:
    g = good()
    relu = g.nodes[1]
    same = Node(Op.RELU, relu.inputs, {}, [TensorType(F, (sympy.Max(1, s0), 2 * 2))])
    verify(replace_node(g, 1, same))


def test_ill_typed_inputs() -> None:
    g = good()
    w = g.nodes[0].output
    bad = Node(Op.MATMUL, [w, g.nodes[1].output], {}, [TensorType(F, (4, 4))])  # [4,4] @ [s0,4]
    rejects(replace_node(g, 2, bad), "(matmul, #2)", "the shape rule rejects the node")


def test_missing_and_extra_attributes() -> None:
    g = good()
    split = g.nodes[4]
    bad = Node(Op.SPLIT, split.inputs, {"dim": 1}, [v.type for v in split.outputs])
    rejects(replace_node(g, 4, bad), "(split, #4)", "missing attributes ['sizes']")
    bad = Node(Op.RELU, g.nodes[1].inputs, {"inplace": True}, [g.nodes[1].output.type])
    rejects(replace_node(g, 1, bad), "unexpected ['inplace']")


def test_non_attribute_value() -> None:
    g = good()
    cat = g.nodes[-1]
    bad = Node(Op.CAT, cat.inputs, {"dim": object()}, [cat.output.type])
    rejects(replace_node(g, len(g.nodes) - 1, bad), "attribute dim")


def test_dangling_constant() -> None:
    g = good()
    rejects(rebuilt(g, constants={}), "(constant, #0)", "constant 'w' is not in the graph's constant table")


def test_constant_type_mismatch() -> None:
    g = good()
    rejects(rebuilt(g, constants={"w": torch.zeros(4, 4, dtype=torch.float64)}),
            "constant 'w' holds f64[4, 4], the node records f32[4, 4]")
    rejects(rebuilt(g, constants={"w": torch.zeros(4, 3)}), "holds f32[4, 3]")


def test_extern_checks() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(F, (2,)))
    t = [TensorType(F, (2,))]
    bad_target = Node(Op.EXTERN, [x], {"target": 3, "args": (), "kwargs": {}}, t)
    rejects(Graph([x], [bad_target], bad_target.outputs), "extern target must be a string")
    bad_ref = Node(Op.EXTERN, [x], {"target": "aten::f", "args": (), "kwargs": {"y": (InputRef(1),)}}, t)
    rejects(Graph([x], [bad_ref], bad_ref.outputs), "$1 refers past the node's 1 inputs")


def test_unbound_symbol_in_type_and_attrs() -> None:
    g = good()
    relu = g.nodes[1]
    bad = Node(Op.RESHAPE, relu.inputs, {"shape": (s1, -1)}, [TensorType(F, (s1, 4 * s0 / s1))])
    rejects(replace_node(g, 1, bad), "size symbols s1 are not bound")
    b = GraphBuilder()
    full = b.op(Op.FULL, [], shape=(s1,), value=0.0, dtype=F)
    rejects(b.build([full]), "(full, #0)", "size symbols s1")


def test_parsed_bare_name_is_an_unbound_symbol() -> None:
    # The parser reads an unquoted word as a size symbol; the verifier catches the mistake.
    g = parse_graph('graph(%x: f32[2]) {\n  %0 = gelu(%x) {approximate=tanh} : f32[2]\n  return %0\n}\n')
    rejects(g, "size symbols tanh are not bound")


def test_message_shows_context() -> None:
    g = good()
    msg = rejects(rebuilt(g, constants={}))
    lines = msg.splitlines()
    assert lines[0].startswith("node %0 (constant, #0):")
    marked = [ln for ln in lines if ln.startswith(">> ")]
    assert marked == ['>>   %0 = constant() {name="w"} : f32[4, 4]']
    assert any(ln.strip().startswith("graph(") for ln in lines)  # surrounding lines shown
