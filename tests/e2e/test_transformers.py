"""Small GPT-2 and BERT from transformers (random weights, built from config) through
torch.compile(backend=effc): outputs within the tolerance policy, no recompiles once sizes
are dynamic, an explain record that names externs by op, and training graphs whose
gradients equal eager autograd's within the policy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import effc
from effc.tolerance import assert_equivalent
from e2e_util import check_inference, externs_of, fell_back, to_double

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

VOCAB = 1000


def gpt2(dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=VOCAB, n_positions=128,
                                  bos_token_id=0, eos_token_id=0, resid_pdrop=dropout,
                                  embd_pdrop=dropout, attn_pdrop=dropout)
    return transformers.GPT2LMHeadModel(cfg).eval()


def bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                  intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=128)
    return transformers.BertModel(cfg).eval()


def ids(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def padded_mask(batch: int, length: int) -> torch.Tensor:
    """Row i keeps its first length - 3*i tokens (at least 2): every row but the first pads."""
    mask = torch.ones(batch, length, dtype=torch.long)
    for i in range(1, batch):
        mask[i, max(2, length - 3 * i):] = 0
    return mask


def graph_count(backend) -> int:
    return len(backend.explain().graphs)


# -- inference -------------------------------------------------------------------------------

def test_gpt2_matches_eager_and_explains_externs():
    model = gpt2()
    b = effc.backend()
    compiled = torch.compile(model, backend=b)
    x = ids(2, 16, seed=1)
    check_inference(model, compiled, (x,), {"use_cache": False}, "gpt2 logits")
    check_inference(model, compiled, (x,), {"use_cache": False, "attention_mask": padded_mask(2, 16)},
                    "gpt2 logits, padded")
    ex = b.explain()
    externs = externs_of(ex)
    print("gpt2 externs:", externs, "fallbacks:", fell_back(ex))
    assert ex.graphs and isinstance(ex.to_json()["graphs"][0]["externs"], dict)
    assert not fell_back(ex), fell_back(ex)


def test_bert_padding_mask_matches_eager_and_explains_externs():
    model = bert()
    b = effc.backend()
    compiled = torch.compile(model, backend=b)
    x, mask = ids(3, 16, seed=2), padded_mask(3, 16)
    assert (mask == 0).any()
    check_inference(model, compiled, (), {"input_ids": x, "attention_mask": mask}, "bert padded")
    ex = b.explain()
    externs = externs_of(ex)
    print("bert externs:", externs, "reasons:", {k: v for g in ex.graphs for k, v in g.extern_reasons.items()})
    assert ex.graphs and all(isinstance(g.externs, dict) for g in ex.graphs)
    assert not fell_back(ex), fell_back(ex)


def test_gpt2_automatic_dynamic_stops_recompiling():
    """First length compiles static; the second recompiles with a symbolic length; later
    lengths reuse that graph."""
    model = gpt2()
    b = effc.backend()
    compiled = torch.compile(model, backend=b)
    for n in (8, 12):
        check_inference(model, compiled, (ids(2, n, seed=n),), {"use_cache": False}, f"gpt2 length {n}")
    settled = graph_count(b)
    frames = dict(torch._dynamo.utils.counters["stats"])
    assert settled >= 1 and frames.get("unique_graphs"), (settled, frames)
    for n in (16, 21, 33):
        check_inference(model, compiled, (ids(2, n, seed=n),), {"use_cache": False}, f"gpt2 length {n}")
    assert graph_count(b) == settled, [g.label for g in b.explain().graphs]
    assert torch._dynamo.utils.counters["stats"].get("unique_graphs") == frames.get("unique_graphs")
    print("gpt2 dynamic externs:", externs_of(b.explain()))


def test_bert_dynamic_true_compiles_once():
    model = bert()
    b = effc.backend()
    compiled = torch.compile(model, backend=b, dynamic=True)
    check_inference(model, compiled, (), {"input_ids": ids(2, 10, seed=3), "attention_mask": padded_mask(2, 10)},
                    "bert length 10")
    settled = graph_count(b)
    assert settled >= 1
    for n in (14, 23, 40):
        check_inference(model, compiled, (), {"input_ids": ids(2, n, seed=n), "attention_mask": padded_mask(2, n)},
                        f"bert length {n}")
    assert graph_count(b) == settled, [g.label for g in b.explain().graphs]
    print("bert dynamic externs:", externs_of(b.explain()))


# -- training: gradients through compiled forward and backward graphs --------------------------

def grads_of(model: nn.Module, loss_fn, *inputs) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, *inputs)
    loss.backward()
    return [loss.detach()] + [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]


def check_gradients(model: nn.Module, loss_fn, inputs: tuple, context: str) -> None:
    """Gradients (and the loss) of a model compiled with backend="effc" against eager
    autograd, both judged against a float64 copy."""
    before = {g.label for g in effc.explain().graphs}
    cmodel = copy.deepcopy(model)
    compiled = torch.compile(cmodel, backend="effc")
    with torch.enable_grad():
        actual = grads_of(cmodel, lambda m, *a: loss_fn(compiled, *a), *inputs)
        eager = grads_of(model, loss_fn, *inputs)
        ref = grads_of(copy.deepcopy(model).double(), loss_fn, *to_double(inputs))
    assert len(actual) == len(eager) == len(ref) > 1
    assert all(torch.isfinite(g).all() for g in actual)
    assert_equivalent(actual, eager, ref, context)
    new = [g for g in effc.explain().graphs if g.label not in before]
    labels = [g.label for g in new]
    print(context, "graphs:", labels, "externs:", externs_of(effc.explain()), "fallbacks:", fell_back(effc.explain()))
    assert any(lbl.endswith(".forward") for lbl in labels), labels
    assert any(lbl.endswith(".backward") for lbl in labels), labels


def test_training_mlp_gradients_match_eager():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 5))
    x, y = torch.randn(6, 12), torch.randn(6, 5)
    check_gradients(model, lambda m, x, y: ((m(x) - y) ** 2).mean(), (x, y), "mlp gradients")


def test_training_gpt2_gradients_match_eager():
    model = gpt2(dropout=0.0).train()
    x = ids(2, 12, seed=4)
    check_gradients(model, lambda m, x: m(input_ids=x, labels=x, use_cache=False).loss, (x,),
                    "gpt2 gradients")
