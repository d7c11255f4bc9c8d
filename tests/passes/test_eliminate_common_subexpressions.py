"""Golden before/after IR for CSE, and the nodes it must keep apart."""

from __future__ import annotations

import pytest
import torch

from effc.ir import DType, Graph, Node, Op, TensorType, Value, print_graph
from effc.passes import eliminate_common_subexpressions as cse

from .golden import apply, assert_rewrites, assert_same_results, assert_unchanged, params

REWRITES = [
    ("same_node", """
graph(%x: f32[4]) {
  %0 = exp(%x) : f32[4]
  %1 = exp(%x) : f32[4]
  %2 = add(%0, %1) : f32[4]
  return %2
}""", """
graph(%x: f32[4]) {
  %0 = exp(%x) : f32[4]
  %1 = add(%0, %0) : f32[4]
  return %1
}"""),
    # Merging one level makes the next level identical too.
    ("nested", """
graph(%x: f32[s0, 4]) {
  %0 = softmax(%x) {dim=-1} : f32[s0, 4]
  %1 = neg(%0) : f32[s0, 4]
  %2 = softmax(%x) {dim=-1} : f32[s0, 4]
  %3 = neg(%2) : f32[s0, 4]
  return %1, %3
}""", """
graph(%x: f32[s0, 4]) {
  %0 = softmax(%x) {dim=-1} : f32[s0, 4]
  %1 = neg(%0) : f32[s0, 4]
  return %1, %1
}"""),
    ("commutative", """
graph(%x: f32[4], %y: f32[4]) {
  %0 = add(%x, %y) : f32[4]
  %1 = add(%y, %x) : f32[4]
  %2 = mul(%0, %1) : f32[4]
  return %2
}""", """
graph(%x: f32[4], %y: f32[4]) {
  %0 = add(%x, %y) : f32[4]
  %1 = mul(%0, %0) : f32[4]
  return %1
}"""),
    ("creation_and_multi_output", """
graph(%x: f32[6]) {
  %0 = full() {shape=[], value=2.0, dtype=f32} : f32[]
  %1, %2 = split(%x) {dim=0, sizes=[3, 3]} : f32[3], f32[3]
  %3 = full() {shape=[], value=2.0, dtype=f32} : f32[]
  %4, %5 = split(%x) {dim=0, sizes=[3, 3]} : f32[3], f32[3]
  %6 = mul(%1, %0) : f32[3]
  %7 = mul(%5, %3) : f32[3]
  return %6, %7
}""", """
graph(%x: f32[6]) {
  %0 = full() {shape=[], value=2.0, dtype=f32} : f32[]
  %1, %2 = split(%x) {dim=0, sizes=[3, 3]} : f32[3], f32[3]
  %3 = mul(%1, %0) : f32[3]
  %4 = mul(%2, %0) : f32[3]
  return %3, %4
}"""),
]

NEGATIVES = [
    # An extern may be random (dropout) or stateful.
    ("extern", """
graph(%x: f32[4]) {
  %0 = extern(%x) {target="aten.relu.default", args=[$0], kwargs={}} : f32[4]
  %1 = extern(%x) {target="aten.relu.default", args=[$0], kwargs={}} : f32[4]
  %2 = add(%0, %1) : f32[4]
  return %2
}"""),
    ("different_attrs", """
graph(%x: f32[4, 4]) {
  %0 = softmax(%x) {dim=0} : f32[4, 4]
  %1 = softmax(%x) {dim=1} : f32[4, 4]
  %2 = full() {shape=[], value=0.0, dtype=f32} : f32[]
  %3 = full() {shape=[], value=-0.0, dtype=f32} : f32[]
  %4 = add(%0, %1) : f32[4, 4]
  %5 = div(%2, %3) {rounding_mode=none} : f32[]
  %6 = add(%4, %5) : f32[4, 4]
  return %6
}"""),
    # sub does not commute; maximum(0.0, -0.0) and maximum(-0.0, 0.0) may differ.
    ("not_commutative", """
graph(%x: f32[4], %y: f32[4]) {
  %0 = sub(%x, %y) : f32[4]
  %1 = sub(%y, %x) : f32[4]
  %2 = maximum(%x, %y) : f32[4]
  %3 = maximum(%y, %x) : f32[4]
  return %0, %1, %2, %3
}"""),
    ("different_inputs", """
graph(%x: f32[4], %y: f32[4]) {
  %0 = exp(%x) : f32[4]
  %1 = exp(%y) : f32[4]
  return %0, %1
}"""),
]


@pytest.mark.parametrize("before, expected", params(REWRITES))
def test_rewrite(before: str, expected: str) -> None:
    res = assert_rewrites(cse.run, before, expected)
    assert all(note.startswith("merged ") for note in res.notes)


@pytest.mark.parametrize("before", params(NEGATIVES))
def test_negative(before: str) -> None:
    assert_unchanged(cse.run, before)


def test_constants_with_one_name_are_one_node() -> None:
    # The parser refuses a repeated constant name, so build the nodes directly.
    t = TensorType(DType.F32, (4,))
    x = Value(t, None, 0, "x")
    c1 = Node(Op.CONSTANT, (), {"name": "w"}, (t,))
    c2 = Node(Op.CONSTANT, (), {"name": "w"}, (t,))
    add1 = Node(Op.ADD, (x, c1.output), {}, (t,))
    add2 = Node(Op.ADD, (x, c2.output), {}, (t,))
    graph = Graph([x], [c1, add1, c2, add2], [add1.output, add2.output], {"w": torch.randn(4)})
    res = apply(cse.run, graph)
    assert print_graph(res.graph).strip() == """
graph(%x: f32[4]) {
  %0 = constant() {name="w"} : f32[4]
  %1 = add(%x, %0) : f32[4]
  return %1, %1
}""".strip()
    assert res.notes == ('merged constant "w" : f32[4] into an identical earlier node',
                         "merged add : f32[4] into an identical earlier node")
    assert_same_results(graph, res.graph)
