"""Golden before/after IR for every simplify rule, a negative case per rule, and the engine."""

from __future__ import annotations

import pytest
import torch

from effc.backends.reference import ReferenceProgram
from effc.ir import DType, GraphBuilder, Op, TensorType
from effc.options import Options
from effc.passes import simplify
from effc.passes.simplify import RULES, exact_cast

from .golden import apply, assert_rewrites, assert_same_results, assert_unchanged, params, parse

# (id, before, expected after)
REWRITES = [
    ("add_zero", """
graph(%x: f32[4, 8]) {
  %0 = full() {shape=[], value=0.0, dtype=f32} : f32[]
  %1 = add(%x, %0) : f32[4, 8]
  %2 = exp(%1) : f32[4, 8]
  return %2
}""", """
graph(%x: f32[4, 8]) {
  %0 = exp(%x) : f32[4, 8]
  return %0
}"""),
    ("add_zero_symbolic", """
graph(%x: f32[s0, 8]) {
  %0 = constant() {name="zero"} : f32[8]
  %1 = add(%x, %0) : f32[s0, 8]
  return %1
}""", """
graph(%x: f32[s0, 8]) {
  return %x
}"""),
    ("zero_add", """
graph(%x: f32[4, 8]) {
  %0 = constant() {name="zero"} : f32[1, 8]
  %1 = add(%0, %x) : f32[4, 8]
  return %1
}""", """
graph(%x: f32[4, 8]) {
  return %x
}"""),
    ("sub_zero", """
graph(%x: i32[4]) {
  %0 = full() {shape=[4], value=0, dtype=i32} : i32[4]
  %1 = sub(%x, %0) : i32[4]
  return %1
}""", """
graph(%x: i32[4]) {
  return %x
}"""),
    ("mul_one", """
graph(%x: f32[4, 8]) {
  %0 = constant() {name="one"} : f32[8]
  %1 = mul(%x, %0) : f32[4, 8]
  return %1
}""", """
graph(%x: f32[4, 8]) {
  return %x
}"""),
    ("one_mul_int_scalar", """
graph(%x: f16[4, 8]) {
  %0 = full() {shape=[], value=1, dtype=i64} : i64[]
  %1 = mul(%0, %x) : f16[4, 8]
  return %1
}""", """
graph(%x: f16[4, 8]) {
  return %x
}"""),
    ("div_one", """
graph(%x: f32[s0]) {
  %0 = full() {shape=[], value=1.0, dtype=f32} : f32[]
  %1 = div(%x, %0) {rounding_mode=none} : f32[s0]
  return %1
}""", """
graph(%x: f32[s0]) {
  return %x
}"""),
    ("div_one_floor_int", """
graph(%x: i64[4]) {
  %0 = full() {shape=[], value=1, dtype=i64} : i64[]
  %1 = div(%x, %0) {rounding_mode="floor"} : i64[4]
  return %1
}""", """
graph(%x: i64[4]) {
  return %x
}"""),
    ("neg_neg", """
graph(%x: f32[4]) {
  %0 = neg(%x) : f32[4]
  %1 = neg(%0) : f32[4]
  %2 = relu(%1) : f32[4]
  return %2
}""", """
graph(%x: f32[4]) {
  %0 = relu(%x) : f32[4]
  return %0
}"""),
    ("cast_same", """
graph(%x: f32[4]) {
  %0 = cast(%x) {dtype=f32} : f32[4]
  return %0
}""", """
graph(%x: f32[4]) {
  return %x
}"""),
    ("cast_round_trip_f16_f32", """
graph(%x: f16[4]) {
  %0 = cast(%x) {dtype=f32} : f32[4]
  %1 = cast(%0) {dtype=f16} : f16[4]
  return %1
}""", """
graph(%x: f16[4]) {
  return %x
}"""),
    ("cast_round_trip_f32_f64", """
graph(%x: f32[4]) {
  %0 = cast(%x) {dtype=f64} : f64[4]
  %1 = cast(%0) {dtype=f32} : f32[4]
  return %1
}""", """
graph(%x: f32[4]) {
  return %x
}"""),
    ("cast_round_trip_i32_i64", """
graph(%x: i32[4]) {
  %0 = cast(%x) {dtype=i64} : i64[4]
  %1 = cast(%0) {dtype=i32} : i32[4]
  return %1
}""", """
graph(%x: i32[4]) {
  return %x
}"""),
    ("cast_cast_compose", """
graph(%x: f16[4]) {
  %0 = cast(%x) {dtype=f32} : f32[4]
  %1 = cast(%0) {dtype=bf16} : bf16[4]
  return %1
}""", """
graph(%x: f16[4]) {
  %0 = cast(%x) {dtype=bf16} : bf16[4]
  return %0
}"""),
    ("cast_cast_int_to_float", """
graph(%x: i8[4]) {
  %0 = cast(%x) {dtype=i32} : i32[4]
  %1 = cast(%0) {dtype=f16} : f16[4]
  return %1
}""", """
graph(%x: i8[4]) {
  %0 = cast(%x) {dtype=f16} : f16[4]
  return %0
}"""),
    ("permute_identity", """
graph(%x: f32[2, s0, 4]) {
  %0 = permute(%x) {dims=[0, 1, -1]} : f32[2, s0, 4]
  return %0
}""", """
graph(%x: f32[2, s0, 4]) {
  return %x
}"""),
    ("permute_permute_identity", """
graph(%x: f32[2, s0, 4]) {
  %0 = permute(%x) {dims=[1, 2, 0]} : f32[s0, 4, 2]
  %1 = permute(%0) {dims=[2, 0, 1]} : f32[2, s0, 4]
  return %1
}""", """
graph(%x: f32[2, s0, 4]) {
  return %x
}"""),
    ("permute_permute_compose", """
graph(%x: f32[2, 3, 4]) {
  %0 = permute(%x) {dims=[1, 0, 2]} : f32[3, 2, 4]
  %1 = permute(%0) {dims=[0, 2, 1]} : f32[3, 4, 2]
  return %1
}""", """
graph(%x: f32[2, 3, 4]) {
  %0 = permute(%x) {dims=[1, 2, 0]} : f32[3, 4, 2]
  return %0
}"""),
    ("reshape_reshape", """
graph(%x: f32[2, 3, 4]) {
  %0 = reshape(%x) {shape=[6, 4]} : f32[6, 4]
  %1 = reshape(%0) {shape=[4, -1]} : f32[4, 6]
  return %1
}""", """
graph(%x: f32[2, 3, 4]) {
  %0 = reshape(%x) {shape=[4, -1]} : f32[4, 6]
  return %0
}"""),
    ("reshape_reshape_back_symbolic", """
graph(%x: f32[s0, 4]) {
  %0 = reshape(%x) {shape=[-1]} : f32[4*s0]
  %1 = reshape(%0) {shape=[s0, 4]} : f32[s0, 4]
  return %1
}""", """
graph(%x: f32[s0, 4]) {
  return %x
}"""),
    ("reshape_same_shape", """
graph(%x: f32[s0, 4]) {
  %0 = reshape(%x) {shape=[-1, 4]} : f32[s0, 4]
  return %0
}""", """
graph(%x: f32[s0, 4]) {
  return %x
}"""),
    ("expand_same_shape", """
graph(%x: f32[3, 4]) {
  %0 = expand(%x) {shape=[-1, 4]} : f32[3, 4]
  return %0
}""", """
graph(%x: f32[3, 4]) {
  return %x
}"""),
    ("slice_whole_axis", """
graph(%x: f32[s0, 4]) {
  %0 = slice(%x) {dim=0, start=0, end=9223372036854775807, step=1} : f32[s0, 4]
  %1 = slice(%0) {dim=1, start=0, end=4, step=1} : f32[s0, 4]
  return %1
}""", """
graph(%x: f32[s0, 4]) {
  return %x
}"""),
    ("cat_one", """
graph(%x: f32[3, 4]) {
  %0 = cat(%x) {dim=1} : f32[3, 4]
  return %0
}""", """
graph(%x: f32[3, 4]) {
  return %x
}"""),
    ("squeeze_unsqueeze", """
graph(%x: f32[3, s0]) {
  %0 = unsqueeze(%x) {dim=1} : f32[3, 1, s0]
  %1 = squeeze(%0) {dims=[-2]} : f32[3, s0]
  return %1
}""", """
graph(%x: f32[3, s0]) {
  return %x
}"""),
    ("unsqueeze_squeeze", """
graph(%x: f32[3, 1, 4]) {
  %0 = squeeze(%x) {dims=[1]} : f32[3, 4]
  %1 = unsqueeze(%0) {dim=1} : f32[3, 1, 4]
  return %1
}""", """
graph(%x: f32[3, 1, 4]) {
  return %x
}"""),
    ("fixed_point_chain", """
graph(%x: f16[4, 8]) {
  %0 = cast(%x) {dtype=f32} : f32[4, 8]
  %1 = cast(%0) {dtype=f64} : f64[4, 8]
  %2 = cast(%1) {dtype=f16} : f16[4, 8]
  %3 = full() {shape=[], value=0.0, dtype=f16} : f16[]
  %4 = add(%2, %3) : f16[4, 8]
  %5 = neg(%4) : f16[4, 8]
  %6 = neg(%5) : f16[4, 8]
  %7 = permute(%6) {dims=[1, 0]} : f16[8, 4]
  %8 = permute(%7) {dims=[1, 0]} : f16[4, 8]
  return %8
}""", """
graph(%x: f16[4, 8]) {
  return %x
}"""),
    ("keeps_dead_code_and_shared_inner", """
graph(%x: f32[4]) {
  %0 = exp(%x) : f32[4]
  %1 = neg(%x) : f32[4]
  %2 = neg(%1) : f32[4]
  %3 = add(%1, %2) : f32[4]
  return %3
}""", """
graph(%x: f32[4]) {
  %0 = exp(%x) : f32[4]
  %1 = neg(%x) : f32[4]
  %2 = add(%1, %x) : f32[4]
  return %2
}"""),
    ("matmul_bias", """
graph(%x: f32[s0, 8], %w: f32[8, 4], %b: f32[4]) {
  %0 = matmul(%x, %w) : f32[s0, 4]
  %1 = add(%b, %0) : f32[s0, 4]
  return %1
}""", """
graph(%x: f32[s0, 8], %w: f32[8, 4], %b: f32[4]) {
  %0 = addmm(%b, %x, %w) {beta=1, alpha=1} : f32[s0, 4]
  return %0
}"""),
    ("pow_scalar", """
graph(%x: f32[4]) {
  %0 = full() {shape=[], value=3.0, dtype=f32} : f32[]
  %1 = pow(%x, %0) : f32[4]
  return %1
}""", """
graph(%x: f32[4]) {
  %0 = mul(%x, %x) : f32[4]
  %1 = mul(%0, %x) : f32[4]
  return %1
}"""),
    # torch.compile's Linear on [B, S, K]: addmm on [B*S, K], then the reshape; the GELU, the
    # residual (viewed as [B*S, N]) and the per-column scale move next to the addmm
    ("sink_reshape", """
graph(%x: f32[6, 8], %w: f32[8, 4], %b: f32[4], %r: f32[2, 3, 4], %c: f32[1, 1, 4]) {
  %0 = addmm(%b, %x, %w) {beta=1, alpha=1} : f32[6, 4]
  %1 = reshape(%0) {shape=[2, 3, 4]} : f32[2, 3, 4]
  %2 = gelu(%1) {approximate="none"} : f32[2, 3, 4]
  %3 = add(%2, %r) : f32[2, 3, 4]
  %4 = mul(%3, %c) : f32[2, 3, 4]
  return %4
}""", """
graph(%x: f32[6, 8], %w: f32[8, 4], %b: f32[4], %r: f32[2, 3, 4], %c: f32[1, 1, 4]) {
  %0 = addmm(%b, %x, %w) {beta=1, alpha=1} : f32[6, 4]
  %1 = gelu(%0) {approximate="none"} : f32[6, 4]
  %2 = reshape(%r) {shape=[6, 4]} : f32[6, 4]
  %3 = add(%1, %2) : f32[6, 4]
  %4 = reshape(%c) {shape=[4]} : f32[4]
  %5 = mul(%3, %4) : f32[6, 4]
  %6 = reshape(%5) {shape=[2, 3, 4]} : f32[2, 3, 4]
  return %6
}"""),
]

# (id, graph the rules must leave alone, words the rejection must contain or None)
NEGATIVES = [
    # a bias per position ([S, N] against [B, S, N]) has no [B*S, N] view: the reshape stays
    ("sink_reshape_position_bias", """
graph(%x: f32[6, 8], %w: f32[8, 4], %b: f32[4], %p: f32[3, 4]) {
  %0 = addmm(%b, %x, %w) {beta=1, alpha=1} : f32[6, 4]
  %1 = reshape(%0) {shape=[2, 3, 4]} : f32[2, 3, 4]
  %2 = add(%1, %p) : f32[2, 3, 4]
  return %2
}""", None),
    # the reshape regroups the last axis: column n of the matmul is not column n after it
    ("sink_reshape_last_axis", """
graph(%x: f32[6, 8], %w: f32[8, 4]) {
  %0 = matmul(%x, %w) : f32[6, 4]
  %1 = reshape(%0) {shape=[6, 2, 2]} : f32[6, 2, 2]
  %2 = relu(%1) : f32[6, 2, 2]
  return %2
}""", None),
    # the matmul result is used twice: absorbing it into addmm would compute it twice
    ("matmul_bias_shared", """
graph(%x: f32[2, 8], %w: f32[8, 4], %b: f32[4]) {
  %0 = matmul(%x, %w) : f32[2, 4]
  %1 = add(%0, %b) : f32[2, 4]
  %2 = mul(%0, %1) : f32[2, 4]
  return %2
}""", "other users"),
    # batched matmul and a bias of another dtype have no addmm form
    ("matmul_bias_batched", """
graph(%x: f32[3, 2, 8], %w: f32[8, 4], %b: f32[4]) {
  %0 = matmul(%x, %w) : f32[3, 2, 4]
  %1 = add(%0, %b) : f32[3, 2, 4]
  return %1
}""", None),
    ("matmul_bias_bias_per_row", """
graph(%x: f32[2, 8], %w: f32[8, 4], %b: f32[2, 4]) {
  %0 = matmul(%x, %w) : f32[2, 4]
  %1 = add(%0, %b) : f32[2, 4]
  return %1
}""", None),
    # x * 0 is not 0: x may be NaN or inf.
    ("mul_zero", """
graph(%x: f32[4]) {
  %0 = full() {shape=[], value=0.0, dtype=f32} : f32[]
  %1 = mul(%x, %0) : f32[4]
  return %1
}""", None),
    ("add_zero_broadcasts", """
graph(%x: f32[8]) {
  %0 = constant() {name="zero"} : f32[4, 8]
  %1 = add(%x, %0) : f32[4, 8]
  return %1
}""", "broadcasting"),
    ("zero_add_promotes", """
graph(%x: i32[4]) {
  %0 = full() {shape=[], value=0.0, dtype=f32} : f32[]
  %1 = add(%0, %x) : f32[4]
  return %1
}""", "promotion"),
    ("add_nonzero", """
graph(%x: f32[4]) {
  %0 = constant() {name="almost"} : f32[4]
  %1 = add(%x, %0) : f32[4]
  return %1
}""", None),
    ("zero_sub", """
graph(%x: f32[4]) {
  %0 = full() {shape=[], value=0.0, dtype=f32} : f32[]
  %1 = sub(%0, %x) : f32[4]
  return %1
}""", None),
    ("one_mul_broadcasts", """
graph(%x: f32[4, 8]) {
  %0 = full() {shape=[2, 4, 8], value=1.0, dtype=f32} : f32[2, 4, 8]
  %1 = mul(%0, %x) : f32[2, 4, 8]
  return %1
}""", "broadcasting"),
    ("div_one_floor_float", """
graph(%x: f32[4]) {
  %0 = full() {shape=[], value=1.0, dtype=f32} : f32[]
  %1 = div(%x, %0) {rounding_mode="floor"} : f32[4]
  return %1
}""", "rounds"),
    ("div_one_int_true_division", """
graph(%x: i64[4]) {
  %0 = full() {shape=[], value=1, dtype=i64} : i64[]
  %1 = div(%x, %0) {rounding_mode=none} : f32[4]
  return %1
}""", "promotion"),
    ("one_div", """
graph(%x: f32[4]) {
  %0 = full() {shape=[], value=1.0, dtype=f32} : f32[]
  %1 = div(%0, %x) {rounding_mode=none} : f32[4]
  return %1
}""", None),
    ("neg_abs", """
graph(%x: f32[4]) {
  %0 = abs(%x) : f32[4]
  %1 = neg(%0) : f32[4]
  return %1
}""", None),
    ("cast_other_dtype", """
graph(%x: f32[4]) {
  %0 = cast(%x) {dtype=f16} : f16[4]
  return %0
}""", None),
    ("cast_lossy_round_trip", """
graph(%x: f32[4]) {
  %0 = cast(%x) {dtype=f16} : f16[4]
  %1 = cast(%0) {dtype=f32} : f32[4]
  return %1
}""", "not exact"),
    ("cast_wrapping_round_trip", """
graph(%x: i64[4]) {
  %0 = cast(%x) {dtype=i8} : i8[4]
  %1 = cast(%0) {dtype=i64} : i64[4]
  return %1
}""", "not exact"),
    ("cast_float_widen_then_int", """
graph(%x: f32[4]) {
  %0 = cast(%x) {dtype=f64} : f64[4]
  %1 = cast(%0) {dtype=i32} : i32[4]
  return %1
}""", "out-of-range"),
    ("permute_not_identity", """
graph(%x: f32[4, 4]) {
  %0 = permute(%x) {dims=[1, 0]} : f32[4, 4]
  return %0
}""", None),
    ("permutes_not_adjacent", """
graph(%x: f32[2, 3]) {
  %0 = permute(%x) {dims=[1, 0]} : f32[3, 2]
  %1 = exp(%0) : f32[3, 2]
  %2 = permute(%1) {dims=[1, 0]} : f32[2, 3]
  return %2
}""", None),
    ("reshape_after_permute", """
graph(%x: f32[2, 3]) {
  %0 = permute(%x) {dims=[1, 0]} : f32[3, 2]
  %1 = reshape(%0) {shape=[2, 3]} : f32[2, 3]
  return %1
}""", None),
    ("expand_grows", """
graph(%x: f32[1, 4]) {
  %0 = expand(%x) {shape=[3, 4]} : f32[3, 4]
  return %0
}""", None),
    ("slice_from_one", """
graph(%x: f32[s0, 4]) {
  %0 = slice(%x) {dim=1, start=1, end=9223372036854775807, step=1} : f32[s0, 3]
  return %0
}""", None),
    ("slice_step_two", """
graph(%x: f32[4]) {
  %0 = slice(%x) {dim=0, start=0, end=4, step=2} : f32[2]
  return %0
}""", None),
    ("cat_two", """
graph(%x: f32[3, 4]) {
  %0 = cat(%x, %x) {dim=1} : f32[3, 8]
  return %0
}""", None),
    ("squeeze_other_axis", """
graph(%x: f32[4, 1]) {
  %0 = unsqueeze(%x) {dim=0} : f32[1, 4, 1]
  %1 = squeeze(%0) {dims=[2]} : f32[1, 4]
  return %1
}""", None),
    ("unsqueeze_other_axis", """
graph(%x: f32[1, 4]) {
  %0 = squeeze(%x) {dims=[0]} : f32[4]
  %1 = unsqueeze(%0) {dim=1} : f32[4, 1]
  return %1
}""", None),
    ("unsqueeze_squeeze_symbolic_axis", """
graph(%x: f32[s0, 1, 8]) {
  %0 = squeeze(%x) {dims=[0, 1]} : f32[s0, 8]
  %1 = unsqueeze(%0) {dim=1} : f32[s0, 1, 8]
  return %1
}""", "symbolic"),
]


def _constants(text: str) -> dict[str, torch.Tensor]:
    """Named constants as the text declares them: "zero" all zeros, "one" all ones."""
    graph = parse(text)  # random fill, only to learn the declared types
    out = {}
    for node in graph.nodes:
        name = node.attrs.get("name")
        if name == "zero":
            out[name] = torch.zeros_like(graph.constants[name])
        elif name == "one":
            out[name] = torch.ones_like(graph.constants[name])
        elif name == "almost":
            out[name] = torch.tensor([0.0, 0.0, 0.0, 1e-30])
    return out


@pytest.mark.parametrize("before, expected", params(REWRITES))
def test_rewrite(before: str, expected: str) -> None:
    assert_rewrites(simplify.run, before, expected, constants=_constants(before))


@pytest.mark.parametrize("before, reason", params(NEGATIVES))
def test_negative(before: str, reason: str | None) -> None:
    res = assert_unchanged(simplify.run, before, constants=_constants(before))
    if reason is None:
        assert not res.rejected
    else:
        assert any(reason in r for r in res.rejected), res.rejected


def test_every_rule_fires_in_a_golden_case() -> None:
    fired = set()
    for _, before, _ in REWRITES:
        res = simplify.run(parse(before, _constants(before)), Options())
        fired |= {note.split(" at ")[0] for note in res.notes}
    assert fired == {rule.name for rule in RULES}


def test_notes_name_each_rewrite() -> None:
    res = assert_rewrites(simplify.run, REWRITES[0][1], REWRITES[0][2])
    assert res.notes == ("add_zero at add : f32[4, 8]",)


def test_add_zero_keeps_nan_and_inf() -> None:
    graph = parse(REWRITES[0][1])
    x = torch.tensor([[float("nan"), float("inf"), -float("inf"), -0.0] * 2] * 4)
    assert_same_results(graph, apply(simplify.run, graph).graph, [x])


@pytest.mark.parametrize("src, dst, exact", [
    (DType.F16, DType.F32, True), (DType.BF16, DType.F64, True), (DType.F32, DType.F64, True),
    (DType.F16, DType.BF16, False), (DType.BF16, DType.F16, False), (DType.F64, DType.F32, False),
    (DType.I32, DType.I64, True), (DType.U8, DType.I16, True), (DType.I8, DType.U8, False),
    (DType.I16, DType.F32, True), (DType.I32, DType.F32, False), (DType.I32, DType.F64, True),
    (DType.U8, DType.BF16, True), (DType.I16, DType.BF16, False), (DType.BOOL, DType.F16, True),
    (DType.I32, DType.BOOL, False), (DType.F32, DType.I64, False),
])
def test_exact_cast(src: DType, dst: DType, exact: bool) -> None:
    assert exact_cast(src, dst) is exact
    if src.is_float or dst is DType.BOOL:
        return
    # An exact cast keeps the value itself: check it on the extremes of the source type.
    info = torch.iinfo(src.to_torch()) if src is not DType.BOOL else None
    values = torch.tensor([0, 1] if info is None else [info.min, info.min + 1, -1, 0, 1, info.max],
                          dtype=src.to_torch())
    wide = torch.float64 if dst.is_float else torch.int64  # holds every value of src and dst
    kept = values.to(dst.to_torch()).to(wide) == values.to(wide)
    assert bool(kept.all()) is exact



@pytest.mark.parametrize("power", [2.0, 3.0, 0.5, 3])
def test_pow_by_a_small_scalar_becomes_what_eager_computes(power) -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (5, 7)))
    e = b.op(Op.FULL, [], shape=(), value=power, dtype=DType.F32)
    g = b.build([b.op(Op.POW, [x, e])])
    res = simplify.run(g, Options(verify=True))
    assert res.modified and res.graph.count(Op.POW) == 0
    xs = torch.rand(5, 7) + 0.5
    (got,) = ReferenceProgram(res.graph)(xs)
    assert torch.equal(got, torch.pow(xs, power))   # bit for bit: ATen's own special cases


def test_pow_by_other_scalars_or_with_promotion_stays() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (5,)))
    y = b.op(Op.POW, [x, b.op(Op.FULL, [], shape=(), value=4.0, dtype=DType.F32)])
    h = b.input("h", TensorType(DType.F16, (5,)))
    z = b.op(Op.POW, [h, b.op(Op.FULL, [], shape=(), value=2.0, dtype=DType.F32)])
    g = b.build([y, z])
    assert simplify.run(g, Options(verify=True)).graph.count(Op.POW) == 2
