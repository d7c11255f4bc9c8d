"""Real model graphs run inside their memory plan: fused GPT-2, BERT and CNN graphs executed
with every intermediate at its planned arena offset (``ArenaProgram``) give exactly what the
reference backend gives; with dynamic shapes, at two sizes from one symbolic plan."""

from __future__ import annotations

import pytest
import torch

import effc
from effc.backends.reference import ReferenceProgram
from effc.backends.reference.arena import ArenaProgram
from effc.ir import Op

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow


def _gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=500, n_positions=64)
    return transformers.GPT2Model(cfg).eval()


def _bert() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                  intermediate_size=128, vocab_size=500, max_position_embeddings=64)
    return transformers.BertModel(cfg).eval()


def _mobilenet() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.MobileNetV2Config(num_channels=3, image_size=32, depth_multiplier=0.35)
    return transformers.MobileNetV2Model(cfg).eval()


def _planned(compiled, monkeypatch, *args) -> int:
    """Call ``compiled``; every top-level graph it ran is run again inside its arena, on the
    same inputs, and must give exactly the reference backend's outputs. Returns how many."""
    graphs = {id(g.graph): g for g in compiled.explain().graphs if g.graph is not None}
    calls = []
    run = ReferenceProgram.run

    def spy(self, inputs, env):
        out = run(self, inputs, env)
        if id(self.graph) in graphs:
            calls.append((graphs[id(self.graph)], list(inputs), dict(env), out))
        return out

    with monkeypatch.context() as m:
        m.setattr(ReferenceProgram, "run", spy)
        compiled(*args)
    for g, inputs, env, want in calls:
        assert g.graph.count(Op.KERNEL) > 0
        plan = next(p.data["plan"] for p in g.passes if p.name == "plan_memory")
        got = ArenaProgram(g.graph, plan).run(inputs, env)
        for a, b in zip(want, got):
            assert torch.equal(a, b), g.label
    return len(calls)


@pytest.mark.parametrize("build,vocab", [(_gpt2, 500), (_bert, 500)], ids=["gpt2", "bert"])
def test_transformer_graphs_run_in_their_symbolic_arena(build, vocab, monkeypatch) -> None:
    model = build()
    ids = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))
    compiled = effc.compile(model, (ids,), dynamic=True)
    g = compiled.explain().graphs[0]
    assert g.graph.symbols(), "dynamic=True should leave the sizes symbolic"
    for length in (16, 37):
        x = torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(length))
        assert _planned(compiled, monkeypatch, x) >= 1


def test_cnn_graph_runs_in_its_arena(monkeypatch) -> None:
    model = _mobilenet()
    x = torch.randn(1, 3, 32, 32)
    compiled = effc.compile(model, (x,))
    assert _planned(compiled, monkeypatch, x) == 1
    g = compiled.explain().graphs[0]
    assert g.memory["arena"] < g.memory["naive"]
