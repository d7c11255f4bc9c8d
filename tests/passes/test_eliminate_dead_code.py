"""Golden before/after IR for dead code elimination, and graphs with nothing dead."""

from __future__ import annotations

import pytest

from effc.passes import eliminate_dead_code

from .golden import apply, assert_rewrites, assert_unchanged, params, parse

REWRITES = [
    ("unused_node", """
graph(%x: f32[4]) {
  %0 = exp(%x) : f32[4]
  %1 = neg(%x) : f32[4]
  return %0
}""", """
graph(%x: f32[4]) {
  %0 = exp(%x) : f32[4]
  return %0
}""", "removed neg x1"),
    # A dead chain goes with everything only it uses, constants included.
    ("dead_chain_and_constant", """
graph(%x: f32[4]) {
  %0 = constant() {name="w"} : f32[4]
  %1 = add(%x, %0) : f32[4]
  %2 = exp(%1) : f32[4]
  %3 = relu(%x) : f32[4]
  return %3
}""", """
graph(%x: f32[4]) {
  %0 = relu(%x) : f32[4]
  return %0
}""", "removed add x1, constant x1, exp x1"),
    ("unused_extern", """
graph(%x: f32[4]) {
  %0 = extern(%x) {target="aten.relu.default", args=[$0], kwargs={}} : f32[4]
  %1 = neg(%x) : f32[4]
  return %1
}""", """
graph(%x: f32[4]) {
  %0 = neg(%x) : f32[4]
  return %0
}""", "removed extern x1"),
]

NEGATIVES = [
    ("all_live", """
graph(%x: f32[4]) {
  %0 = constant() {name="w"} : f32[4]
  %1 = add(%x, %0) : f32[4]
  return %1, %x
}"""),
    # One used result keeps a multi-output node whole.
    ("partly_used_split", """
graph(%x: f32[6]) {
  %0, %1 = split(%x) {dim=0, sizes=[2, 4]} : f32[2], f32[4]
  return %1
}"""),
    ("no_nodes", """
graph(%x: f32[4]) {
  return %x
}"""),
]


@pytest.mark.parametrize("before, expected, note", params(REWRITES))
def test_rewrite(before: str, expected: str, note: str) -> None:
    res = assert_rewrites(eliminate_dead_code.run, before, expected)
    assert res.notes == (note,)


@pytest.mark.parametrize("before", params(NEGATIVES))
def test_negative(before: str) -> None:
    assert_unchanged(eliminate_dead_code.run, before)


def test_dead_constants_leave_the_table() -> None:
    graph = parse(REWRITES[1][1])
    assert set(apply(eliminate_dead_code.run, graph).graph.constants) == set()
    assert set(graph.constants) == {"w"}
