"""On a CUDA machine: effc graphs run on GPU tensors and match eager (fp32 and fp16)."""

from __future__ import annotations

import copy

import pytest
import torch

import effc
from effc.tolerance import assert_equivalent

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_transformer_block_on_cuda(dtype) -> None:
    torch._dynamo.reset()
    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0).eval()
    m = layer.to("cuda", dtype)
    x = torch.randn(2, 16, 64, device="cuda", dtype=dtype)
    backend = effc.backend()
    with torch.no_grad():
        out = torch.compile(m, backend=backend)(x)
        eager = m(x)
        ref = copy.deepcopy(m).double()(x.double())
    assert out.device.type == "cuda" and out.dtype == dtype
    assert_equivalent([out], [eager], [ref])
    assert backend.explain().graphs and backend.explain().graphs[0].fallback is None


def test_gpu_attention_kernels_become_one_ir_op() -> None:
    torch._dynamo.reset()
    q = torch.randn(2, 4, 16, 32, device="cuda", dtype=torch.float16)
    backend = effc.backend()
    fn = lambda q: torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)  # noqa: E731
    with torch.no_grad():
        out = torch.compile(fn, backend=backend)(q)
    torch.testing.assert_close(out, fn(q), rtol=2e-3, atol=2e-3)
    g = backend.explain().graphs[0]
    assert g.ops.get("scaled_dot_product_attention") == 1 and not g.externs, (g.ops, g.externs)


def test_dynamic_batch_on_cuda() -> None:
    torch._dynamo.reset()
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).cuda().eval()
    backend = effc.backend()
    c = torch.compile(m, backend=backend, dynamic=True)
    with torch.no_grad():
        for n in (2, 3, 5):  # sizes 0 and 1 specialise in Dynamo, so start at 2
            x = torch.randn(n, 3, 16, 16, device="cuda")
            torch.testing.assert_close(c(x), m(x), rtol=1e-4, atol=1e-4)
    assert len(backend.explain().graphs) == 1
