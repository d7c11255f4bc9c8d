"""tile_attention: golden IR before/after for the main forms, near misses with their reasons,
a property test per form against the float64 reference, and attention as model code writes it
(hand-written torch, Hugging Face GPT-2, BERT and Llama) through effc.compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, note, settings
from hypothesis import strategies as st

import effc
from effc.ir import DType, Op
from effc.passes import tile_attention

from ..strategy_attention import FORMS, MISSES, AttentionCase, attention_cases, sdpa_calls
from .golden import apply, assert_rewrites, assert_same_results, assert_unchanged, params

LOWER = torch.ones(8, 8, dtype=torch.bool).tril()
CONSTANTS = {"causal": torch.zeros(1, 1, 8, 8).masked_fill(~LOWER, torch.finfo(torch.float32).min),
             "tril": torch.ones(5, 5, dtype=torch.bool).tril(), "per_key": torch.rand(8) + 0.5,
             "keep_all": torch.ones(1, 1, 1, 8, dtype=torch.bool),
             "keys": torch.arange(8).reshape(1, 1, 1, 8), "queries": torch.arange(8).reshape(1, 1, 8, 1),
             "tril8": torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()}

# (id, before, expected after)
REWRITES = [
    ("bert_bmm_additive_mask", """
graph(%q: f32[2, 4, 8, 16], %k: f32[2, 4, 8, 16], %v: f32[2, 4, 8, 16], %mask: f32[2, 1, 1, 8]) {
  %0 = permute(%k) {dims=[0, 1, 3, 2]} : f32[2, 4, 16, 8]
  %1 = reshape(%q) {shape=[8, 8, 16]} : f32[8, 8, 16]
  %2 = reshape(%0) {shape=[8, 16, 8]} : f32[8, 16, 8]
  %3 = matmul(%1, %2) : f32[8, 8, 8]
  %4 = reshape(%3) {shape=[2, 4, 8, 8]} : f32[2, 4, 8, 8]
  %5 = full() {shape=[], value=0.25, dtype=f64} : f64[]
  %6 = mul(%4, %5) : f32[2, 4, 8, 8]
  %7 = add(%6, %mask) : f32[2, 4, 8, 8]
  %8 = softmax(%7) {dim=-1} : f32[2, 4, 8, 8]
  %9 = reshape(%8) {shape=[8, 8, 8]} : f32[8, 8, 8]
  %10 = reshape(%v) {shape=[8, 8, 16]} : f32[8, 8, 16]
  %11 = matmul(%9, %10) : f32[8, 8, 16]
  %12 = reshape(%11) {shape=[2, 4, 8, 16]} : f32[2, 4, 8, 16]
  return %12
}""", """
graph(%q: f32[2, 4, 8, 16], %k: f32[2, 4, 8, 16], %v: f32[2, 4, 8, 16], %mask: f32[2, 1, 1, 8]) {
  %0 = scaled_dot_product_attention(%q, %k, %v, %mask) {scale=0.25, is_causal=false, enable_gqa=false} : f32[2, 4, 8, 16]
  return %0
}"""),
    # GPT-2: heads split from one fused projection, K returned too, a folded causal bias
    ("gpt2_heads_folded_causal_bias", """
graph(%x: f32[1, 8, 192]) {
  %0, %1, %2 = split(%x) {dim=2, sizes=[64, 64, 64]} : f32[1, 8, 64], f32[1, 8, 64], f32[1, 8, 64]
  %3 = reshape(%1) {shape=[1, 8, -1, 16]} : f32[1, 8, 4, 16]
  %4 = permute(%3) {dims=[0, 2, 1, 3]} : f32[1, 4, 8, 16]
  %5 = reshape(%2) {shape=[1, 8, -1, 16]} : f32[1, 8, 4, 16]
  %6 = permute(%5) {dims=[0, 2, 1, 3]} : f32[1, 4, 8, 16]
  %7 = reshape(%0) {shape=[1, 8, -1, 16]} : f32[1, 8, 4, 16]
  %8 = permute(%7) {dims=[0, 2, 1, 3]} : f32[1, 4, 8, 16]
  %9 = permute(%3) {dims=[0, 2, 3, 1]} : f32[1, 4, 16, 8]
  %10 = reshape(%8) {shape=[4, 8, 16]} : f32[4, 8, 16]
  %11 = reshape(%9) {shape=[4, 16, 8]} : f32[4, 16, 8]
  %12 = matmul(%10, %11) : f32[4, 8, 8]
  %13 = reshape(%12) {shape=[1, 4, 8, 8]} : f32[1, 4, 8, 8]
  %14 = full() {shape=[], value=0.25, dtype=f64} : f64[]
  %15 = mul(%13, %14) : f32[1, 4, 8, 8]
  %16 = constant() {name="causal"} : f32[1, 1, 8, 8]
  %17 = add(%15, %16) : f32[1, 4, 8, 8]
  %18 = softmax(%17) {dim=-1} : f32[1, 4, 8, 8]
  %19 = reshape(%18) {shape=[4, 8, 8]} : f32[4, 8, 8]
  %20 = reshape(%6) {shape=[4, 8, 16]} : f32[4, 8, 16]
  %21 = matmul(%19, %20) : f32[4, 8, 16]
  %22 = reshape(%21) {shape=[1, 4, 8, 16]} : f32[1, 4, 8, 16]
  %23 = permute(%22) {dims=[0, 2, 1, 3]} : f32[1, 8, 4, 16]
  %24 = reshape(%23) {shape=[-1, 64]} : f32[8, 64]
  return %24, %4, %6
}""", """
graph(%x: f32[1, 8, 192]) {
  %0, %1, %2 = split(%x) {dim=2, sizes=[64, 64, 64]} : f32[1, 8, 64], f32[1, 8, 64], f32[1, 8, 64]
  %3 = reshape(%1) {shape=[1, 8, -1, 16]} : f32[1, 8, 4, 16]
  %4 = permute(%3) {dims=[0, 2, 1, 3]} : f32[1, 4, 8, 16]
  %5 = reshape(%2) {shape=[1, 8, -1, 16]} : f32[1, 8, 4, 16]
  %6 = permute(%5) {dims=[0, 2, 1, 3]} : f32[1, 4, 8, 16]
  %7 = reshape(%0) {shape=[1, 8, -1, 16]} : f32[1, 8, 4, 16]
  %8 = permute(%7) {dims=[0, 2, 1, 3]} : f32[1, 4, 8, 16]
  %9 = scaled_dot_product_attention(%8, %4, %6) {scale=0.25, is_causal=true, enable_gqa=false} : f32[1, 4, 8, 16]
  %10 = permute(%9) {dims=[0, 2, 1, 3]} : f32[1, 8, 4, 16]
  %11 = reshape(%10) {shape=[-1, 64]} : f32[8, 64]
  return %11, %4, %6
}"""),
    # dynamic shapes: the scale is a graph input, the causal mask an arange comparison
    ("runtime_scale_arange_causal", """
graph(%q: f32[s0, 4, s1, 16], %k: f32[s0, 4, s1, 16], %v: f32[s0, 4, s1, 16], %t: f64[]) {
  %0 = permute(%k) {dims=[0, 1, 3, 2]} : f32[s0, 4, 16, s1]
  %1 = matmul(%q, %0) : f32[s0, 4, s1, s1]
  %2 = cast(%t) {dtype=f32} : f32[]
  %3 = mul(%1, %2) : f32[s0, 4, s1, s1]
  %4 = arange() {start=0, end=s1, step=1, dtype=i64} : i64[s1]
  %5 = unsqueeze(%4) {dim=0} : i64[1, s1]
  %6 = unsqueeze(%4) {dim=1} : i64[s1, 1]
  %7 = le(%5, %6) : bool[s1, s1]
  %8 = full() {shape=[], value=-3.4028234663852886e+38, dtype=f32} : f32[]
  %9 = where(%7, %3, %8) : f32[s0, 4, s1, s1]
  %10 = softmax(%9) {dim=-1} : f32[s0, 4, s1, s1]
  %11 = matmul(%10, %v) : f32[s0, 4, s1, 16]
  return %11
}""", """
graph(%q: f32[s0, 4, s1, 16], %k: f32[s0, 4, s1, 16], %v: f32[s0, 4, s1, 16], %t: f64[]) {
  %0 = cast(%t) {dtype=f32} : f32[]
  %1 = mul(%q, %0) : f32[s0, 4, s1, 16]
  %2 = scaled_dot_product_attention(%1, %k, %v) {scale=1.0, is_causal=true, enable_gqa=false} : f32[s0, 4, s1, 16]
  return %2
}"""),
    # half inputs, scale split between Q and K, masked_fill(~keep, -inf), softmax in float32
    # written out
    ("half_split_scale_masked_fill_decomposed", """
graph(%q: f16[2, 3, 5, 8], %k: f16[2, 3, 7, 8], %v: f16[2, 3, 7, 4], %keep: bool[2, 1, 1, 7]) {
  %0 = full() {shape=[], value=0.5, dtype=f64} : f64[]
  %1 = mul(%q, %0) : f16[2, 3, 5, 8]
  %2 = mul(%k, %0) : f16[2, 3, 7, 8]
  %3 = permute(%2) {dims=[0, 1, 3, 2]} : f16[2, 3, 8, 7]
  %4 = matmul(%1, %3) : f16[2, 3, 5, 7]
  %5 = bitwise_not(%keep) : bool[2, 1, 1, 7]
  %6 = full() {shape=[], value=-inf, dtype=f32} : f32[]
  %7 = where(%5, %6, %4) : f16[2, 3, 5, 7]
  %8 = cast(%7) {dtype=f32} : f32[2, 3, 5, 7]
  %9 = amax(%8) {dims=[-1], keepdim=true} : f32[2, 3, 5, 1]
  %10 = sub(%8, %9) : f32[2, 3, 5, 7]
  %11 = exp(%10) : f32[2, 3, 5, 7]
  %12 = sum(%11) {dims=[-1], keepdim=true, dtype=none} : f32[2, 3, 5, 1]
  %13 = div(%11, %12) {rounding_mode=none} : f32[2, 3, 5, 7]
  %14 = cast(%13) {dtype=f16} : f16[2, 3, 5, 7]
  %15 = matmul(%14, %v) : f16[2, 3, 5, 4]
  return %15
}""", """
graph(%q: f16[2, 3, 5, 8], %k: f16[2, 3, 7, 8], %v: f16[2, 3, 7, 4], %keep: bool[2, 1, 1, 7]) {
  %0 = scaled_dot_product_attention(%q, %k, %v, %keep) {scale=0.25, is_causal=false, enable_gqa=false} : f16[2, 3, 5, 4]
  return %0
}"""),
    # Llama's repeat_kv: K and V expanded from 2 to 4 heads; scores divided by sqrt(d)
    ("gqa_repeat_kv", """
graph(%q: f32[1, 4, 6, 8], %k: f32[1, 2, 6, 8], %v: f32[1, 2, 6, 8]) {
  %0 = unsqueeze(%k) {dim=2} : f32[1, 2, 1, 6, 8]
  %1 = expand(%0) {shape=[1, 2, 2, 6, 8]} : f32[1, 2, 2, 6, 8]
  %2 = reshape(%1) {shape=[1, 4, 6, 8]} : f32[1, 4, 6, 8]
  %3 = unsqueeze(%v) {dim=2} : f32[1, 2, 1, 6, 8]
  %4 = expand(%3) {shape=[1, 2, 2, 6, 8]} : f32[1, 2, 2, 6, 8]
  %5 = permute(%2) {dims=[0, 1, 3, 2]} : f32[1, 4, 8, 6]
  %6 = reshape(%q) {shape=[4, 6, 8]} : f32[4, 6, 8]
  %7 = reshape(%5) {shape=[4, 8, 6]} : f32[4, 8, 6]
  %8 = matmul(%6, %7) : f32[4, 6, 6]
  %9 = reshape(%8) {shape=[1, 4, 6, 6]} : f32[1, 4, 6, 6]
  %10 = full() {shape=[], value=2.0, dtype=f64} : f64[]
  %11 = div(%9, %10) {rounding_mode=none} : f32[1, 4, 6, 6]
  %12 = softmax(%11) {dim=-1} : f32[1, 4, 6, 6]
  %13 = reshape(%12) {shape=[4, 6, 6]} : f32[4, 6, 6]
  %14 = reshape(%4) {shape=[4, 6, 8]} : f32[4, 6, 8]
  %15 = matmul(%13, %14) : f32[4, 6, 8]
  %16 = reshape(%15) {shape=[1, 4, 6, 8]} : f32[1, 4, 6, 8]
  return %16
}""", """
graph(%q: f32[1, 4, 6, 8], %k: f32[1, 2, 6, 8], %v: f32[1, 2, 6, 8]) {
  %0 = scaled_dot_product_attention(%q, %k, %v) {scale=0.5, is_causal=false, enable_gqa=true} : f32[1, 4, 6, 8]
  return %0
}"""),
    # multi-query attention as core ATen writes matmul's broadcasting: one K/V head expanded
    ("mqa_expand_through_bmm", """
graph(%q: f32[2, 4, 8, 16], %k: f32[2, 1, 8, 16], %v: f32[2, 1, 8, 16]) {
  %0 = permute(%k) {dims=[0, 1, 3, 2]} : f32[2, 1, 16, 8]
  %1 = expand(%0) {shape=[2, 4, 16, 8]} : f32[2, 4, 16, 8]
  %2 = reshape(%q) {shape=[8, 8, 16]} : f32[8, 8, 16]
  %3 = reshape(%1) {shape=[8, 16, 8]} : f32[8, 16, 8]
  %4 = matmul(%2, %3) : f32[8, 8, 8]
  %5 = reshape(%4) {shape=[2, 4, 8, 8]} : f32[2, 4, 8, 8]
  %6 = softmax(%5) {dim=-1} : f32[2, 4, 8, 8]
  %7 = expand(%v) {shape=[2, 4, 8, 16]} : f32[2, 4, 8, 16]
  %8 = reshape(%6) {shape=[8, 8, 8]} : f32[8, 8, 8]
  %9 = reshape(%7) {shape=[8, 8, 16]} : f32[8, 8, 16]
  %10 = matmul(%8, %9) : f32[8, 8, 16]
  %11 = reshape(%10) {shape=[2, 4, 8, 16]} : f32[2, 4, 8, 16]
  return %11
}""", """
graph(%q: f32[2, 4, 8, 16], %k: f32[2, 1, 8, 16], %v: f32[2, 1, 8, 16]) {
  %0 = scaled_dot_product_attention(%q, %k, %v) {scale=1.0, is_causal=false, enable_gqa=true} : f32[2, 4, 8, 16]
  return %0
}"""),
    # K and V shared by the whole batch, broadcast by the matmuls (ONNX MatMul does)
    ("kv_shared_across_batch", """
graph(%q: f32[2, 4, 8, 16], %k: f32[4, 8, 16], %v: f32[4, 8, 16]) {
  %0 = permute(%k) {dims=[0, 2, 1]} : f32[4, 16, 8]
  %1 = matmul(%q, %0) : f32[2, 4, 8, 8]
  %2 = softmax(%1) {dim=-1} : f32[2, 4, 8, 8]
  %3 = matmul(%2, %v) : f32[2, 4, 8, 16]
  return %3
}""", """
graph(%q: f32[2, 4, 8, 16], %k: f32[4, 8, 16], %v: f32[4, 8, 16]) {
  %0 = reshape(%k) {shape=[1, 4, 8, 16]} : f32[1, 4, 8, 16]
  %1 = reshape(%v) {shape=[1, 4, 8, 16]} : f32[1, 4, 8, 16]
  %2 = scaled_dot_product_attention(%q, %0, %1) {scale=1.0, is_causal=false, enable_gqa=false} : f32[2, 4, 8, 16]
  return %2
}"""),
    # a float64 bias widens the scores; torch's attention takes a float32 mask on float32 Q
    ("float64_bias_cast_to_float32", """
graph(%q: f32[1, 2, 4, 8], %k: f32[1, 2, 4, 8], %v: f32[1, 2, 4, 8], %bias: f64[1, 1, 4, 4]) {
  %0 = permute(%k) {dims=[0, 1, 3, 2]} : f32[1, 2, 8, 4]
  %1 = matmul(%q, %0) : f32[1, 2, 4, 4]
  %2 = add(%1, %bias) : f64[1, 2, 4, 4]
  %3 = softmax(%2) {dim=-1} : f64[1, 2, 4, 4]
  %4 = cast(%3) {dtype=f32} : f32[1, 2, 4, 4]
  %5 = matmul(%4, %v) : f32[1, 2, 4, 8]
  return %5
}""", """
graph(%q: f32[1, 2, 4, 8], %k: f32[1, 2, 4, 8], %v: f32[1, 2, 4, 8], %bias: f64[1, 1, 4, 4]) {
  %0 = cast(%bias) {dtype=f32} : f32[1, 1, 4, 4]
  %1 = scaled_dot_product_attention(%q, %k, %v, %0) {scale=1.0, is_causal=false, enable_gqa=false} : f32[1, 2, 4, 8]
  return %1
}"""),
    # scaled_dot_product_attention called with a causal bool mask
    ("sdpa_call_causal_mask", """
graph(%q: f32[1, 2, 5, 8], %k: f32[1, 2, 5, 8], %v: f32[1, 2, 5, 8]) {
  %0 = constant() {name="tril"} : bool[5, 5]
  %1 = scaled_dot_product_attention(%q, %k, %v, %0) {scale=none, is_causal=false, enable_gqa=false} : f32[1, 2, 5, 8]
  return %1
}""", """
graph(%q: f32[1, 2, 5, 8], %k: f32[1, 2, 5, 8], %v: f32[1, 2, 5, 8]) {
  %0 = scaled_dot_product_attention(%q, %k, %v) {scale=none, is_causal=true, enable_gqa=false} : f32[1, 2, 5, 8]
  return %0
}"""),
]


def _attention(logits: str, extra_inputs: str = "", weights_out: bool = False) -> str:
    """Plain 4-d attention; ``logits`` computes ``%2``, ``%3``, ... from the scores ``%1``, its
    last line is the softmax input."""
    last = logits.strip().splitlines()[-1].split(" = ")[0].strip()
    n = int(last[1:])
    return f"""
graph(%q: f32[2, 4, 8, 16], %k: f32[2, 4, 8, 16], %v: f32[2, 4, 8, 16]{extra_inputs}) {{
  %0 = permute(%k) {{dims=[0, 1, 3, 2]}} : f32[2, 4, 16, 8]
  %1 = matmul(%q, %0) : f32[2, 4, 8, 8]
{logits.strip(chr(10))}
  %{n + 1} = softmax({last}) {{dim=-1}} : f32[2, 4, 8, 8]
  %{n + 2} = matmul(%{n + 1}, %v) : f32[2, 4, 8, 16]
  return %{n + 2}{f", %{n + 1}" if weights_out else ""}
}}"""


# (id, before, the reason given, or None where it is no near miss at all)
NEGATIVES = [
    ("softmax_over_queries", """
graph(%q: f32[2, 8, 16], %k: f32[2, 8, 16], %v: f32[2, 8, 16]) {
  %0 = permute(%k) {dims=[0, 2, 1]} : f32[2, 16, 8]
  %1 = matmul(%q, %0) : f32[2, 8, 8]
  %2 = softmax(%1) {dim=1} : f32[2, 8, 8]
  %3 = matmul(%2, %v) : f32[2, 8, 16]
  return %3
}""", "softmax over axis 1 of f32[2, 8, 8], not the last (key) axis"),
    ("scale_varies_per_key", _attention("""
  %2 = constant() {name="per_key"} : f32[8]
  %3 = mul(%1, %2) : f32[2, 4, 8, 8]"""),
     "the scores are multiplied by f32[8], which is not one value: it varies along the key axis"),
    ("mask_computed_from_scores", _attention("""
  %2 = full() {shape=[], value=0.0, dtype=f32} : f32[]
  %3 = gt(%1, %2) : bool[2, 4, 8, 8]
  %4 = full() {shape=[], value=-inf, dtype=f32} : f32[]
  %5 = where(%3, %1, %4) : f32[2, 4, 8, 8]"""), "the mask is computed from the scores it masks"),
    ("bias_computed_from_scores", _attention("""
  %2 = relu(%1) : f32[2, 4, 8, 8]
  %3 = add(%1, %2) : f32[2, 4, 8, 8]"""), "the mask is computed from the scores it masks"),
    ("output_attentions", _attention("""
  %2 = full() {shape=[], value=0.25, dtype=f64} : f64[]
  %3 = mul(%1, %2) : f32[2, 4, 8, 8]""", weights_out=True),
     "the softmax : f32[2, 4, 8, 8] inside the attention is also used elsewhere (a graph output), "
     "so it must exist"),
    ("fill_does_not_vanish", _attention("""
  %2 = full() {shape=[], value=-1.0, dtype=f32} : f32[]
  %3 = where(%keep, %1, %2) : f32[2, 4, 8, 8]""", ", %keep: bool[8, 8]"),
     "where fills masked scores with -1, which does not vanish in the softmax (-inf or at most -1e4 does)"),
    ("runtime_scale_after_where", _attention("""
  %2 = full() {shape=[], value=-inf, dtype=f32} : f32[]
  %3 = where(%keep, %1, %2) : f32[2, 4, 8, 8]
  %4 = mul(%3, %t) : f32[2, 4, 8, 8]""", ", %keep: bool[8, 8], %t: f32[]"),
     "a scale that may be negative is applied after the where mask"),
    ("softcap_tanh", _attention("""
  %2 = tanh(%1) : f32[2, 4, 8, 8]"""), "the scores pass through tanh before the softmax"),
    ("decomposed_sum_over_queries", """
graph(%q: f32[2, 8, 16], %k: f32[2, 8, 16], %v: f32[2, 8, 16]) {
  %0 = permute(%k) {dims=[0, 2, 1]} : f32[2, 16, 8]
  %1 = matmul(%q, %0) : f32[2, 8, 8]
  %2 = exp(%1) : f32[2, 8, 8]
  %3 = sum(%2) {dims=[1], keepdim=true, dtype=none} : f32[2, 1, 8]
  %4 = div(%2, %3) {rounding_mode=none} : f32[2, 8, 8]
  %5 = matmul(%4, %v) : f32[2, 8, 16]
  return %5
}""", "the softmax sums over axes [1] of f32[2, 8, 8], not the last (key) axis"),
    ("log_softmax_is_not_attention", """
graph(%q: f32[2, 8, 16], %k: f32[2, 8, 16], %v: f32[2, 8, 16]) {
  %0 = permute(%k) {dims=[0, 2, 1]} : f32[2, 16, 8]
  %1 = matmul(%q, %0) : f32[2, 8, 8]
  %2 = log_softmax(%1) {dim=-1} : f32[2, 8, 8]
  %3 = matmul(%2, %v) : f32[2, 8, 16]
  return %3
}""", None),
]


@pytest.mark.parametrize("before, expected", params(REWRITES))
def test_rewrite(before: str, expected: str) -> None:
    res = assert_rewrites(tile_attention.run, before, expected, constants=CONSTANTS)
    assert len(res.notes) == 1 and not res.rejected


@pytest.mark.parametrize("before, reason", params(NEGATIVES))
def test_near_miss_is_left_alone_with_its_reason(before: str, reason: str | None) -> None:
    res = assert_unchanged(tile_attention.run, before, constants=CONSTANTS)
    if reason is None:
        assert not res.rejected
    else:
        assert len(res.rejected) == 1 and res.rejected[0].endswith(f": {reason}"), res.rejected


def test_notes_say_what_the_op_keeps() -> None:
    res = assert_rewrites(tile_attention.run, REWRITES[3][1], REWRITES[3][2])
    assert res.notes == ("scaled_dot_product_attention : f16[2, 3, 5, 4] replaces softmax(Q Kᵀ) V "
                         "(decomposed softmax; scale 0.25 from Q, K; bool mask)",)


def _call_with_mask(lines: str, mask: int) -> str:
    """An attention call on [2, 4, 8, 16] whose mask is ``%mask``, computed by ``lines``."""
    return f"""
graph(%q: f32[2, 4, 8, 16], %k: f32[2, 4, 8, 16], %v: f32[2, 4, 8, 16]) {{
  {lines}
  %{mask + 1} = scaled_dot_product_attention(%q, %k, %v, %{mask}) {{scale=0.25, is_causal=false, enable_gqa=false}} : f32[2, 4, 8, 16]
  return %{mask + 1}
}}"""


def _call_without_mask(causal: bool) -> str:
    return f"""
graph(%q: f32[2, 4, 8, 16], %k: f32[2, 4, 8, 16], %v: f32[2, 4, 8, 16]) {{
  %0 = scaled_dot_product_attention(%q, %k, %v) {{scale=0.25, is_causal={str(causal).lower()}, enable_gqa=false}} : f32[2, 4, 8, 16]
  return %0
}}"""


_BIAS = """%4 = full() {shape=[], value=0.0, dtype=f32} : f32[]
  %5 = full() {shape=[], value=-3.4028234663852886e+38, dtype=f32} : f32[]
  %6 = where(%3, %4, %5) : f32[2, 1, 8, 8]"""


@pytest.mark.parametrize("mask, last", [
    ("""%0 = constant() {name="keep_all"} : bool[1, 1, 1, 8]
  %1 = expand(%0) {shape=[2, 1, 8, 8]} : bool[2, 1, 8, 8]""", 1),
    ("""%0 = constant() {name="keep_all"} : bool[1, 1, 1, 8]
  %1 = full() {shape=[], value=0.0, dtype=f32} : f32[]
  %2 = expand(%0) {shape=[2, 1, 8, 8]} : bool[2, 1, 8, 8]
  %3 = full() {shape=[], value=-inf, dtype=f32} : f32[]
  %4 = where(%2, %1, %3) : f32[2, 1, 8, 8]""", 4),
])
def test_an_attention_call_with_a_mask_that_hides_nothing_loses_it(mask: str, last: int) -> None:
    """HF's masks of an all-ones padding mask, built from constants while tracing."""
    res = assert_rewrites(tile_attention.run, _call_with_mask(mask, last), _call_without_mask(False),
                          constants=CONSTANTS)
    assert res.notes == ("scaled_dot_product_attention : f32[2, 4, 8, 16]: a mask that hides nothing, dropped",)


@pytest.mark.parametrize("keep", [
    """%0 = constant() {name="keys"} : i64[1, 1, 1, 8]
  %1 = constant() {name="queries"} : i64[1, 1, 8, 1]
  %2 = le(%0, %1) : bool[1, 1, 8, 8]""",
    """%0 = constant() {name="tril8"} : bool[1, 1, 8, 8]
  %1 = logical_not(%0) : bool[1, 1, 8, 8]
  %2 = logical_not(%1) : bool[1, 1, 8, 8]""",
])
def test_a_causal_mask_from_folded_position_ranges_becomes_is_causal(keep: str) -> None:
    """HF's causal mask with static shapes: ``keys <= queries`` of two folded aranges, or
    the comparison itself folded (short sequences), turned into an additive bias."""
    lines = f"{keep}\n  %3 = expand(%2) {{shape=[2, 1, 8, 8]}} : bool[2, 1, 8, 8]\n  {_BIAS}"
    res = assert_rewrites(tile_attention.run, _call_with_mask(lines, 6), _call_without_mask(True),
                          constants=CONSTANTS)
    assert res.notes == ("scaled_dot_product_attention : f32[2, 4, 8, 16]: causal mask -> is_causal",)


def test_a_mask_computed_from_v_is_still_a_mask() -> None:
    """Only the scores may not feed the mask; anything computed before them (V included) can."""
    res = assert_rewrites(tile_attention.run, _attention("""
  %2 = sum(%v) {dims=[-1], keepdim=true, dtype=none} : f32[2, 4, 8, 1]
  %3 = permute(%2) {dims=[0, 1, 3, 2]} : f32[2, 4, 1, 8]
  %4 = add(%1, %3) : f32[2, 4, 8, 8]"""), """
graph(%q: f32[2, 4, 8, 16], %k: f32[2, 4, 8, 16], %v: f32[2, 4, 8, 16]) {
  %0 = sum(%v) {dims=[-1], keepdim=true, dtype=none} : f32[2, 4, 8, 1]
  %1 = permute(%0) {dims=[0, 1, 3, 2]} : f32[2, 4, 1, 8]
  %2 = scaled_dot_product_attention(%q, %k, %v, %1) {scale=1.0, is_causal=false, enable_gqa=false} : f32[2, 4, 8, 16]
  return %2
}""")
    assert "additive mask" in res.notes[0]


# -- equivalence, one property test per form --------------------------------------------------

@pytest.mark.parametrize("form", FORMS)
@settings(max_examples=25)
@given(data=st.data())
def test_every_form_becomes_one_attention_op(form: str, data: st.DataObject) -> None:
    case = data.draw(attention_cases(form))
    note(str(case))
    res = apply(tile_attention.run, case.graph)
    g = res.graph
    assert res.modified, res.rejected
    assert g.count(Op.SDPA) == 1 and not any(g.count(op) for op in (Op.SOFTMAX, Op.EXP, Op.MATMUL))
    (sdpa,) = [n for n in g.nodes if n.op is Op.SDPA]
    one_key = case.choice["sq"] == case.choice["sk"] == 1   # a constant 1x1 causal mask hides nothing
    assert sdpa.attrs["is_causal"] == case.causal or (one_key and len(sdpa.inputs) == 3)
    assert sdpa.attrs["enable_gqa"] == case.gqa
    ch = case.choice
    # [Note: attention in half precision]; a runtime scale on Q, or a factor on K before its
    # heads are repeated, leaves a float32 product (not a widened half) in the operand
    k_product = ch["group"] == "repeat_kv" and ch["scale"] in ("k", "split", "k_div", "split_div")
    if ch["widen"] and not ch["runtime"] and not k_product:
        assert sdpa.output.type.dtype is DType.F16 and g.count(Op.CAST) == 0, g
    assert_same_results(case.graph, g, case.inputs)


@pytest.mark.parametrize("miss", sorted(MISSES))
@settings(max_examples=15)
@given(data=st.data())
def test_near_misses_are_left_alone_with_their_reason(miss: str, data: st.DataObject) -> None:
    """Attention spoiled one way (softmax over the queries, a scale varying per key, a fill
    that does not vanish, weights used elsewhere) in any form: not replaced, and said why."""
    case = data.draw(attention_cases(data.draw(st.sampled_from(FORMS)), miss=miss))
    note(str(case))
    res = apply(tile_attention.run, case.graph)
    assert not res.modified and res.graph is case.graph and not res.notes
    assert len(res.rejected) == 1 and res.rejected[0].endswith(MISSES[miss]), res.rejected


@settings(max_examples=30)
@given(case=sdpa_calls())
def test_attention_calls_with_the_causal_mask_become_causal(case: AttentionCase) -> None:
    note(str(case))
    res = apply(tile_attention.run, case.graph)
    assert res.modified == case.causal and not res.rejected
    (sdpa,) = [n for n in res.graph.nodes if n.op is Op.SDPA]
    assert sdpa.attrs["is_causal"] == case.causal and len(sdpa.inputs) == (3 if case.causal else 4)
    assert sdpa.attrs["enable_gqa"] == case.gqa and sdpa.attrs["scale"] == case.choice["scale"]
    assert_same_results(case.graph, res.graph, case.inputs)


# -- through torch.compile: attention as model code writes it ---------------------------------

def _compiled_attention(fn, args, n: int, **options):
    compiled = effc.compile(fn, args, target="reference", **options)
    with torch.no_grad():
        got, want = compiled(*args), fn(*args)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    (report,) = compiled.explain().graphs
    record = next(p for p in report.passes if p.name == "tile_attention")
    assert report.ops.get("scaled_dot_product_attention", 0) == n, report.ops
    return report, record


def _repeat_interleave_gqa(q, k, v):
    k, v = (torch.repeat_interleave(x, 2, dim=1) for x in (k, v))
    return torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1) @ v


def _tiled_kv_triu_float32(q, k, v):
    k, v = (x.repeat(1, 2, 1, 1) for x in (k, v))
    s = (q @ k.transpose(-1, -2)) * 0.25
    s = s.masked_fill(torch.triu(torch.ones(8, 8, dtype=torch.bool), 1), float("-inf"))
    return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v


def _sdpa_gqa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


@pytest.mark.parametrize("fn, note_has", [
    (_repeat_interleave_gqa, "4 query heads on 2 K/V heads"),
    (_tiled_kv_triu_float32, "causal"),   # repeat tiles heads: not grouping, K/V kept repeated
    (_sdpa_gqa, None),                    # already attention; GQA from the head counts
])
def test_hand_written_attention(fn, note_has: str | None) -> None:
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 4, 8, 16, generator=g), torch.randn(1, 2, 8, 16, generator=g), \
        torch.randn(1, 2, 8, 16, generator=g)
    report, record = _compiled_attention(fn, (q, k, v), 1)
    assert "softmax" not in report.ops and not record.rejected
    if note_has is not None:
        (line,) = record.notes
        assert note_has in line and ("4 query heads" in line) == (fn is _repeat_interleave_gqa)


def test_disable_pass_keeps_the_softmax() -> None:
    torch._dynamo.reset()
    q = torch.randn(1, 4, 8, 16)
    report, record = _compiled_attention(_repeat_interleave_gqa, (q, q[:, :2], q[:, 2:]), 0,
                                         disable_passes=["tile_attention"])
    assert record.skipped and report.ops["softmax"] == 1


# -- Hugging Face transformers, eager and sdpa attention, built from tiny configs --------------

def _hf(name: str, impl: str):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    small = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                 vocab_size=100)
    if name == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100,
                                      n_positions=32, bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2Model
    elif name == "bert":
        cfg, model = transformers.BertConfig(**small), transformers.BertModel
    else:
        cfg = transformers.LlamaConfig(**small, num_key_value_heads=2)
        model = transformers.LlamaModel
    cfg._attn_implementation = impl
    return model(cfg).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name, impl, padded, expect", [
    ("gpt2", "eager", False, "causal"),
    ("gpt2", "eager", True, "additive mask"),       # causal and padding in one bias
    ("bert", "eager", True, "additive mask"),
    ("llama", "eager", False, "causal; 4 query heads on 2 K/V heads"),
    ("gpt2", "sdpa", False, None),
    ("bert", "sdpa", True, None),
    ("llama", "sdpa", False, None),
])
def test_transformers_attention_is_one_op_per_layer(name: str, impl: str, padded: bool,
                                                    expect: str | None) -> None:
    torch._dynamo.reset()
    model = _hf(name, impl)
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, -3:] = 0
    if padded:
        args: tuple = (ids, mask)

        def fn(i, m):
            return model(input_ids=i, attention_mask=m).last_hidden_state
    else:
        args = (ids,)

        def fn(i):
            return model(input_ids=i).last_hidden_state
    report, record = _compiled_attention(fn, args, 2)
    assert "softmax" not in report.ops and not record.rejected
    if expect is None:
        assert not record.notes   # the attention op came from the sdpa call itself
    else:
        assert len(record.notes) == 2 and all(expect in n for n in record.notes), record.notes
