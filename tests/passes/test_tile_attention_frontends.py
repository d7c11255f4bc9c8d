"""tile_attention on attention as the frontends deliver it: hand-written torch through
torch.compile, hand-written ONNX and Hugging Face GPT-2 / BERT exported to ONNX, dropout in
inference, multi-query attention by broadcasting; and near misses in the explain report (the
Python report and ``effc explain``); and the reference backend running every attention op the
pass emits."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import effc
from effc.backends.reference import ReferenceProgram
from effc.cli.main import app
from effc.ir import DType, GraphBuilder, Op, TensorType
from effc.ir.verify import verify
from effc.tolerance import assert_equivalent


def _record(compiled, n: int):
    """The one graph's report and its tile_attention record; ``n`` attention ops in the end."""
    (report,) = compiled.explain().graphs
    record = next(p for p in report.passes if p.name == "tile_attention")
    assert report.ops.get("scaled_dot_product_attention", 0) == n, report.ops
    return report, record


# -- torch.compile ------------------------------------------------------------------------

def _functional_dropout(q, k, v):
    p = torch.softmax(q @ k.transpose(-1, -2) * 0.25, dim=-1)
    return F.dropout(p, 0.1, training=False) @ v


class _DropoutModule(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.2)

    def forward(self, q, k, v):
        return self.drop(torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)) @ v


def _mqa_broadcast(q, k, v):
    """One K/V head, broadcast by the matmuls themselves."""
    return torch.softmax((q @ k.transpose(-1, -2)) / 4.0, dim=-1) @ v


@pytest.mark.parametrize("fn, kv_heads, note_has", [
    (_functional_dropout, 4, "scale 0.25 from scores; no mask"),
    (_DropoutModule().eval(), 4, "scale 0.25 from scores; no mask"),
    (_mqa_broadcast, 1, "4 query heads on 1 K/V heads"),
])
def test_torch_compile(fn, kv_heads: int, note_has: str) -> None:
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 8, 16, generator=g)
    k, v = (torch.randn(2, kv_heads, 8, 16, generator=g) for _ in range(2))
    compiled = effc.compile(fn, (q, k, v), target="reference")
    with torch.no_grad():
        torch.testing.assert_close(compiled(q, k, v), fn(q, k, v), rtol=1e-4, atol=1e-5)
    report, record = _record(compiled, 1)
    (line,) = record.notes
    assert note_has in line and "softmax" not in report.ops and "expand" not in report.ops, (line, report.ops)


def test_near_miss_is_in_the_explain_report() -> None:
    torch._dynamo.reset()

    def over_queries(q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2), dim=-2) @ v

    q = torch.randn(1, 2, 8, 16)
    compiled = effc.compile(over_queries, (q, q, q), target="reference")
    torch.testing.assert_close(compiled(q, q, q), over_queries(q, q, q), rtol=1e-4, atol=1e-5)
    _, record = _record(compiled, 0)
    (reason,) = record.rejected
    assert reason.endswith("softmax over axis 2 of f32[1, 2, 8, 8], not the last (key) axis"), reason
    text = str(compiled.explain())
    assert f"pass tile_attention rejected 1: {reason}" in text, text
    (entry,) = [p for p in compiled.explain().to_json()["passes"] if p["name"] == "tile_attention"]
    assert entry["rejected"] == [reason]


# -- ONNX: hand-written ---------------------------------------------------------------------

def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "attention", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def _t(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _c(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _padded_dropout() -> onnx.ModelProto:
    """Q divided by sqrt(d), a padding mask through Where, Dropout (inference) on the weights."""
    qkv = ["batch", 2, 6, 8]
    return _model([
        helper.make_node("Div", ["q", "sqrt_d"], ["qs"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["qs", "kt"], ["s"]),
        helper.make_node("Where", ["keep", "s", "ninf"], ["sm"]),
        helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
        helper.make_node("Dropout", ["p", "ratio"], ["pd"]),
        helper.make_node("MatMul", ["pd", "v"], ["y"])],
        [_t("q", qkv), _t("k", qkv), _t("v", qkv), _t("keep", ["batch", 1, 1, 6], TensorProto.BOOL)],
        [_t("y", qkv)],
        [_c("sqrt_d", np.float32(np.sqrt(8))), _c("ninf", np.float32(-np.inf)), _c("ratio", np.float32(0.1))])


def _causal_mqa() -> onnx.ModelProto:
    """A causal mask from Trilu, added as a 0 / -1e9 bias; K and V with one head, broadcast."""
    return _model([
        helper.make_node("Trilu", ["ones"], ["lower"], upper=0),
        helper.make_node("Sub", ["lower", "one"], ["off"]),          # 0 kept, -1 above
        helper.make_node("Mul", ["off", "big"], ["bias"]),            # 0 kept, -1e9 above
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["ss"]),
        helper.make_node("Add", ["ss", "bias"], ["sb"]),
        helper.make_node("Softmax", ["sb"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"])],
        [_t("q", [2, 4, 6, 8]), _t("k", [2, 1, 6, 8]), _t("v", [2, 1, 6, 8])], [_t("y", [2, 4, 6, 8])],
        [_c("ones", np.ones((6, 6), np.float32)), _c("one", np.float32(1)), _c("big", np.float32(1e9)),
         _c("scale", np.float32(0.125))])


def _over_queries() -> onnx.ModelProto:
    qkv = [1, 2, 6, 8]
    return _model([
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=2),
        helper.make_node("MatMul", ["p", "v"], ["y"])],
        [_t("q", qkv), _t("k", qkv), _t("v", qkv)], [_t("y", qkv)])


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for i in model.graph.input:
        shape = [d.dim_value or 3 for d in i.type.tensor_type.shape.dim]
        if i.type.tensor_type.elem_type == TensorProto.BOOL:
            keep = rng.random(shape) > 0.4
            keep[..., 0] = True
            out[i.name] = keep
        else:
            out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


@pytest.mark.parametrize("build, note_has", [
    (_padded_dropout, "scale 0.353553 from Q; bool mask"),
    (_causal_mqa, "scale 0.125 from scores; causal; 4 query heads on 1 K/V heads"),
])
def test_onnx_hand_written(build, note_has: str) -> None:
    model = build()
    compiled = effc.compile(model, target="reference")
    feeds = _feeds(model)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(compiled.run(feeds)["y"], want[0], rtol=1e-4, atol=1e-5)
    report, record = _record(compiled, 1)
    (line,) = record.notes
    assert note_has in line and "softmax" not in report.ops, (line, report.ops)


def test_onnx_near_miss_in_effc_explain(tmp_path) -> None:
    path = tmp_path / "over_queries.onnx"
    onnx.save(_over_queries(), str(path))
    r = CliRunner().invoke(app, ["explain", str(path), "--json"])
    assert r.exit_code == 0, r.output
    (p,) = [p for p in json.loads(r.stdout)["passes"] if p["name"] == "tile_attention"]
    assert not p["modified"] and len(p["rejected"]) == 1
    assert p["rejected"][0].endswith("softmax over axis 2 of f32[1, 2, 6, 6], not the last (key) axis")
    r = CliRunner().invoke(app, ["explain", str(path)])
    assert r.exit_code == 0 and "rejected: softmax" in r.stdout, r.stdout


# -- ONNX: Hugging Face eager attention, exported ---------------------------------------------

def _hf_onnx(name: str) -> tuple[bytes, torch.nn.Module]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if name == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16,
                                      bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2Model
    else:
        cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                      intermediate_size=64, vocab_size=50)
        model = transformers.BertModel
    cfg._attn_implementation = "eager"
    inner = model(cfg).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids, mask):
            return self.inner(input_ids=ids, attention_mask=mask).last_hidden_state

    module = Hidden().eval()
    ids, mask = torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (ids, mask), buf, dynamo=False, input_names=["ids", "mask"],
                          output_names=["out"], opset_version=18)
    return buf.getvalue(), module


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_onnx_transformers_eager_attention_is_one_op_per_layer(name: str) -> None:
    data, module = _hf_onnx(name)
    compiled = effc.compile(data, target="reference")
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, -3:] = 0
    got = compiled.run({"ids": ids.numpy(), "mask": mask.numpy()})["out"]
    with torch.no_grad():
        want = module(ids, mask)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
    report, record = _record(compiled, 2)
    assert "softmax" not in report.ops and not record.rejected and len(record.notes) == 2
    assert all("additive mask" in n for n in record.notes), record.notes


# -- the reference backend runs every attention op the pass emits ----------------------------

def _attention(q, k, v, mask, scale: float, causal: bool, dtype: torch.dtype) -> torch.Tensor:
    """softmax(scale · Q Kᵀ + mask) V computed in ``dtype``, K/V heads repeated for their
    query groups."""
    q, k, v = (x.to(dtype) for x in (q, k, v))
    r = q.shape[-3] // k.shape[-3]
    k, v = (x.repeat_interleave(r, dim=-3) for x in (k, v))
    s = scale * (q @ k.transpose(-1, -2))
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.to(dtype)
    return (torch.softmax(s, dim=-1) @ v).to(q.dtype)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "bool_keys", "bias", "causal"])
@pytest.mark.parametrize("kv", ["same", "grouped", "one_head", "shared_batch"])
@pytest.mark.parametrize("dtype", [DType.F32, DType.F16])
def test_reference_runs_each_mask_and_grouping(mask_kind: str, kv: str, dtype: DType) -> None:
    g = torch.Generator().manual_seed(0)
    kv_shape = {"same": (2, 4, 5, 8), "grouped": (2, 2, 5, 8), "one_head": (2, 1, 5, 8),
                "shared_batch": (1, 4, 5, 8)}[kv]
    b = GraphBuilder()
    t = dtype.to_torch()
    tensors = [torch.randn(2, 4, 5, 8, generator=g).to(t), torch.randn(kv_shape, generator=g).to(t),
               torch.randn(kv_shape, generator=g).to(t)]
    mask = None
    if mask_kind in ("bool", "bool_keys"):
        mask = torch.rand((2, 1, 5, 5) if mask_kind == "bool" else (1, 5), generator=g) > 0.4
        mask[..., 0] = True
    elif mask_kind == "bias":   # float32 on half Q: what the pass emits for a wider bias
        mask = torch.randn(2, 4, 5, 5, generator=g)
    ins = [b.input(n, TensorType(DType.from_torch(x.dtype), tuple(x.shape)))
           for n, x in zip("qkvm", tensors + ([mask] if mask is not None else []))]
    out = b.op(Op.SDPA, ins, scale=0.3, is_causal=mask_kind == "causal", enable_gqa=kv in ("grouped", "one_head"))
    graph = b.build([out])
    verify(graph)
    (got,) = ReferenceProgram(graph)(*tensors, *([mask] if mask is not None else []))
    causal = mask_kind == "causal"
    eager = _attention(*tensors, mask, 0.3, causal, torch.float32).to(t)
    reference = _attention(*tensors, mask, 0.3, causal, torch.float64)
    assert got.dtype == t and got.shape == reference.shape
    assert_equivalent([got], [eager], [reference])


# -- torch's math backend, as CUDA traces of masked half attention decompose ---------------

class _MathBackend(torch.nn.Module):
    """What ``scaled_dot_product_attention`` traces to on CUDA when its math backend is chosen
    (fp16 with a mask the fused kernels decline): widen to float32, scale Q and Kᵀ by the root
    of the scale each, add the mask, ``_safe_softmax``, round the result back. The mask is an
    input, or HF's additive mask of an all-ones padding mask, built from a constant."""

    def __init__(self, mask: str) -> None:
        super().__init__()
        self.mask = mask
        self.register_buffer("positions", torch.arange(8))

    def forward(self, q, k, v, pad):
        qf, kf, vf = q.float(), k.float(), v.float()
        root = (1.0 / q.shape[-1] ** 0.5) ** 0.5
        s = torch.matmul(qf * root, kf.transpose(-2, -1) * root)
        if self.mask == "input":
            s = s + pad
        else:   # keep every key: positions >= 0, expanded over batch and queries
            keep = (self.positions >= 0)[None, None, None, :].expand(q.shape[0], 1, q.shape[2], 8)
            s = s + torch.where(keep, 0.0, torch.finfo(torch.float16).min).to(torch.float16)
        p = torch.ops.aten._safe_softmax(s, -1)
        return torch.matmul(p, vf).to(q.dtype)


@pytest.mark.parametrize("mask", ["input", "all_keep"])
def test_math_backend_decomposition_runs_as_half_attention(mask: str) -> None:
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 8, 16, generator=g).half() for _ in range(3))
    pad = torch.where(torch.rand(2, 1, 8, 8, generator=g) > 0.3, 0.0, float("-inf")).half()
    pad[..., 0] = 0.0
    pad[0, 0, 3] = float("-inf")   # one query that sees no key: 0, as _safe_softmax gives
    model = _MathBackend(mask)
    compiled = effc.compile(model, (q, k, v, pad), target="reference")
    with torch.no_grad():
        got, want = compiled(q, k, v, pad), model(q, k, v, pad)
    assert got.dtype == torch.float16
    if mask == "input":
        assert bool((got[0, :, 3] == 0).all())
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-3, atol=2e-3)
    report, record = _record(compiled, 1)
    text = " ".join(record.notes)
    assert "safe softmax" in text and "runs on the f16 values" in text, text
    assert ("additive mask" in text) == (mask == "input"), text
    assert "softmax" not in report.ops and "cast" not in report.ops, report.ops
