"""Golden before/after IR for constant folding, and the cases it must leave alone."""

from __future__ import annotations

import pytest
import torch

from effc.backends.reference import ReferenceProgram
from effc.passes import fold_constants

from .golden import apply, assert_rewrites, assert_unchanged, params, parse

REWRITES = [
    # A transposed, scaled weight becomes one stored constant, named after the weight.
    ("permute_mul_chain", """
graph(%x: f32[2, 4]) {
  %0 = constant() {name="w"} : f32[8, 4]
  %1 = permute(%0) {dims=[1, 0]} : f32[4, 8]
  %2 = full() {shape=[], value=2.0, dtype=f32} : f32[]
  %3 = mul(%1, %2) : f32[4, 8]
  %4 = matmul(%x, %3) : f32[2, 8]
  %5 = mul(%4, %2) : f32[2, 8]
  return %5
}""", """
graph(%x: f32[2, 4]) {
  %0 = full() {shape=[], value=2.0, dtype=f32} : f32[]
  %1 = constant() {name="w.folded"} : f32[4, 8]
  %2 = matmul(%x, %1) : f32[2, 8]
  %3 = mul(%2, %0) : f32[2, 8]
  return %3
}"""),
    # Creation nodes with static attributes are known values too.
    ("arange_cast", """
graph(%x: f32[s0, 4]) {
  %0 = arange() {start=0, end=4, step=1, dtype=i64} : i64[4]
  %1 = cast(%0) {dtype=f32} : f32[4]
  %2 = add(%x, %1) : f32[s0, 4]
  return %2
}""", """
graph(%x: f32[s0, 4]) {
  %0 = constant() {name="arange.folded"} : f32[4]
  %1 = add(%x, %0) : f32[s0, 4]
  return %1
}"""),
    # Every result of a multi-output node is stored; a value the graph returns is stored too.
    ("split_outputs", """
graph(%x: f32[3]) {
  %0 = constant() {name="table"} : f32[6]
  %1, %2 = split(%0) {dim=0, sizes=[3, 3]} : f32[3], f32[3]
  %3 = add(%x, %1) : f32[3]
  return %3, %2
}""", """
graph(%x: f32[3]) {
  %0 = constant() {name="table.folded"} : f32[3]
  %1 = add(%x, %0) : f32[3]
  %2 = constant() {name="table.folded_1"} : f32[3]
  return %1, %2
}"""),
    # The expand alone is too large to store, but the sum after it is small: fold through it.
    ("reduce_after_large_expand", """
graph(%x: f32[4]) {
  %0 = full() {shape=[], value=0.5, dtype=f32} : f32[]
  %1 = expand(%0) {shape=[100, 100]} : f32[100, 100]
  %2 = sum(%1) {dims=[], keepdim=false, dtype=none} : f32[]
  %3 = mul(%x, %2) : f32[4]
  return %3
}""", """
graph(%x: f32[4]) {
  %0 = constant() {name="expand.folded"} : f32[]
  %1 = mul(%x, %0) : f32[4]
  return %1
}"""),
    # Folded names never clash with the graph's own constants.
    ("unique_names", """
graph(%x: f32[4]) {
  %0 = constant() {name="w"} : f32[4]
  %1 = constant() {name="w.folded"} : f32[4]
  %2 = neg(%0) : f32[4]
  %3 = add(%x, %2) : f32[4]
  %4 = add(%3, %1) : f32[4]
  return %4
}""", """
graph(%x: f32[4]) {
  %0 = constant() {name="w.folded"} : f32[4]
  %1 = constant() {name="w.folded_1"} : f32[4]
  %2 = add(%x, %1) : f32[4]
  %3 = add(%2, %0) : f32[4]
  return %3
}"""),
]

NEGATIVES = [
    # Extern ops may be random or stateful.
    ("extern", """
graph(%x: f32[4]) {
  %0 = constant() {name="w"} : f32[4]
  %1 = extern(%0) {target="aten.relu.default", args=[$0], kwargs={}} : f32[4]
  %2 = add(%x, %1) : f32[4]
  return %2
}""", None),
    # A symbolic shape: the value depends on the call.
    ("symbolic_shape", """
graph(%x: f32[s0, 4]) {
  %0 = constant() {name="w"} : f32[4]
  %1 = full() {shape=[s0, 4], value=1.0, dtype=f32} : f32[s0, 4]
  %2 = add(%1, %0) : f32[s0, 4]
  %3 = mul(%x, %2) : f32[s0, 4]
  return %3
}""", None),
    # Broadcasting a small constant to a large shape: storing it would cost memory.
    ("expand_too_large", """
graph(%x: f32[128, 64]) {
  %0 = constant() {name="bias"} : f32[1, 64]
  %1 = expand(%0) {shape=[128, 64]} : f32[128, 64]
  %2 = add(%x, %1) : f32[128, 64]
  return %2
}""", "8192 elements"),
    # Dequantizing an int8 weight would store it four times larger, even through a chain.
    ("dequantize_int8", """
graph(%x: f32[2, 64]) {
  %0 = constant() {name="w_int8"} : i8[64, 128]
  %1 = cast(%0) {dtype=f32} : f32[64, 128]
  %2 = full() {shape=[], value=0.01, dtype=f32} : f32[]
  %3 = mul(%1, %2) : f32[64, 128]
  %4 = matmul(%x, %3) : f32[2, 128]
  return %4
}""", "f32[64, 128]: result of 32768 bytes"),
    # A scalar full that feeds a run-time node stays a cheap full node.
    ("scalar_full", """
graph(%x: f32[4]) {
  %0 = full() {shape=[], value=3.0, dtype=f32} : f32[]
  %1 = mul(%x, %0) : f32[4]
  return %1
}""", None),
    # Only some inputs are known.
    ("runtime_input", """
graph(%x: f32[2, 8]) {
  %0 = constant() {name="w"} : f32[8, 4]
  %1 = matmul(%x, %0) : f32[2, 4]
  return %1
}""", None),
]


@pytest.mark.parametrize("before, expected", params(REWRITES))
def test_rewrite(before: str, expected: str) -> None:
    assert_rewrites(fold_constants.run, before, expected)


@pytest.mark.parametrize("before, reason", params(NEGATIVES))
def test_negative(before: str, reason: str | None) -> None:
    res = assert_unchanged(fold_constants.run, before)
    if reason is None:
        assert not res.rejected
    else:
        assert any(reason in r for r in res.rejected), res.rejected


def test_folded_values_match_the_kernels() -> None:
    graph = parse(REWRITES[0][1])
    after = apply(fold_constants.run, graph).graph
    w = graph.constants["w"]
    assert torch.equal(after.constants["w.folded"], w.t() * 2.0)
    assert set(after.constants) == {"w.folded"}
    assert set(graph.constants) == {"w"}  # the input graph keeps its own table


def test_folded_constants_do_not_alias_the_input() -> None:
    graph = parse("""
graph() {
  %0 = constant() {name="w"} : f32[2, 3]
  %1 = reshape(%0) {shape=[6]} : f32[6]
  return %1
}""")
    res = apply(fold_constants.run, graph)
    folded = res.graph.constants["w.folded"]
    assert folded.untyped_storage().data_ptr() != graph.constants["w"].untyped_storage().data_ptr()
    assert torch.equal(ReferenceProgram(res.graph)()[0], graph.constants["w"].reshape(6))
    assert res.notes == ("folded reshape : f32[6] into constant w.folded",)


def test_fold_keeps_dead_nodes_for_dce() -> None:
    res = assert_rewrites(fold_constants.run, """
graph(%x: f32[4]) {
  %0 = exp(%x) : f32[4]
  %1 = constant() {name="w"} : f32[4]
  %2 = neg(%1) : f32[4]
  %3 = add(%x, %2) : f32[4]
  return %3
}""", """
graph(%x: f32[4]) {
  %0 = exp(%x) : f32[4]
  %1 = constant() {name="w.folded"} : f32[4]
  %2 = add(%x, %1) : f32[4]
  return %2
}""")
    assert res.notes == ("folded neg : f32[4] into constant w.folded",)
