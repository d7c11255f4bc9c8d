"""The Triton backend's whole-program path (backends/triton): random graphs fused, planned and
run as generated Triton kernels over one arena; whole models (an MLP, a small conv net, a
layer-norm/softmax model, tiny GPT-2 and BERT from transformers configs) through
``effc.compile(..., target="triton")`` and ``torch.compile(backend="effc")``; the disk cache
(hit, corrupt entry rebuilt); the error without triton or CUDA; the autotune path. On the CPU
every kernel runs under TRITON_INTERPRET=1; the ``gpu`` tests run the same on CUDA."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # before anything imports triton

import pytest  # noqa: E402
from hypothesis import given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytest.importorskip("triton")

import effc  # noqa: E402
from effc.backends.reference import ReferenceProgram  # noqa: E402
from effc.backends.triton import autotune, build  # noqa: E402
from effc.backends.triton.program import TritonProgram  # noqa: E402
from effc.codegen.triton_abi import TritonConfig, TritonSource  # noqa: E402
from effc.errors import OptionError  # noqa: E402
from effc.ir import DType, GraphBuilder, Op, TensorType, size_symbol  # noqa: E402
from effc.ir.kernel_lower import lower  # noqa: E402
from effc.options import Options  # noqa: E402
from effc.passes import fuse, plan_memory  # noqa: E402
from effc.tolerance import assert_equivalent  # noqa: E402

from tests.strategies import examples, graphs, sizes  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from e2e_util import check_inference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
s0 = size_symbol("s0")


@pytest.fixture(autouse=True)
def cache_home(tmp_path_factory, monkeypatch):
    """Every test writes kernels into its own cache, and starts from an empty Dynamo cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def program_of(graph, hint, options=None):  # type: ignore[no-untyped-def]
    opts = options or Options(target="triton", size_hints={str(k): v for k, v in hint.items()})
    fused = fuse.run(graph, opts).graph
    p = plan_memory.plan(fused, opts.hint_env(fused.symbols()))
    return fused, TritonProgram(fused, p, "test", opts, torch.device(DEVICE))


# -- random graphs --------------------------------------------------------------------------------

@examples(8)
@given(data=st.data(), case=graphs(max_nodes=8))
def test_triton_program_matches_the_reference(data: st.DataObject, case) -> None:
    hint = data.draw(sizes(case), label="hint")
    env = data.draw(sizes(case, avoid=hint), label="sizes")
    fused, program = program_of(case.graph, hint)
    note(str(fused))
    note(f"run in Python: {program.fallbacks}")
    inputs = case.inputs(env, seed=3)
    actual = [t.cpu() for t in program(*[x.to(DEVICE) for x in inputs])]
    expected = ReferenceProgram(case.graph)(*inputs)
    reference = ReferenceProgram(case.graph, upcast=True)(*inputs)
    assert_equivalent(actual, expected, reference, str(fused))


def test_a_kernel_without_triton_falls_back_in_the_same_arena() -> None:
    """exp -> cumsum (an op kernel) -> relu(cumsum - exp): the middle step runs on torch."""
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (s0, 16)))
    e = b.op(Op.EXP, [x])
    c = b.op(Op.CUMSUM, [e], dim=1, dtype=None)
    g = b.build([b.op(Op.RELU, [b.op(Op.SUB, [c, e])])])
    fused, program = program_of(g, {s0: 8})
    assert any("cumsum" in k for k in program.fallbacks), program.fallbacks
    assert program.kernels, "the point-wise kernels around it are generated"
    for n in (8, 3):   # a second size binds a second launch list
        xs = torch.randn(n, 16)
        got = program(xs.to(DEVICE))[0].cpu()
        assert_equivalent([got], ReferenceProgram(g)(xs), ReferenceProgram(g, upcast=True)(xs))


# -- whole models ---------------------------------------------------------------------------------

def _compiled(model, args, **options):  # type: ignore[no-untyped-def]
    return effc.compile(model, args, target="triton", **options)


def _python_kernels(compiled) -> dict[str, str]:  # type: ignore[no-untyped-def]
    e = compiled.explain()
    assert all(g.target == "triton" and not g.fallback for g in e.graphs), str(e)
    return {k: v for g in e.graphs for k, v in g.python_kernels.items()}


def test_mlp() -> None:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 48), torch.nn.GELU(), torch.nn.Linear(48, 10),
                            torch.nn.LogSoftmax(-1)).eval().to(DEVICE)
    x = torch.randn(6, 16, device=DEVICE)
    c = _compiled(m, (x,))
    check_inference(m, c, (x,), context="mlp")
    assert _python_kernels(c) == {}


def test_small_conv_net() -> None:
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4), torch.nn.Hardswish(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval().to(DEVICE)
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 6, 6, device=DEVICE)
    c = _compiled(m, (x,))
    check_inference(m, c, (x,), context="convnet")
    assert _python_kernels(c) == {}   # convolutions (templates), pooling and the head all generated


def test_conv_net_with_pools() -> None:
    """Max, avg and adaptive avg pools run as generated kernels (codegen/triton_pool.py)."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1),
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.AvgPool2d(2, count_include_pad=False),
        torch.nn.AdaptiveAvgPool2d((3, 2)), torch.nn.Flatten(), torch.nn.Linear(24, 5)).eval().to(DEVICE)
    x = torch.randn(2, 3, 18, 17, device=DEVICE)
    c = _compiled(m, (x,))
    check_inference(m, c, (x,), context="convnet with pools")
    ops = {k: v for g in c.explain().graphs for k, v in g.ops.items()}
    assert all(ops.get(op) == 1 for op in ("max_pool", "avg_pool", "adaptive_avg_pool")), ops
    assert _python_kernels(c) == {}


class NormSoftmax(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = torch.nn.LayerNorm(40)
        self.proj = torch.nn.Linear(40, 40)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        a = torch.softmax(h @ h.transpose(-1, -2) / 6.0, dim=-1)
        return torch.nn.functional.rms_norm(self.proj(a @ h) + x, (40,)) * x.amax(-1, keepdim=True)


def test_layer_norm_softmax_model_with_dynamic_rows() -> None:
    torch.manual_seed(0)
    m = NormSoftmax().eval().to(DEVICE)
    x = torch.randn(2, 9, 40, device=DEVICE)
    c = effc.compile(m, (x,), target="triton", dynamic=True)
    check_inference(m, c, (x,), context="norm/softmax")
    y = torch.randn(3, 14, 40, device=DEVICE)   # other sizes, the same compiled graph
    check_inference(m, c, (y,), context="norm/softmax, new sizes")
    assert len(c.explain().graphs) == 1


transformers = pytest.importorskip("transformers")


def gpt2():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=97, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval().to(DEVICE)


def bert():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=97, max_position_embeddings=32)
    return transformers.BertModel(cfg).eval().to(DEVICE)


def test_tiny_gpt2_through_torch_compile() -> None:
    model = gpt2()
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    b = effc.backend(target="triton")
    compiled = torch.compile(model, backend=b)
    check_inference(model, compiled, (ids,), context="gpt2")
    e = b.explain()
    assert e.graphs and all(g.target == "triton" for g in e.graphs), str(e)
    kernels = {k: why for g in e.graphs for k, why in g.python_kernels.items()}
    # embeddings, layer norms, matmuls and the rest are generated (attention is its own module's)
    assert not [k for k in kernels if "scaled_dot_product_attention" not in k], kernels


def test_tiny_bert_with_padding_mask() -> None:
    model = bert()
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    mask = torch.ones(2, 11, dtype=torch.long, device=DEVICE)
    mask[1, 7:] = 0
    c = _compiled(model, (ids, mask))
    check_inference(model, c, (ids, mask), context="bert")
    # the mask's extern ops run in torch, and on CUDA the pad transformers adds to the mask
    # (no Triton pad kernel yet; H200, 2026-12-02); nothing else
    allowed = (" extern[",) + ((" op[pad]",) if DEVICE == "cuda" else ())
    kernels = _python_kernels(c)
    assert not [k for k in kernels if "scaled_dot_product_attention" not in k and not any(a in k for a in allowed)], \
        kernels


# -- build cache ----------------------------------------------------------------------------------

SRC = TritonSource("effc_cache_probe", "import triton\nVALUE = 41\n\ndef entry(inputs, outputs, sizes):\n"
                                      "    outputs[0].fill_(VALUE + sizes[0])\n", "entry")


def test_build_cache_hits_and_rebuilds_a_corrupt_entry(tmp_path) -> None:
    first = build.load(SRC, tmp_path)
    assert not first.cache_hit and first.path.read_text() == SRC.source
    build._LOADED.clear()                       # a new process: the entry is on disk
    again = build.load(SRC, tmp_path)
    assert again.cache_hit and again.path == first.path
    first.path.write_text("VALUE = (\n")        # damaged on disk: its stamp no longer matches
    build._LOADED.clear()
    fixed = build.load(SRC, tmp_path)
    assert not fixed.cache_hit and fixed.path.read_text() == SRC.source
    out = [torch.zeros(1)]
    fixed.entry([], out, [1])
    assert out[0].item() == 42
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp", ".trash"))]


def test_a_module_that_does_not_import_is_a_compile_error(tmp_path) -> None:
    from effc.errors import CompileError
    with pytest.raises(CompileError, match="does not import"):
        build.load(TritonSource("bad", "def entry(:\n", "entry"), tmp_path)


# -- availability ---------------------------------------------------------------------------------

def test_target_triton_needs_triton(monkeypatch) -> None:
    import effc.backends.triton as tb
    monkeypatch.setattr(tb, "triton_available", lambda: False)
    with pytest.raises(OptionError, match="needs the triton package"):
        _compiled(torch.nn.ReLU(), (torch.randn(3),))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_target_triton_needs_cuda_or_the_interpreter(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(OptionError, match="needs a CUDA device"):
        _compiled(torch.nn.ReLU(), (torch.randn(3),))


# -- autotune -------------------------------------------------------------------------------------

def _softmax_kernel():  # type: ignore[no-untyped-def]
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (s0, 300)))
    fused = fuse.run(b.build([b.op(Op.SOFTMAX, [x], dim=-1)]), Options()).graph
    return lower(next(n for n in fused.nodes if n.op is Op.KERNEL))


def test_autotune_measures_the_top_configs_once_and_caches_the_winner(monkeypatch) -> None:
    kernel = _softmax_kernel()
    measured: list[TritonConfig] = []

    def fake(k, env, device, config):  # type: ignore[no-untyped-def]
        measured.append(config)
        return 1.0 + len(measured) % 2        # the second candidate is fastest
    monkeypatch.setattr(autotune, "_measure", fake)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "fake-gpu")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    env = {s0: 64}
    first = autotune.pick_config(kernel, env, None, torch.device("cuda"), autotune=True)
    assert len(measured) == autotune.TOP and first == measured[1]
    again = autotune.pick_config(kernel, env, None, torch.device("cuda"), autotune=True)
    assert again == first and len(measured) == autotune.TOP   # read back, not measured again
    plain = autotune.pick_config(kernel, env, None, torch.device("cuda"), autotune=False)
    assert plain == measured[0]                                 # the cost model's first pick


def test_autotune_option_under_the_interpreter_uses_the_prediction() -> None:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.LayerNorm(24), torch.nn.Softmax(-1)).eval().to(DEVICE)
    x = torch.randn(5, 24, device=DEVICE)
    c = _compiled(m, (x,), autotune=True)
    check_inference(m, c, (x,), context="autotune")


# -- CUDA -----------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_models_on_cuda_with_graphs_and_autotune() -> None:
    model = gpt2().half()
    ids = torch.randint(0, 97, (4, 16), device="cuda")
    c = _compiled(model, (ids,), autotune=True)
    with torch.no_grad():
        got = c(ids).logits.float()
        want = model(ids).logits.float()
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    m = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64),
                            torch.nn.LayerNorm(64)).eval().cuda()
    x = torch.randn(512, 64, device="cuda")
    c = _compiled(m, (x,))
    check_inference(m, c, (x,), context="mlp on cuda")
    check_inference(m, c, (x * 2,), context="mlp on cuda, graph replay")
