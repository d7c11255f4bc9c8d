"""The torch.compile backend: ``torch.compile(model, backend="effc", options={...})``.

Registered through the ``torch_dynamo_backends`` entry point, so no import of effc is needed
first. Each Dynamo graph goes through AOT autograd with core-ATen decompositions:

* inference (grad disabled, or no input requires grad): one graph, in which the tensors
  Dynamo lifted from module parameters and buffers become graph constants (so batch norm can
  fold into convolutions). [Note: frozen parameters] Like Inductor's freezing, this assumes
  weights are not changed in place after compilation; reassigning a parameter re-traces.
* training: forward and backward graphs both compile through effc with parameters as inputs
  (``options={"training": "eager"}`` runs them with PyTorch instead, and logs why). AOT
  autograd owns the autograd logic, so gradients are PyTorch's.

A graph effc cannot express runs in PyTorch, with the reason logged and recorded.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import deque
from typing import Any, Callable, Sequence

import torch

from effc.debug import log
from effc.report import Explain, GraphReport
from effc.frontends.fx import FallBack, import_fx
from effc.options import Options
from effc.program import compile_imported

# Ops kept whole instead of decomposed: effc has them as single ops that fuse better. The CPU
# flash-attention decomposition is also wrong for training (it returns the probabilities where
# the log-sum-exp belongs, which the backward then reads), so it must not be used at all.
_KEEP = ("silu", "silu_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_", "rms_norm",
         "_fused_rms_norm", "_scaled_dot_product_flash_attention_for_cpu")


def decompositions() -> dict:
    from torch._decomp import core_aten_decompositions
    table = dict(core_aten_decompositions())
    keep = {getattr(torch.ops.aten, n, None) for n in _KEEP}
    return {k: v for k, v in table.items()
            if k not in keep and getattr(k, "overloadpacket", None) not in keep}


def _is_param_source(node: torch.fx.Node) -> str | None:
    """The parameter or buffer name a Dynamo placeholder was lifted from, if any."""
    source = getattr(node.meta.get("grapharg"), "source", None)
    if source is None:
        return None
    name = getattr(source, "name", "")
    name = name() if callable(name) else str(name)  # a method before torch 2.12, then a property
    chain, s = [], source
    while s is not None:
        chain.append(type(s).__name__)
        s = getattr(s, "base", None)
    if "_parameters[" in name or "_buffers[" in name or any("ParamBuffer" in c for c in chain):
        return name
    return None


def _param_label(source: str) -> str:
    # L['self']._modules['h']._modules['0']._parameters['weight'] -> h.0.weight
    parts = re.findall(r"\[['\"]([^'\"]+)['\"]\]", source)
    return ".".join(parts[1:]) if parts and parts[0] in ("self", "fn", "mod", "model") else ".".join(parts) or "param"


_graph_ids = itertools.count(1)  # labels graphs uniquely within a process, for reports and dumps


class EffcBackend:
    """A Dynamo backend holding one set of options and the reports of what it compiled."""

    def __init__(self, options: Options | None = None, max_reports: int = 64) -> None:
        self.options = options or Options()
        self.reports: deque[GraphReport] = deque(maxlen=max_reports)

    def explain(self) -> Explain:
        return Explain(list(self.reports))

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        gid = next(_graph_ids)
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        params = {i: (_param_label(src), example_inputs[i]) for i, n in enumerate(placeholders)
                  if i < len(example_inputs) and (src := _is_param_source(n))
                  and isinstance(example_inputs[i], torch.Tensor)}
        training = torch.is_grad_enabled() and any(
            isinstance(t, torch.Tensor) and t.requires_grad for t in example_inputs)
        if training and self.options.training == "eager":
            reason = "training graph (inputs require grad) and options training='eager'"
            log.info("graph %d runs in PyTorch: %s", gid, reason)
            self.reports.append(GraphReport(f"g{gid}", "eager", fallback=reason))
            return gm.forward

        def compile_fx(label: str, frozen: bool) -> Callable:
            def fn(fgm: torch.fx.GraphModule, fake_inputs: Sequence[Any]) -> Callable:
                consts: dict[int, torch.Tensor] = {}
                if frozen and _same_positions(fake_inputs, example_inputs):
                    consts = {i: t for i, (_, t) in params.items()}
                    for i, n in enumerate(p for p in fgm.graph.nodes if p.op == "placeholder"):
                        if i in params:
                            n.meta["effc_name"] = params[i][0]
                return make_boxed_func(self._compile(fgm, consts, f"g{gid}.{label}"))
            return fn

        return aot_autograd(fw_compiler=compile_fx("forward", False),
                            bw_compiler=compile_fx("backward", False),
                            inference_compiler=compile_fx("inference", True),
                            decompositions=decompositions())(gm, example_inputs)

    def _compile(self, fgm: torch.fx.GraphModule, consts: dict[int, torch.Tensor], label: str) -> Callable:
        # AOT calls compilers inside its fake-tensor mode; effc computes with real tensors
        # (constant folding, weight folding), so step out of it.
        from torch._subclasses.fake_tensor import unset_fake_temporarily
        with unset_fake_temporarily():
            return self._compile_real(fgm, {i: t.detach() for i, t in consts.items()}, label)

    def _compile_real(self, fgm: torch.fx.GraphModule, consts: dict[int, torch.Tensor], label: str) -> Callable:
        t0 = time.perf_counter()
        try:
            imported = import_fx(fgm, consts)
        except FallBack as e:
            log.warning("graph %s runs in PyTorch: %s", label, e)
            self.reports.append(GraphReport(label, "eager", fallback=str(e),
                                            compile_seconds=time.perf_counter() - t0))
            return fgm.forward
        compiled = compile_imported(imported, self.options, label)
        compiled.report.compile_seconds = time.perf_counter() - t0
        self.reports.append(compiled.report)
        if self.options.explain:
            log.info("%s", compiled.report and Explain([compiled.report]))
        if compiled.report.externs:
            log.info("graph %s: %d extern ops (%s)", label, sum(compiled.report.externs.values()),
                     ", ".join(sorted(compiled.report.externs)))
        return compiled


def _same_positions(fake_inputs: Sequence[Any], real: Sequence[Any]) -> bool:
    """AOT passes the Dynamo arguments through unchanged (no dedup, no synthetic bases)."""
    if len(fake_inputs) != len(real):
        return False
    for f, r in zip(fake_inputs, real):
        if isinstance(r, torch.Tensor) != isinstance(f, torch.Tensor):
            return False
        if isinstance(r, torch.Tensor) and (r.dtype != f.dtype or r.dim() != f.dim()):
            return False
    return True




def effc_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], options: dict | None = None,
                 mode: str | None = None) -> Callable:
    """Entry point for ``torch.compile(backend="effc")``; options come from ``options={...}``."""
    backend = EffcBackend(Options.from_mapping(options))
    fn = backend(gm, example_inputs)
    _recent_backends.append(backend)
    return fn


_recent_backends: deque[EffcBackend] = deque(maxlen=64)


def recent_explain() -> Explain:
    """Reports of the graphs ``torch.compile(backend="effc")`` compiled most recently in this
    process (up to 64 backends' worth), for ``effc.explain()``."""
    return Explain([r for b in _recent_backends for r in b.reports])
