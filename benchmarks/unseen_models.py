"""Try effc as a new user would: torch.compile(model, backend="effc") on models nobody tuned for.

For each model (torchvision's, where installed, and Hugging Face transformers built from
config with random weights): compile, compare with eager against the float64 reference under
the tolerance policy, and record the extern ops and fallbacks effc reported.

    python benchmarks/unseen_models.py [--device cuda] [--out benchmarks/results/unseen-DATE.json]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import time
import traceback

import torch

import effc
from effc.tolerance import compare


def _tv(name: str, **kw):
    def make():
        import torchvision.models as tvm
        return getattr(tvm, name)(weights=None, **kw)
    return make


def _hf(cls_name: str, cfg_name: str, **cfg):
    def make():
        import transformers
        return getattr(transformers, cls_name)(getattr(transformers, cfg_name)(**cfg))
    return make


IMAGE = lambda n=2, s=64: torch.randn(n, 3, s, s)  # noqa: E731
TOKENS = lambda n=2, s=16, v=1000: torch.randint(0, v, (n, s))  # noqa: E731
MODELS = {
    "tv.resnet18": (_tv("resnet18"), IMAGE),
    "tv.mobilenet_v3_small": (_tv("mobilenet_v3_small"), IMAGE),
    "tv.efficientnet_b0": (_tv("efficientnet_b0"), IMAGE),
    "tv.convnext_tiny": (_tv("convnext_tiny"), IMAGE),
    "tv.densenet121": (_tv("densenet121"), IMAGE),
    "tv.squeezenet1_1": (_tv("squeezenet1_1"), IMAGE),
    "tv.shufflenet_v2_x0_5": (_tv("shufflenet_v2_x0_5"), IMAGE),
    "tv.regnet_y_400mf": (_tv("regnet_y_400mf"), IMAGE),
    "tv.vit_b_16": (_tv("vit_b_16", image_size=32), lambda: torch.randn(2, 3, 32, 32)),
    "tv.swin_t": (_tv("swin_t"), IMAGE),
    "hf.t5": (_hf("T5Model", "T5Config", d_model=64, d_ff=128, num_layers=2, num_heads=4, vocab_size=1000,
                  d_kv=16), "t5"),
    "hf.llama": (_hf("LlamaForCausalLM", "LlamaConfig", hidden_size=64, intermediate_size=128,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=1000), TOKENS),
    "hf.distilbert": (_hf("DistilBertModel", "DistilBertConfig", dim=64, hidden_dim=128, n_layers=2, n_heads=4,
                          vocab_size=1000), TOKENS),
    "hf.vit": (_hf("ViTModel", "ViTConfig", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, image_size=32, patch_size=8), lambda: torch.randn(2, 3, 32, 32)),
    "hf.whisper": (_hf("WhisperModel", "WhisperConfig", d_model=64, encoder_layers=2, decoder_layers=2,
                               encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                               decoder_ffn_dim=128, vocab_size=1000, num_mel_bins=16, max_source_positions=32,
                               pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=0), "whisper"),
}


def _inputs(spec, model):
    if spec == "t5":
        return (TOKENS(),), {"decoder_input_ids": TOKENS(s=8)}
    if spec == "whisper":
        return (torch.randn(2, 16, 64),), {"decoder_input_ids": TOKENS(s=8)}
    return (spec(),), {}


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, (tuple, list)):
        return _first_tensor(out[0])
    raise TypeError(type(out))


def run_one(name: str, device: str) -> dict:
    make, spec = MODELS[name]
    torch._dynamo.reset()
    torch.manual_seed(0)
    try:
        model = make().eval().to(device)
    except Exception as e:  # the library or model is not installed here
        return {"model": name, "status": "unavailable", "error": f"{type(e).__name__}: {e}"[:300]}
    args, kwargs = _inputs(spec, model)
    args = tuple(a.to(device) for a in args)
    kwargs = {k: v.to(device) for k, v in kwargs.items()}
    backend = effc.backend()
    rec: dict = {"model": name}
    try:
        with torch.no_grad():
            t0 = time.perf_counter()
            out = _first_tensor(torch.compile(model, backend=backend)(*args, **kwargs))
            rec["compile_and_first_call_s"] = round(time.perf_counter() - t0, 2)
            eager = _first_tensor(model(*args, **kwargs))
            m64 = copy.deepcopy(model).double()
            ref = _first_tensor(m64(*[a.double() if a.is_floating_point() else a for a in args],
                                    **{k: v.double() if v.is_floating_point() else v for k, v in kwargs.items()}))
        (c,) = compare([out], [eager], [ref])
        ex = backend.explain()
        rec.update(status="match" if c.ok else "MISMATCH", comparison=str(c), graphs=len(ex.graphs),
                   ir_nodes=sum(g.nodes_out for g in ex.graphs),
                   externs={k: v for g in ex.graphs for k, v in g.externs.items()},
                   fallbacks=[f for f in ex.fallbacks if f["kind"] == "graph"])
    except Exception as e:
        rec.update(status="ERROR", error="".join(traceback.format_exception_only(type(e), e))[-600:])
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    names = a.models.split(",") if a.models else list(MODELS)
    results = []
    for n in names:
        r = run_one(n, a.device)
        print(f"{n:28s} {r['status']:11s} externs={r.get('externs', {})} {r.get('error', '')[:200]}", flush=True)
        results.append(r)
    meta = {"date": datetime.date.today().isoformat(), "device": a.device,
            "gpu": torch.cuda.get_device_name() if a.device == "cuda" else platform.processor() or platform.machine(),
            "torch": torch.__version__, "effc": effc.__version__}
    ok = sum(r["status"] == "match" for r in results)
    tried = sum(r["status"] != "unavailable" for r in results)
    print(f"{ok}/{tried} models match eager within the tolerance policy")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
