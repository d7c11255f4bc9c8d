"""The FX frontend and op table: ops convert to the right IR ops and compute what eager does."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import effc
from effc.tolerance import assert_equivalent


@pytest.fixture(autouse=True)
def _reset() -> None:
    torch._dynamo.reset()


def _check(fn, *inputs, dynamic=None, expect_ops=(), no_externs=True):
    """Compile ``fn`` through effc, compare against eager and the float64 reference."""
    backend = effc.backend()
    compiled = torch.compile(fn, backend=backend, dynamic=dynamic, fullgraph=True)
    with torch.no_grad():
        out = compiled(*inputs)
        eager = fn(*inputs)
        fn64 = copy.deepcopy(fn).double() if isinstance(fn, torch.nn.Module) else fn
        ref = fn64(*[t.double() if t.is_floating_point() else t for t in inputs])
    outs = out if isinstance(out, tuple) else (out,)
    eagers = eager if isinstance(eager, tuple) else (eager,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    assert_equivalent(outs, eagers, refs)
    ex = backend.explain()
    assert ex.graphs and all(g.fallback is None for g in ex.graphs), ex
    if no_externs:
        assert ex.extern_count == 0, str(ex)
    return backend


x4 = torch.randn(3, 4)


@pytest.mark.parametrize("fn", [
    lambda x: torch.exp(x) + torch.sin(x) * 2.5 - x / 3,
    lambda x: torch.sigmoid(x) * torch.tanh(x) + F.gelu(x) + F.gelu(x, approximate="tanh"),
    lambda x: F.silu(x) + F.hardswish(x) + F.hardsigmoid(x) + F.relu6(x) + F.leaky_relu(x, 0.2),
    lambda x: F.elu(x) + F.softplus(x) + torch.erf(x) + torch.rsqrt(x.abs() + 1),
    lambda x: torch.where(x > 0, x, x * 0.1).clamp(-0.5, 0.5),
    lambda x: (x.int() * 3 + 1).float() + (x > 0.2).float(),
    lambda x: torch.maximum(x, x.sum(0)) + torch.pow(x.abs(), 1.5) + 2 ** x,
    lambda x: x.sum(1) + x.mean(0).sum() + x.amax(1) - x.amin(1) + x.var(1) + x.std(1, correction=0),
    lambda x: (x.argmax(1), x.max(dim=1).values, x.prod(1), x.cumsum(1)),
    lambda x: torch.softmax(x, -1) + torch.log_softmax(x, 0),
    lambda x: x.reshape(2, 6).permute(1, 0).unsqueeze(0).expand(3, 6, 2).squeeze(0)[1:, ::2],
    lambda x: torch.cat([x, x * 2], 1).split([3, 5], 1)[1] + x.select(1, 2).unsqueeze(1),
    lambda x: F.pad(x, (1, 2)) + 1,
    lambda x: x @ x.t() + torch.mm(x, x.t()),
    lambda x: torch.arange(4, dtype=torch.float32) * x + torch.ones(3, 4) + torch.full((3, 1), 2.0),
    lambda x: torch.gather(x, 1, torch.tensor([[0, 1], [1, 2], [2, 3]])).sum() + x.index_select(1, torch.tensor([0, 3])).sum(),
])
def test_elementwise_reduction_layout_ops(fn) -> None:
    _check(fn, x4.clone())


def test_nn_layers_convert_to_single_ir_ops() -> None:
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 8, 3, groups=8, padding=1), torch.nn.GroupNorm(2, 8),
        torch.nn.AvgPool2d(2), torch.nn.AdaptiveAvgPool2d((1, 1)), torch.nn.Flatten(),
        torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4)).eval()
    backend = _check(m, torch.randn(2, 3, 32, 32))
    ops = backend.explain().graphs[0].ops
    for op in ("convolution", "max_pool", "group_norm", "avg_pool", "layer_norm", "relu"):
        assert ops.get(op), (op, ops)
    assert ops["convolution"] == 2


def test_embedding_and_attention() -> None:
    class Attn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(50, 16)

        def forward(self, ids, mask):
            h = self.emb(ids).view(2, 5, 2, 8).transpose(1, 2)
            return F.scaled_dot_product_attention(h, h, h, attn_mask=mask)
    backend = _check(Attn(), torch.randint(0, 50, (2, 5)), torch.randn(5, 5))
    ops = backend.explain().graphs[0].ops
    assert ops.get("embedding") == 1 and ops.get("scaled_dot_product_attention") == 1, ops


def test_adaptive_pool_and_sdpa_op() -> None:
    def fn(x):
        return F.adaptive_avg_pool2d(x, (3, 3)) * 2
    backend = _check(fn, torch.randn(2, 3, 9, 9))
    assert backend.explain().graphs[0].ops.get("adaptive_avg_pool") == 1


def test_symbolic_sizes_serve_every_size_without_recompiling() -> None:
    def fn(x):
        return torch.softmax(x.reshape(x.shape[0], -1, 4) * x.shape[0], -1).sum(1)
    backend = effc.backend()
    compiled = torch.compile(fn, backend=backend, dynamic=True)
    with torch.no_grad():
        for n in (2, 3, 7, 11):
            x = torch.randn(n, 8)
            torch.testing.assert_close(compiled(x), fn(x))
    assert len(backend.reports) == 1
    g = backend.reports[0].graph
    assert g.symbols() and not g.inputs[0].type.is_static, backend.reports[0].ir


def test_unsupported_op_becomes_named_extern() -> None:
    def fn(x):
        return torch.flip(x, [0]) + torch.sort(x, 1).values
    backend = _check(fn, x4.clone(), no_externs=False)
    externs = backend.explain().graphs[0].externs
    assert "aten.flip.default" in externs and "aten.sort.default" in externs
    assert all(backend.explain().graphs[0].extern_reasons.values())


def test_python_scalar_promotion_matches_torch() -> None:
    def fn(i, h):
        return i + 1.5, i * 2, h * 0.1, (i > 1) + 1, h + torch.tensor(2.0, dtype=torch.float64)
    i = torch.arange(6, dtype=torch.int32)
    h = torch.randn(6).half()
    backend = effc.backend()
    out = torch.compile(fn, backend=backend)(i, h)
    for a, b in zip(out, fn(i, h)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b)
    assert backend.explain().extern_count == 0


def test_training_graph_gradients_match_eager() -> None:
    m = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.LayerNorm(12), torch.nn.GELU(), torch.nn.Linear(12, 3))
    m2 = copy.deepcopy(m)
    x = torch.randn(5, 6)
    compiled = torch.compile(m, backend="effc")
    compiled(x).square().sum().backward()
    m2(x).square().sum().backward()
    for p, q in zip(m.parameters(), m2.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)


def test_training_eager_option_falls_back_with_reason() -> None:
    m = torch.nn.Linear(4, 4)
    backend = effc.backend(training="eager")
    torch.compile(m, backend=backend)(torch.randn(2, 4)).sum().backward()
    (g,) = backend.explain().graphs
    assert g.fallback and "training" in g.fallback
    assert m.weight.grad is not None


def test_rule_refusal_becomes_extern_not_a_crash() -> None:
    # torch accepts an empty rank-2 index into a rank-1 input; effc's gather rule does not
    def fn(x):
        return torch.gather(x, 0, torch.zeros(2, 0, dtype=torch.int64)).sum() + x
    backend = _check(fn, torch.randn(5), no_externs=False)
    assert "aten.gather.default" in backend.explain().graphs[0].externs


def test_one_entry_padding_list_and_rank0_prod() -> None:
    _check(lambda x: F.avg_pool2d(x, (3, 3), (1, 1), (1,), True, False, 2), torch.randn(2, 3, 9, 9))
    _check(lambda x: torch.prod(x, 0, keepdim=True) * 2, torch.randn(()))


def test_scalar_beside_rank0_tensor_keeps_its_dtype() -> None:
    backend = _check(lambda x: x * 2.5 + x.sum() * 0.5, torch.tensor(1.25))
    assert backend.explain().extern_count == 0


def test_attention_gradients_match_eager() -> None:
    q, k, v = (torch.randn(1, 2, 5, 8, requires_grad=True) for _ in range(3))
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    fn(q, k, v).square().sum().backward()
    eager = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    torch.compile(fn, backend="effc")(q, k, v).square().sum().backward()
    for t, g in zip((q, k, v), eager):
        torch.testing.assert_close(t.grad, g, rtol=1e-4, atol=1e-5)


def test_integer_indexing_becomes_index_select() -> None:
    idx = torch.tensor([[0, -1], [1, 1]])

    def fn(x):
        return x[idx] + 1, x[:, torch.tensor([3, 0])], x[:, :, torch.tensor([-2])], torch.take(x, idx)
    backend = _check(fn, torch.randn(3, 4, 2))
    assert backend.explain().graphs[0].ops.get("index_select") == 4
    # a boolean mask has a data-dependent size: the graph runs in PyTorch, and says why
    backend = effc.backend()
    x = torch.randn(3, 4)
    torch.testing.assert_close(torch.compile(lambda x: x[x > 0].sum(), backend=backend)(x), x[x > 0].sum())
    assert all(g.fallback for g in backend.explain().graphs if g.target == "eager")
