"""CNNs through torch.compile(backend=effc): transformers' ResNet (basic and bottleneck
blocks) and MobileNetV2 with trained-looking batch-norm statistics, and a set of small
"unseen" models a new user might try that nobody tuned effc for. Every output must match
eager within the tolerance policy against a float64 copy; externs are allowed."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import effc
from e2e_util import check_inference, externs_of, fell_back, pass_modified

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow


def with_running_stats(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial affine parameters and running statistics (a few
    training-mode passes on shifted, scaled data), then switch to eval."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, *shape[1:], generator=g) * 2.0 + 0.5)
    model.eval()
    stats = [m.running_mean for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert stats and all(s.abs().sum() > 0 for s in stats)
    return model


def resnet(layer_type: str) -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                    layer_type=layer_type, num_labels=10)
    return transformers.ResNetForImageClassification(cfg)


def mobilenet_v2() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.MobileNetV2Config(num_channels=3, image_size=32, depth_multiplier=0.35)
    return transformers.MobileNetV2Model(cfg)


CNNS = {
    "resnet-basic": (lambda: resnet("basic"), (1, 3, 32, 32)),
    "resnet-bottleneck": (lambda: resnet("bottleneck"), (2, 3, 64, 64)),
    "mobilenet_v2": (mobilenet_v2, (1, 3, 32, 32)),
}


@pytest.fixture(scope="module", params=sorted(CNNS))
def cnn_run(request):
    """Compile one CNN once; both tests below read the result."""
    torch._dynamo.reset()
    make, shape = CNNS[request.param]
    model = with_running_stats(make(), shape)
    b = effc.backend()
    compiled = torch.compile(model, backend=b)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    error = None
    try:
        check_inference(model, compiled, (x,), context=request.param)
    except AssertionError as e:
        error = e
    ex = b.explain()
    print(request.param, "externs:", externs_of(ex), "fallbacks:", fell_back(ex))
    print(ex)
    torch._dynamo.reset()
    return request.param, ex, error


def test_cnn_matches_eager(cnn_run):
    name, ex, error = cnn_run
    if error is not None:
        raise error
    assert ex.graphs and not fell_back(ex), fell_back(ex)


def test_cnn_batchnorm_folded(cnn_run):
    name, ex, _ = cnn_run
    assert pass_modified(ex, "fold_batchnorm"), f"{name}: fold_batchnorm did not change the graph\n{ex}"


# -- unseen models -----------------------------------------------------------------------------

class TextCNN(nn.Module):
    """Embedding, parallel Conv1d of several widths, max over time, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 16, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(16, 8, k, padding=k // 2) for k in (2, 3, 5))
        self.fc = nn.Linear(8 * 3 + 8, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids).transpose(1, 2)
        feats = [F.relu(c(x)).max(dim=-1).values for c in self.convs]
        pooled = F.adaptive_max_pool1d(F.max_pool1d(F.relu(self.convs[1](x)), 2), 1).squeeze(-1)
        return self.fc(torch.cat(feats + [pooled], dim=1))


class TinyUNet(nn.Module):
    """Encoder, strided down-sampling, ConvTranspose2d up-sampling, skip connection by cat."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.up3 = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)
        self.dec = nn.Conv2d(24, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = F.relu(self.enc(x))
        m = F.relu(self.mid(F.relu(self.down(e))))
        y = F.relu(self.dec(torch.cat([self.up(m), self.up3(m), e], dim=1)))
        return torch.sigmoid(self.head(y))


class IndexingOps(nn.Module):
    """where, masked_fill, cumsum, topk, argmax, gather: outputs of float and integer dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(10, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.lin(x)
        a = torch.where(h > 0, h, 0.1 * h)
        b = a.masked_fill(x.abs() < 0.3, float("-inf"))
        c = torch.cumsum(a, dim=-1)
        vals, idx = torch.topk(c, k=3, dim=-1)
        am = torch.argmax(b, dim=-1)
        g = torch.gather(h, -1, idx)
        return vals, idx, am, g, b.softmax(-1), c.cumsum(0)


class CausalAttention(nn.Module):
    """Multi-head self-attention through F.scaled_dot_product_attention: is_causal, a boolean
    causal mask, and an additive float mask."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        bias = torch.zeros(t, t, device=x.device).masked_fill(~causal, float("-inf"))
        y = (F.scaled_dot_product_attention(q, k, v, is_causal=True)
             + F.scaled_dot_product_attention(q, k, v, attn_mask=causal)
             + F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.3))
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Norms(nn.Module):
    """GroupNorm, InstanceNorm (affine, and with running stats), PReLU, LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.act1 = nn.PReLU(16)
        self.inorm = nn.InstanceNorm2d(16, affine=True)
        self.act2 = nn.PReLU()
        self.inorm_stats = nn.InstanceNorm1d(16, track_running_stats=True)
        self.ln = nn.LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.inorm(self.act1(self.gn(self.conv(x)))))
        flat = self.inorm_stats(h.flatten(2))
        return self.ln(flat.transpose(1, 2))


class Resampling(nn.Module):
    """Upsample nearest and bilinear, interpolate to an odd size, adaptive average pooling
    to sizes that do not divide the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.near = nn.Upsample(scale_factor=2, mode="nearest")
        self.bilin = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.pool = nn.AdaptiveAvgPool2d((3, 5))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.conv(x)
        up = self.near(h) + self.bilin(h)
        odd = F.interpolate(h, size=(7, 9), mode="bilinear", align_corners=True)
        return self.pool(up), F.adaptive_avg_pool2d(odd, 1).flatten(1), odd


class Einsums(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 6))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        proj = torch.einsum("btd,de->bte", x, self.w)
        scores = torch.einsum("bqd,bkd->bqk", x, y)
        outer = torch.einsum("bi,bj->bij", x[:, 0], y[:, 0])
        diag = torch.einsum("bii->bi", scores[:, :, :5])
        heads = torch.einsum("bhqd,bhkd->bhqk", x.view(2, 5, 2, 4).transpose(1, 2), y.view(2, 5, 2, 4).transpose(1, 2))
        return proj, scores, outer, diag, heads


class SqueezeExcite(nn.Module):
    """Depthwise-separable block with squeeze-and-excitation, hardswish, reflect padding and
    pixel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.se1 = nn.Linear(16, 4)
        self.se2 = nn.Linear(4, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.hardswish(self.pw(self.dw(F.pad(x, (1, 1, 1, 1), mode="reflect"))))
        s = torch.sigmoid(self.se2(F.silu(self.se1(h.mean(dim=(2, 3))))))
        return F.pixel_shuffle(h * s[:, :, None, None], 2)


class BatchNormVariants(nn.Module):
    """Batch norm after each kind of layer it can fold into: grouped and bias-free convolution,
    grouped transposed convolution, depthwise convolution, linear (BatchNorm1d), and a batch
    norm without affine parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(6)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.bn3 = nn.BatchNorm2d(6, affine=False)
        self.fc = nn.Linear(6, 5)
        self.bn4 = nn.BatchNorm1d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv(x)))
        h = self.bn3(self.dw(F.relu(self.bn2(self.up(h)))))
        return self.bn4(self.fc(h.mean(dim=(2, 3))))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


UNSEEN = {
    "text_cnn": (TextCNN, lambda: (torch.randint(0, 100, (3, 20), generator=_gen(1)),)),
    "tiny_unet": (TinyUNet, lambda: (torch.randn(2, 3, 16, 16, generator=_gen(2)),)),
    "indexing_ops": (IndexingOps, lambda: (torch.randn(4, 10, generator=_gen(3)),)),
    "causal_attention": (CausalAttention, lambda: (torch.randn(2, 7, 32, generator=_gen(4)),)),
    "norms": (Norms, lambda: (torch.randn(2, 3, 8, 8, generator=_gen(5)),)),
    "resampling": (Resampling, lambda: (torch.randn(1, 3, 6, 10, generator=_gen(6)),)),
    "einsums": (Einsums, lambda: (torch.randn(2, 5, 8, generator=_gen(7)), torch.randn(2, 5, 8, generator=_gen(8)))),
    "batchnorm_variants": (BatchNormVariants, lambda: (torch.randn(2, 4, 5, 5, generator=_gen(10)),)),
    "squeeze_excite": (SqueezeExcite, lambda: (torch.randn(2, 8, 6, 6, generator=_gen(9)),)),
}


@pytest.mark.parametrize("name", sorted(UNSEEN))
def test_unseen_model_matches_eager(name):
    make, inputs = UNSEEN[name]
    torch.manual_seed(0)
    model = make().eval()
    if name == "batchnorm_variants":
        model = with_running_stats(model, (2, 4, 5, 5))
    if name == "norms":  # running statistics that differ from (0, 1)
        model.inorm_stats.running_mean.uniform_(-1, 1)
        model.inorm_stats.running_var.uniform_(0.5, 2)
    b = effc.backend()
    compiled = torch.compile(model, backend=b)
    check_inference(model, compiled, inputs(), context=name)
    ex = b.explain()
    print(name, "externs:", externs_of(ex), "fallbacks:", fell_back(ex))
    assert ex.graphs
    if name == "batchnorm_variants":
        print(ex)
