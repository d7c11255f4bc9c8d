"""The Triton attention kernels [Note: Triton attention] (codegen/triton_attention.py), run on
the CPU under TRITON_INTERPRET=1 (triton_run.py sets it) at small sizes: forward and decode
(split-KV with its combine) for every SDPA variant torch takes agree with the reference
backend under the tolerance policy; fully masked rows give 0 as the reference does; what
the generator declines says why; the cost model's picks fit the chip. The ``gpu`` test
compiles the kernels at real sizes on CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sympy
import torch

from tests.codegen.triton_run import DEVICE, load  # noqa: I001  (sets TRITON_INTERPRET first)

from effc.backends.reference import ReferenceProgram
from effc.codegen.triton_abi import size_symbols
from effc.codegen.triton_attention import generate_attention
from effc.costmodel.triton_attention_configs import (AttentionConfig, AttentionProblem, DecodeConfig,
                                                      choose_attention_config, choose_decode_config,
                                                      predict_attention_config, rank_attention_configs,
                                                      reject_reason)
from effc.ir import DType, GraphBuilder, Op, TensorType, size_symbol
from effc.ir.kernel import LoweringError
from effc.ir.kernel_lower import lower
from effc.ir.kernel_node import add_kernel, extract_body
from effc.tolerance import assert_equivalent

F32, F16, BF16, BOOL = DType.F32, DType.F16, DType.BF16, DType.BOOL
S0 = size_symbol("s0")
SMALL = (AttentionConfig(16, 16, 4, 2), DecodeConfig(16, 4, 2, splits=3))   # several tiles at test sizes


def sdpa(q: tuple, k: tuple, v: tuple, mask: tuple | None = None, dtype: DType = F32, **attrs: Any) -> tuple:
    """(graph, kernel) of one SDPA node; ``mask`` is (shape, dtype)."""
    b = GraphBuilder()
    ins = [b.input(r, TensorType(dtype, s)) for r, s in (("q", q), ("k", k), ("v", v))]
    if mask is not None:
        ins.append(b.input("m", TensorType(mask[1], mask[0])))
    g = b.build([b.op(Op.SDPA, ins, **{"scale": None, "is_causal": False, "enable_gqa": False, **attrs})])
    body, vals = extract_body(g.nodes, g.outputs)
    outer = GraphBuilder()
    return g, lower(add_kernel(outer, "op", "att", [outer.input(x.name or "x", x.type) for x in vals], body))


def inputs(graph: Any, env: dict, gen: torch.Generator) -> list[torch.Tensor]:
    xs = []
    for v in graph.inputs:
        shape = [int(sympy.sympify(d).xreplace(env)) for d in v.type.shape]
        if v.type.dtype is BOOL:
            xs.append(torch.rand(shape, generator=gen) < 0.7)
        else:
            x = torch.randn(shape, generator=gen) * (0.5 if v.name == "m" else 1.0)
            xs.append(x.to(v.type.dtype.to_torch()))
    return xs


def run(graph: Any, kernel: Any, tmp: Path, config: Any = SMALL, env: dict | None = None,
        xs: list[torch.Tensor] | None = None, seed: int = 0) -> torch.Tensor:
    """Run the generated module on ``xs`` (fresh random ones if None) into a NaN-poisoned
    output and check it against the reference backend."""
    env = env or {}
    xs = xs or inputs(graph, env, torch.Generator().manual_seed(seed))
    src = generate_attention(kernel, "k0", config)
    eager = ReferenceProgram(graph)(*xs)
    ref = ReferenceProgram(graph, upcast=True)(*xs)
    out = torch.full(eager[0].shape, float("nan"), dtype=eager[0].dtype, device=DEVICE)
    load(src, tmp)([x.to(DEVICE) for x in xs], [out], [int(env[s]) for s in size_symbols(kernel)])
    assert_equivalent([out.cpu()], eager, ref, f"{kernel}\nat {env}")
    return out.cpu()


CAUSAL, GQA = {"is_causal": True}, {"enable_gqa": True}
FORWARD = [
    ((2, 2, 37, 16), (2, 2, 45, 16), (2, 2, 45, 24), None, {}),             # Sq != Sk, Dv != D, ragged
    ((1, 2, 40, 20), (1, 2, 40, 20), (1, 2, 40, 20), None, CAUSAL),         # D = 20 pads to 32
    ((1, 1, 50, 16), (1, 1, 33, 16), (1, 1, 33, 16), None, CAUSAL),         # Sq > Sk: late rows see all
    ((1, 2, 20, 16), (1, 2, 70, 16), (1, 2, 70, 16), None, CAUSAL),         # Sq < Sk: top-left diagonal
    ((2, 2, 21, 16), (2, 2, 19, 16), (2, 2, 19, 16), ((21, 19), BOOL), {}),
    ((2, 3, 21, 16), (2, 3, 19, 16), (2, 3, 19, 16), ((3, 1, 19), BOOL), {"scale": 0.3}),
    ((2, 2, 21, 16), (2, 2, 19, 16), (2, 2, 19, 16), ((2, 1, 1, 19), F32), {}),   # over heads and rows
    ((2, 2, 21, 16), (2, 2, 19, 16), (2, 2, 19, 16), ((21, 1), F32), {"scale": -0.7}),
    ((1, 4, 33, 16), (1, 2, 40, 16), (1, 2, 40, 16), None, GQA),
    ((2, 4, 24, 16), (2, 1, 24, 16), (2, 1, 24, 16), None, {**GQA, **CAUSAL}),   # MQA
    ((2, 2, 20, 16), (1, 2, 25, 16), (1, 2, 25, 16), None, {}),             # kv shared over the batch
    ((3, 29, 16), (3, 30, 16), (3, 30, 16), None, {}),                      # no head dim
    ((29, 16), (31, 16), (31, 16), None, CAUSAL),                           # no leading dims
    ((2, 2, 3, 17, 16), (1, 2, 3, 20, 16), (1, 2, 3, 20, 16), None, {}),    # three leading dims
]


@pytest.mark.parametrize("case", FORWARD, ids=range(len(FORWARD)))
def test_forward_matches_the_reference(case: tuple, tmp_path: Path) -> None:
    q, k, v, mask, attrs = case
    run(*sdpa(q, k, v, mask, **attrs), tmp_path)


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_half_precision_accumulates_in_float32(dtype: DType, tmp_path: Path) -> None:
    g, k = sdpa((1, 2, 40, 32), (1, 2, 48, 32), (1, 2, 48, 32), ((40, 48), BOOL), dtype)
    run(g, k, tmp_path)
    g, k = sdpa((1, 2, 40, 32), (1, 2, 40, 32), (1, 2, 40, 32), None, dtype, is_causal=True)
    run(g, k, tmp_path)
    g, k = sdpa((2, 4, 2, 32), (2, 2, 90, 32), (2, 2, 90, 32), None, dtype, enable_gqa=True)   # decode
    run(g, k, tmp_path)


DECODE = [
    ((2, 3, 1, 16), (2, 3, 90, 16), (2, 3, 90, 24), None, {}),
    ((1, 4, 2, 16), (1, 2, 70, 16), (1, 2, 70, 16), None, GQA),              # group packed into rows
    ((1, 4, 1, 16), (1, 1, 70, 16), (1, 1, 70, 16), None, GQA),              # MQA: every head packed
    ((1, 2, 3, 16), (1, 2, 70, 16), (1, 2, 70, 16), ((2, 3, 70), BOOL), {}),
    ((1, 4, 2, 16), (1, 2, 70, 16), (1, 2, 70, 16), ((4, 1, 70), F32), GQA),  # mask per query head
    ((1, 2, 4, 16), (1, 2, 70, 16), (1, 2, 70, 16), None, CAUSAL),          # only keys 0..i
    ((2, 1, 16), (2, 50, 16), (2, 50, 16), None, {"scale": 0.2}),
]


@pytest.mark.parametrize("case", DECODE, ids=range(len(DECODE)))
def test_decode_split_kv_matches_the_reference(case: tuple, tmp_path: Path) -> None:
    q, k, v, mask, attrs = case
    run(*sdpa(q, k, v, mask, **attrs), tmp_path)


def test_decode_one_split_and_auto_splits(tmp_path: Path) -> None:
    g, k = sdpa((1, 2, 1, 16), (1, 2, 300, 16), (1, 2, 300, 16))
    run(g, k, tmp_path, (SMALL[0], DecodeConfig(16, 4, 2, splits=1)))
    run(g, k, tmp_path, (SMALL[0], DecodeConfig(16, 4, 2)))      # chosen at launch: several splits
    run(g, k, tmp_path, (SMALL[0], DecodeConfig(16, 4, 2, splits=64)), seed=1)   # more splits than blocks


def test_symbolic_lengths_take_both_paths(tmp_path: Path) -> None:
    g, k = sdpa((1, 2, S0, 16), (1, 2, S0, 16), (1, 2, S0, 16), ((S0, S0), BOOL), scale=0.5)
    for n, s0 in enumerate((1, 5, 37)):
        run(g, k, tmp_path, env={S0: s0}, seed=n)


def test_fully_masked_rows_give_zero_and_nan_propagates(tmp_path: Path) -> None:
    for sq in (21, 3):   # forward, decode
        g, k = sdpa((1, 2, sq, 16), (1, 2, 40, 16), (1, 2, 40, 16), ((sq, 40), BOOL))
        gen = torch.Generator().manual_seed(sq)
        q, kk, v = (torch.randn(1, 2, n, 16, generator=gen) for n in (sq, 40, 40))
        keep = torch.rand(sq, 40, generator=gen) < 0.7
        keep[1] = False
        v[0, 1, 7, 3] = float("nan")
        out = run(g, k, tmp_path, xs=[q, kk, v, keep])
        assert (out[0, 0, 1] == 0).all()
        assert torch.isnan(out[0, 1, :, 3][keep[:, 7]]).all()


def test_declines_with_a_reason() -> None:
    with pytest.raises(LoweringError, match="is_causal"):
        generate_attention(sdpa((1, 8, 8), (1, 8, 8), (1, 8, 8), ((8, 8), BOOL), is_causal=True)[1], "k")
    with pytest.raises(LoweringError, match="f64"):
        generate_attention(sdpa((1, 8, 8), (1, 8, 8), (1, 8, 8), None, DType.F64)[1], "k")
    with pytest.raises(LoweringError, match="scale"):
        generate_attention(sdpa((1, 8, 8), (1, 8, 8), (1, 8, 8), scale=float("inf"))[1], "k")
    with pytest.raises(LoweringError, match="powers of two"):
        generate_attention(sdpa((1, 8, 8), (1, 8, 8), (1, 8, 8))[1], "k", AttentionConfig(8, 16))


def test_cost_model_picks_tiles_that_fit() -> None:
    big = AttentionProblem(128, 4096, 4096, 128, 128, 2)
    best = choose_attention_config(big)
    assert reject_reason(best, big) is None and best.block_m >= 64
    assert all(r[1] is None for r in rank_attention_configs(big) if r[0].num_stages * r[0].block_n * 256 * 2 > 227 * 1024)
    causal = AttentionProblem(128, 4096, 4096, 128, 128, 2, causal=True)
    assert predict_attention_config(best, causal) < 0.6 * predict_attention_config(best, big)
    small = AttentionProblem(4, 20, 20, 16, 16, 4, tensor_cores=False)
    assert choose_attention_config(small).block_m <= 32
    dec = choose_decode_config(AttentionProblem(256, 1, 8192, 128, 128, 2))
    assert dec.block_n >= 32 and dec.splits == 0


@pytest.mark.gpu
def test_gpu_sizes(tmp_path: Path) -> None:
    """Default (cost-model) tiles at sizes that fill the chip, forward and decode; the
    tensor-descriptor forward where it applies."""
    for q, kv, attrs, dtype, tma in (((2, 8, 1024, 128), (2, 8, 1024, 128), {}, F16, True),
                                     ((2, 8, 1000, 64), (2, 8, 1000, 64), CAUSAL, F16, True),
                                     ((2, 8, 300, 80), (2, 8, 300, 80), {}, F16, False),
                                     ((4, 32, 1, 128), (4, 8, 8192, 128), GQA, F16, False),
                                     ((4, 8, 1, 128), (4, 8, 8192, 128), {}, F16, False),
                                     ((2, 8, 1000, 128), (2, 8, 1000, 128), CAUSAL, BF16, False),
                                     ((4, 32, 1, 128), (4, 8, 8192, 128), GQA, BF16, False)):
        g, k = sdpa(q, kv, kv, None, dtype, **attrs)
        run(g, k, tmp_path, config=None)
        if tma:
            run(g, k, tmp_path, config=AttentionConfig(128, 64, 8, 3, tma=True))


TMA = (AttentionConfig(16, 16, 4, 2, tma=True), SMALL[1])


@pytest.mark.parametrize("case", [FORWARD[0], FORWARD[1], FORWARD[3], FORWARD[4], FORWARD[8], FORWARD[9],
                                  FORWARD[10], FORWARD[13]], ids=range(8))
def test_forward_through_tensor_descriptors(case: tuple, tmp_path: Path) -> None:
    """The TMA variant where descriptors apply (GQA and MQA included), the pointer kernel where
    they do not (kv broadcast over the batch); both agree with the reference."""
    q, k, v, mask, attrs = case
    run(*sdpa(q, k, v, mask, **attrs), tmp_path, TMA)


def test_many_heads_launch_in_chunks(tmp_path: Path) -> None:
    """Grid axis 1 holds at most 65535 (batch, head) points: the launcher walks them in
    chunks; here the chunk is made 4 to see 6 heads go in two launches, forward and decode."""
    for sq in (20, 2):
        g, k = sdpa((2, 3, sq, 16), (2, 3, 40, 16), (2, 3, 40, 16))
        xs = inputs(g, {}, torch.Generator().manual_seed(sq))
        entry = load(generate_attention(k, "k0", SMALL), tmp_path)
        entry.__globals__["ZMAX"] = 4
        out = torch.full((2, 3, sq, 16), float("nan"), device=DEVICE)
        entry([x.to(DEVICE) for x in xs], [out], [])
        assert_equivalent([out.cpu()], ReferenceProgram(g)(*xs), ReferenceProgram(g, upcast=True)(*xs))
