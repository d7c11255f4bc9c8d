"""The Triton backend's program: generated kernels launched in order over one arena tensor on
the inputs' device.

``TritonProgram(graph, plan)`` lowers each kernel node (ir/kernel_lower.py), generates its
Triton module (codegen/triton.py; matmul and convolution templates through it), picks its
launch config with the cost model (or measures the best few, with ``autotune``), and loads it
(build.py). Kernels no generator covers (op and extern kernels, patched stages, anything a
generator refuses, with the reason in ``fallbacks``) run on the reference backend inside the
same arena, as the C program's callback does. ``run(inputs, env)`` matches
``ReferenceProgram.run``.

[Note: Triton launch list]
Everything that does not change between calls is done once per distinct set of sizes (and
device) and kept in a ``_Bound``: the arena, every arena value's view, the constants on the
device, and the launch list: per step the kernel's ``entry`` with the slots of its inputs and
outputs and its ``sizes`` list, or the reference step it falls back to. A call then copies
the slot list, drops the inputs into it and runs the list: one ``entry`` call (the grid, one
Triton launch) per kernel. Outputs are cloned out of the arena (the arena is reused by the
next call). Kernels are generated under the name of their kind alone, so kernels with the same body
(every layer of a transformer has the same dozen) produce the same source and share one
loaded module: Triton compiles each distinct body once per process (its own disk cache
then serves later processes). Measured on an H200: compiling GPT-2 small with a module
per kernel took over 75 s; tiny GPT-2's 42 kernels are 11 distinct bodies. On CUDA, with
static shapes and ``cuda_graphs``, the list is captured once as a
CUDA graph and a call is: copy the inputs in, replay, clone the outputs.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import sympy
import torch

from effc.backends.reference.arena import ArenaProgram
from effc.backends.reference.program import _describe
from effc.codegen.c_abi import symbol_order
from effc.codegen.triton import generate
from effc.codegen.triton_abi import py_ident, size_symbols
from effc.errors import CompileError
from effc.ir import Graph, Op
from effc.ir.kernel import LoweringError
from effc.ir.kernel_lower import lower
from effc.options import Options

from .autotune import pick_config
from .build import load


def shared_name(kind: str) -> str:
    """The name a generated module is given: its kernel kind, no more ([Note: Triton launch
    list]), so a profile still tells matmuls from reductions."""
    return py_ident(kind, "kernel_")


@dataclass(frozen=True)
class _Kernel:
    name: str
    entry: Callable[..., None]
    symbols: tuple[sympy.Symbol, ...]   # its ``sizes``, in order
    source: str


class _Bound:
    """The program at one set of sizes on one device; see [Note: Triton launch list]."""

    def __init__(self, vals: list[Any], launches: list[tuple], outputs: list[int], ninputs: int) -> None:
        self.vals, self.launches, self.outputs, self.ninputs = vals, launches, outputs, ninputs
        self.graph: Any = None                 # torch.cuda.CUDAGraph once captured
        self.static_inputs: list[torch.Tensor] = []
        self.graph_vals: list[Any] = []

    def execute(self, vals: list[Any]) -> None:
        for entry, ins, outs, sizes, fallback in self.launches:
            if fallback is None:
                entry([vals[i] for i in ins], [vals[o] for o in outs], sizes)
            else:
                fallback.run(vals)

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if self.graph is not None:
            for s, t in zip(self.static_inputs, inputs):
                s.copy_(t)
            self.graph.replay()
            return [self.graph_vals[s].clone() for s in self.outputs]
        vals = list(self.vals)
        vals[:self.ninputs] = inputs
        self.execute(vals)
        return [vals[s].clone() for s in self.outputs]


class TritonProgram(ArenaProgram):
    """``ArenaProgram``'s slots and arena, with the steps run by generated Triton kernels."""

    def __init__(self, graph: Graph, plan: Any, name: str = "model", options: Options | None = None,
                 device: torch.device | None = None) -> None:
        super().__init__(graph, plan)
        from effc.costmodel.triton_configs import gpu_target
        self.options = options or Options()
        self.device = device
        self.symbols = symbol_order(set(graph.symbols()) | set(plan.symbols))
        # kernels run through the reference backend (name: why), for the explain record
        self.fallbacks: dict[str, str] = {}
        self.kernels: dict[int, _Kernel] = {}      # step index -> its generated kernel
        self.configs: dict[str, Any] = {}          # kernel name -> the launch config chosen
        target = gpu_target(device)
        hint = self.options.hint_env(self.symbols)
        for k, step in enumerate(self.steps):
            node = step.node
            if node.op is not Op.KERNEL or node.attrs["kind"] == "view":
                if node.op not in (Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE, Op.KERNEL):
                    self.fallbacks[f"%{graph.nodes.index(node)} {node.op}"] = "not in a kernel (fusion disabled?)"
                continue
            try:
                kernel = lower(node)
                config = pick_config(kernel, hint, target, device, self.options.autotune)
                # one neutral name: kernels that differ only by name (a transformer's layers)
                # share one module, so Triton compiles each distinct body once
                src = generate(kernel, shared_name(node.attrs["kind"]), config)
                loaded = load(src)
            except LoweringError as e:
                ops = ", ".join(n.op.value for n in node.attrs["body"].nodes)
                self.fallbacks[f"{node.attrs['name']} {node.attrs['kind']}[{ops}]"] = str(e)
                continue
            self.kernels[k] = _Kernel(kernel.name, loaded.entry, tuple(size_symbols(kernel)), src.source)
            self.configs[kernel.name] = config
        self._bound: dict[tuple, _Bound] = {}
        self._constants: dict[torch.device, dict[int, torch.Tensor]] = {}
        self._lock = threading.Lock()
        self._to_gpu = os.environ.get("TRITON_INTERPRET") != "1" and torch.cuda.is_available()

    @property
    def kernel_sources(self) -> list[str]:
        return [k.source for k in self.kernels.values()]

    @property
    def named_sources(self) -> dict[str, str]:
        """Each generated module by a file-safe name of its kernel (the artifact's sources/)."""
        return {py_ident(k.name, "kernel_"): k.source for k in self.kernels.values()}

    def run(self, inputs: Sequence[torch.Tensor], env: dict[sympy.Symbol, int]) -> list[torch.Tensor]:
        inputs = [t if t.is_contiguous() else t.contiguous() for t in inputs]
        for t, v in zip(inputs, self.graph.inputs):
            if t.dtype != v.type.dtype.to_torch():
                raise CompileError(f"input {v.name} is {t.dtype}; the program was compiled for {v.type.dtype}")
        device = inputs[0].device if inputs else (self.device or torch.device("cpu"))
        if device.type == "cpu" and self._to_gpu:   # CPU inputs (an ONNX model's) run on the GPU
            return [t.cpu() for t in self.run([t.cuda() for t in inputs], env)]
        key = (device, tuple(int(env[s]) for s in self.symbols))
        with self._lock:   # one arena per set of sizes: calls from several threads take turns
            bound = self._bound.get(key)
            if bound is None:
                bound = self._bind(device, env)
                if len(self._bound) > 64:
                    self._bound.clear()
                self._bound[key] = bound
                if self._graphs(device):
                    self._capture(bound, inputs)
            return bound.run(inputs)

    def _graphs(self, device: torch.device) -> bool:
        return device.type == "cuda" and self.options.cuda_graphs and not self.symbols

    def _constants_on(self, device: torch.device) -> dict[int, torch.Tensor]:
        if device not in self._constants:
            self._constants[device] = {s: self.graph.constants[n].to(device).contiguous()
                                       for s, n in self.constant_slots.items()}
        return self._constants[device]

    def _bind(self, device: torch.device, env: dict[sympy.Symbol, int]) -> _Bound:
        layout = self.plan.evaluate(env)
        offsets = layout["offsets"]
        arena = torch.empty(max(64, layout["arena"]), dtype=torch.uint8, device=device)
        vals: list[Any] = [None] * self.nslots
        for s, t in self._constants_on(device).items():
            vals[s] = t
        for s, slot in self.arena_slots.items():
            vals[s] = slot.view(arena, offsets, env)
        launches: list[tuple] = []
        for k, step in enumerate(self.steps):
            if self.views[k]:
                continue    # its output is a view of the arena, bound above
            kern = self.kernels.get(k)
            if kern is not None and all(s in self.arena_slots for s in step.outs):
                try:
                    sizes = [int(env[s]) for s in kern.symbols]
                except KeyError as e:
                    raise CompileError(f"kernel {kern.name} reads size {e} that the inputs do not bind") from None
                launches.append((kern.entry, list(step.args), list(step.outs), sizes, None))
            else:
                launches.append((None, [], [], [], _Fallback(step, env, set(self.arena_slots))))
        return _Bound(vals, launches, list(self.output_slots), len(self.graph.inputs))

    def _capture(self, bound: _Bound, inputs: Sequence[torch.Tensor]) -> None:
        """Record ``bound``'s launch list as a CUDA graph (after one warm-up run, which
        compiles every kernel); on any failure the program keeps launching eagerly."""
        # the real inputs, not empty tensors: an index read from garbage (token ids of an
        # embedding) would fault the warm-up, and a device fault is fatal to the process
        static = [t.clone() for t in inputs]
        vals = list(bound.vals)
        vals[:bound.ninputs] = static
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                bound.execute(vals)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                bound.execute(vals)
        except Exception:  # noqa: BLE001 - a graph is an optimisation; eager launches stay correct
            torch.cuda.synchronize()
            return
        bound.graph, bound.static_inputs, bound.graph_vals = graph, static, vals


class _Fallback:
    """A step run on the reference backend, its results written into their arena slots (or,
    for a view of an input or constant, kept as the step returns them)."""

    def __init__(self, step: Any, env: dict[sympy.Symbol, int], arena: set[int]) -> None:
        self.step, self.env = step, dict(env)
        self.inplace = [s in arena for s in step.outs]

    def run(self, vals: list[Any]) -> None:
        step = self.step
        try:
            out = step.execute([vals[a] for a in step.args], self.env)
        except Exception as e:
            raise CompileError(f"Triton backend fallback failed at {_describe(step, self.env)}: {e}") from e
        for s, t, into in zip(step.outs, (out,) if isinstance(out, torch.Tensor) else out, self.inplace):
            if into:
                if vals[s].shape != t.shape:
                    raise CompileError(f"{_describe(step, self.env)} returned shape {list(t.shape)}; "
                                       f"its slot has {list(vals[s].shape)}")
                vals[s].copy_(t)
            else:
                vals[s] = t
