"""The C attention kernel [Note: C attention] (codegen/c_attention.py) through the C backend:
every SDPA variant torch takes (batch dims or none, Sq != Sk, D != Dv, sizes off the block
grid, causal either way round, bool and additive masks broadcast in every dim, GQA, kv
broadcast over batch, scale given or not, symbolic lengths) agrees with the float64
reference under the tolerance policy and runs in C; NaN/inf propagate as in torch's math
path; fully masked rows give 0; scratch stays inside its bound; what it declines says why."""

from __future__ import annotations

import ctypes
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import sympy
import torch
import torch.nn.functional as F

import effc
from effc.backends.c.program import CProgram
from effc.backends.reference import ReferenceProgram
from effc.codegen.c_abi import PRELUDE, c_name, symbol_order
from effc.codegen.c_attention import attention_function, attention_scratch, blocks
from effc.ir import DType, GraphBuilder, Op, TensorType, size_symbol
from effc.ir.kernel import LoweringError
from effc.ir.kernel_lower import lower
from effc.ir.kernel_node import add_kernel, extract_body
from effc.options import Options
from effc.passes import fuse, plan_memory
from effc.tolerance import assert_equivalent

from tests.codegen.strict_build import build_strict

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")

F32, BOOL = DType.F32, DType.BOOL
S0, S1 = size_symbol("s0"), size_symbol("s1")
MATH = torch.ops.aten._scaled_dot_product_attention_math


def sdpa_graph(cases: list[tuple[tuple, ...]]) -> Any:
    """One graph with an SDPA node per case ``(q shape, k shape, v shape, mask (shape, dtype)
    or None, attrs)``; its inputs in order q, k, v[, mask] per case."""
    b = GraphBuilder()
    outs = []
    for n, (qs, ks, vs, mask, attrs) in enumerate(cases):
        ins = [b.input(f"{r}{n}", TensorType(F32, s)) for r, s in (("q", qs), ("k", ks), ("v", vs))]
        if mask is not None:
            ins.append(b.input(f"m{n}", TensorType(mask[1], mask[0])))
        outs.append(b.op(Op.SDPA, ins, **{"scale": None, "is_causal": False, "enable_gqa": False, **attrs}))
    return b.build(outs)


def program(graph: Any, hint: dict | None = None) -> CProgram:
    opts = Options(size_hints={str(k): v for k, v in (hint or {}).items()})
    fused = fuse.run(graph, opts).graph
    prog = CProgram(fused, plan_memory.plan(fused, opts.hint_env(fused.symbols())))
    assert prog.fallbacks == {}, prog.fallbacks            # every attention ran in C
    assert prog.source.count("effc_att_rows_") >= len(graph.outputs)
    return prog


def inputs(graph: Any, env: dict, gen: torch.Generator) -> list[torch.Tensor]:
    xs = []
    for v in graph.inputs:
        shape = [int(sympy.sympify(d).xreplace(env)) for d in v.type.shape]
        if v.type.dtype is BOOL:
            m = torch.rand(shape, generator=gen) < 0.7
            xs.append(m)
        else:
            xs.append(torch.randn(shape, generator=gen) * (0.3 if v.name.startswith("m") else 1.0))
    return xs


def check(graph: Any, prog: CProgram, env: dict, seed: int = 0) -> None:
    xs = inputs(graph, env, torch.Generator().manual_seed(seed))
    got = prog(*xs)
    eager = ReferenceProgram(graph)(*xs)
    ref = ReferenceProgram(graph, upcast=True)(*xs)
    assert_equivalent(got, eager, ref, f"{graph}\nat {env}")


def test_static_variants_match_the_reference() -> None:
    B = (blocks().bq, blocks().bk)
    causal, gqa = {"is_causal": True}, {"enable_gqa": True}
    cases = [
        ((2, 3, 37, 16), (2, 3, 45, 16), (2, 3, 45, 24), None, {}),           # Sq != Sk, Dv padded
        ((29, 8), (70, 8), (70, 8), None, {"scale": 0.3}),                    # no leading dims
        ((4, B[0] + 1, 32), (4, B[1] + 45, 32), (4, B[1] + 45, 64), None, {}),  # two key blocks
        ((1, 2, 2 * B[0] + 3, 64), (1, 2, 2 * B[0] + 3, 64), (1, 2, 2 * B[0] + 3, 64), None, causal),
        ((1, 1, 70, 16), (1, 1, 40, 16), (1, 1, 40, 16), None, causal),       # Sq > Sk: later rows see all
        ((1, 2, 33, 16), (1, 2, 300, 16), (1, 2, 300, 16), None, causal),     # Sq < Sk: top-left diagonal
        ((2, 3, 21, 8), (2, 3, 19, 8), (2, 3, 19, 8), ((21, 19), BOOL), {}),
        ((2, 3, 21, 8), (2, 3, 19, 8), (2, 3, 19, 8), ((2, 1, 21, 19), BOOL), {}),
        ((2, 3, 21, 8), (2, 3, 19, 8), (2, 3, 19, 8), ((3, 1, 19), BOOL), {}),   # one row for all queries
        ((2, 3, 21, 8), (2, 3, 19, 8), (2, 3, 19, 8), ((21, 1), BOOL), {}),     # one value per query
        ((2, 3, 21, 8), (2, 3, 19, 8), (2, 3, 19, 8), ((21, 19), F32), {"scale": 1.7}),
        ((2, 3, 21, 8), (2, 3, 19, 8), (2, 3, 19, 8), ((2, 3, 1, 19), F32), {}),
        ((2, 3, 21, 8), (2, 3, 19, 8), (2, 3, 19, 8), ((2, 1, 21, 1), F32), {}),
        ((1, 8, 33, 16), (1, 2, 50, 16), (1, 2, 50, 20), None, gqa),
        ((2, 6, 40, 16), (2, 3, 40, 16), (2, 3, 40, 16), None, {**gqa, **causal}),
        ((2, 4, 17, 8), (2, 2, 23, 8), (2, 2, 23, 8), ((4, 17, 23), BOOL), gqa),
        ((2, 3, 12, 8), (1, 3, 15, 8), (1, 3, 15, 8), None, {}),             # kv shared over the batch
        ((2, 3, 12, 8), (2, 1, 15, 8), (2, 1, 15, 8), None, {}),             # one kv head for all
        ((3, 1, 1, 64), (3, 1, 500, 64), (3, 1, 500, 64), None, {}),         # one query (decode)
        ((1, 2, 5, 3), (1, 2, 7, 3), (1, 2, 7, 5), None, {}),                # D, Dv below a vector
    ]
    g = sdpa_graph(cases)
    check(g, program(g), {})


def test_symbolic_lengths() -> None:
    cases = [((1, 2, S0, 16), (1, 2, S1, 16), (1, 2, S1, 24), None, {}),
             ((2, S0, 32), (2, S1, 32), (2, S1, 32), None, {"is_causal": True}),
             ((1, 2, S0, 16), (1, 2, S1, 16), (1, 2, S1, 16), ((S0, S1), BOOL), {"scale": 0.5})]
    g = sdpa_graph(cases)
    prog = program(g, {S0: 64, S1: 64})
    for n, (s0, s1) in enumerate([(1, 1), (37, 300), (300, 37), (65, 65)]):
        check(g, prog, {S0: s0, S1: s1}, seed=n)


def test_nan_inf_and_fully_masked_rows() -> None:
    """As torch's math path: NaN in a query row, a key (masked or not) or a value (weighted
    0 or not) and +inf scores give NaN where they reach; rows with every key masked give 0,
    as torch's CPU kernels do, not NaN."""
    Sq, Sk, D = 9, 300, 16
    cases = [((1, 2, Sq, D), (1, 2, Sk, D), (1, 2, Sk, D), ((Sq, Sk), BOOL), {}),
             ((1, 2, Sq, D), (1, 2, Sk, D), (1, 2, Sk, D), ((Sq, Sk), F32), {})]
    g = sdpa_graph(cases)
    prog = program(g)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, D, generator=gen) for n in (Sq, Sk, Sk))
    q[0, 0, 1, 3] = float("nan")         # one query row of NaN scores
    k[0, 1, 200, 0] = float("nan")       # one key: NaN in every row of head 1
    v[0, 0, 17, 5] = float("nan")        # one value (masked in row 4 and the full-masked rows)
    keep = torch.rand(Sq, Sk, generator=gen) < 0.8
    keep[2] = False                      # fully masked rows
    keep[6] = False
    keep[4, 17] = False
    add = torch.where(keep, torch.zeros(()), torch.tensor(float("-inf")))
    add[7, 10] = float("inf")            # a +inf score: NaN for that row
    got_b, got_f = prog(q, k, v, keep, q, k, v, add)
    bool_add = torch.where(keep, 0.0, float("-inf"))   # F.sdpa's conversion before the math path
    for got, mask in ((got_b, bool_add), (got_f, add)):
        want = MATH(q.double(), k.double(), v.double(), mask.double())[0]
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5, equal_nan=True)
        assert torch.isnan(got[0, 0, 1]).all() and torch.isnan(got[0, 1]).all()
        assert torch.isnan(got[0, 0, :, 5]).all()         # 0 * NaN: every row, masked or not
        assert (got[0, 0, [2, 6]][:, [0, 1, 2, 3, 4, 6]] == 0).all()
    assert torch.isnan(got_f[0, 0, 7]).all() and not torch.isnan(got_b[0, 0, 7, :5]).any()
    # without NaN inputs, fully masked rows agree with the reference backend (0) too
    q, k, v = (torch.randn(1, 2, n, D, generator=gen) for n in (Sq, Sk, Sk))
    add[7, 10] = 0.0
    for got, want in zip(prog(q, k, v, keep, q, k, v, add), ReferenceProgram(g)(q, k, v, keep, q, k, v, add)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_causal_never_sees_the_scores_above_the_diagonal() -> None:
    """A NaN in a key above the diagonal of every row before it, inside the key block those
    rows do compute: only rows at or past the key are NaN, as in torch's CPU kernel."""
    S, D, nan_key = 100, 16, 50
    g = sdpa_graph([((1, 2, S, D), (1, 2, S, D), (1, 2, S, D), None, {"is_causal": True})])
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, S, D, generator=gen) for _ in range(3))
    k[0, 1, nan_key, 2] = float("nan")
    (got,) = program(g)(q, k, v)
    assert torch.isnan(got[0, 1, nan_key:]).all() and not torch.isnan(got[0, 1, :nan_key]).any()
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5, equal_nan=True)


def _kernel(q: tuple, k: tuple, v: tuple, mask: tuple | None = None, dtype: DType = F32, **attrs: Any) -> Any:
    g = sdpa_graph([(q, k, v, mask, attrs)])
    if dtype is not F32:
        b = GraphBuilder()
        ins = [b.input(x.name or "x", TensorType(dtype, x.type.shape)) for x in g.inputs]
        g = b.build([b.op(Op.SDPA, ins, **{"scale": None, "is_causal": False, "enable_gqa": False, **attrs})])
    body, vals = extract_body(g.nodes, g.outputs)
    outer = GraphBuilder()
    return lower(add_kernel(outer, "op", "att", [outer.input(x.name or "x", x.type) for x in vals], body))


@pytest.mark.parametrize("w", [4, 8, 16])
def test_scratch_bound_holds_and_nothing_is_allocated(tmp_path: Path, w: int) -> None:
    """Every vector width's blocks (gcc splits wider vectors than the host has, so all three
    run here): right answers, no write past the scratch bound, no allocation."""
    b = blocks(w)
    for causal in (False, True):
        k = _kernel((1, 3, S0, 24), (1, 3, S0, 24), (1, 3, S0, 40), None if causal else ((S0, S0), F32),
                    is_causal=causal)
        src = PRELUDE + attention_function(k, [S0], b)
        assert not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", src)
        (tmp_path / str(causal)).mkdir()
        lib = build_strict(src, tmp_path / str(causal))
        gen = torch.Generator().manual_seed(1)
        for n in (1, 77, 260):
            need = int(attention_scratch(k, b=b).xreplace({S0: n}))
            scratch = torch.full((need + 256 + 64,), 0xAB, dtype=torch.uint8)
            shift = (-scratch.data_ptr()) % 64
            xs = [torch.randn(1, 3, n, d, generator=gen) for d in (24, 24, 40)] + [torch.randn(n, n, generator=gen)]
            out = torch.full((1, 3, n, 40), 7.0)
            ptrs = [ctypes.c_void_p(t.data_ptr()) for t in (xs[:3] if causal else xs) + [out]]
            getattr(lib, c_name(k.name))(*ptrs, (ctypes.c_int64 * 1)(n), ctypes.c_void_p(scratch.data_ptr() + shift))
            assert (scratch[shift + need:shift + need + 256] == 0xAB).all(), f"scratch overrun at S={n}"
            want = F.scaled_dot_product_attention(*xs[:3], attn_mask=None if causal else xs[3], is_causal=causal)
            torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
    # linear in the sequence length: doubling S at most doubles the bound
    b1, b2 = (int(attention_scratch(k, b=b).xreplace({S0: n})) for n in (4096, 8192))
    assert b2 <= 2 * b1 and b2 < 8192 * 8192 * 4


def test_declines_with_a_reason() -> None:
    f = (1, 2, 8, 4)
    assert "float32 only" in _reason(_kernel(f, f, f, dtype=DType.F64))
    assert "float32 only" in _reason(_kernel(f, f, f, dtype=DType.F16))
    assert "is_causal" in _reason(_kernel(f, f, f, ((8, 8), BOOL), is_causal=True))
    g = sdpa_graph([(f, f, f, None, {"scale": float("inf")})])
    body, vals = extract_body(g.nodes, g.outputs)
    outer = GraphBuilder()
    assert "scale" in _reason(lower(add_kernel(outer, "op", "att", [outer.input(x.name or "x", x.type)
                                                                     for x in vals], body)))
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (4, 5)))
    body, vals = extract_body(b.nodes, [b.op(Op.SOFTMAX, [x], dim=1)])
    outer = GraphBuilder()
    sm = lower(add_kernel(outer, "op", "sm", [outer.input("x", v.type) for v in vals], body))
    assert attention_function(sm, []) is None and attention_scratch(sm) == 0
    # an f64 program still runs: the attention falls back to Python, with the reason recorded
    g64 = GraphBuilder()
    ins = [g64.input(n, TensorType(DType.F64, f)) for n in "qkv"]
    g64 = g64.build([g64.op(Op.SDPA, ins, scale=None, is_causal=False, enable_gqa=False)])
    fused = fuse.run(g64, Options()).graph
    prog = CProgram(fused, plan_memory.plan(fused, {}))
    assert any("float32 only" in why for why in prog.fallbacks.values()), prog.fallbacks


def _reason(kernel: Any) -> str:
    with pytest.raises(LoweringError) as e:
        attention_function(kernel, symbol_order(()))
    return e.value.reason


def test_effc_compile_runs_attention_in_c() -> None:
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 100, 32, generator=gen) for _ in range(3))

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True) * 2 + 1

    c = effc.compile(fn, (q, k, v), target="c")
    g = c.explain().graphs[0]
    assert g.target == "c" and g.python_kernels == {}, g.python_kernels
    torch.testing.assert_close(c(q, k, v), fn(q, k, v), rtol=1e-4, atol=1e-5)


class _MaskedAttention(torch.nn.Module):
    """Projections around an SDPA with a bool padding mask broadcast over heads and queries."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.out = torch.nn.Linear(32, 96), torch.nn.Linear(32, 32)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, 4, 8).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        return self.out(y.transpose(1, 2).reshape(b, s, 32))


def test_torch_compile_backend_runs_attention_in_c() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _MaskedAttention().eval()
    x = torch.randn(2, 40, 32)
    keep = torch.ones(2, 40, dtype=torch.bool)
    keep[1, 30:] = False
    before = len(effc.explain().graphs)   # the process-wide record also holds earlier tests' graphs
    with torch.no_grad():
        got = torch.compile(model, backend="effc", options={"target": "c"})(x, keep)
        report = effc.explain()
        want = model(x, keep)
        ref = model.double()(x.double(), keep)
    (g,) = report.graphs[before:]
    assert g.target == "c" and g.ops.get("scaled_dot_product_attention") == 1, g.ops
    assert g.python_kernels == {}, g.python_kernels
    assert_equivalent([got], [want], [ref])


def _tiny_hf(name: str, impl: str) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if name == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)
        cls = transformers.GPT2Model
    else:
        cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                      intermediate_size=128, vocab_size=100, max_position_embeddings=64)
        cls = transformers.BertModel
    cfg._attn_implementation = impl
    return cls(cfg).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name, impl", [("gpt2", "eager"), ("gpt2", "sdpa"), ("bert", "eager"), ("bert", "sdpa")])
def test_transformers_attention_runs_in_c(name: str, impl: str) -> None:
    """Tiny GPT-2 and BERT, with padding: both attention implementations reach one SDPA op per
    layer (passes/tile_attention.py turns the eager one into it) and every one runs in C."""
    torch._dynamo.reset()
    model = _tiny_hf(name, impl)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (2, 24), generator=gen)
    mask = torch.ones(2, 24, dtype=torch.long)
    mask[1, -5:] = 0

    def fn(i: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return model(input_ids=i, attention_mask=m).last_hidden_state

    with torch.no_grad():
        c = effc.compile(fn, (ids, mask), target="c")
        got = c(ids, mask)
        want = fn(ids, mask)
        model.double()
        ref = fn(ids, mask)
    reports = c.explain().graphs
    assert sum(g.ops.get("scaled_dot_product_attention", 0) for g in reports) == 2
    assert "softmax" not in {op for g in reports for op in g.ops}
    assert all(g.target == "c" for g in reports)
    in_python = {k: why for g in reports for k, why in g.python_kernels.items()}
    assert not [k for k in in_python if "attention" in k], in_python
    assert_equivalent([got], [want], [ref])
