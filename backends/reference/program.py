"""The reference backend: runs effc IR node by node with torch ops.

It is the oracle every other backend is compared with, the fallback for nodes no code
generator supports, and (with ``upcast=True``) the float64 reference of the tolerance policy:
every floating-point tensor, constant and dtype attribute is widened to float64, so the graph's
arithmetic is evaluated as exactly as torch can.
"""

from __future__ import annotations

from typing import Any, Sequence

import sympy
import torch

from effc.backends.signature import bind_inputs
from effc.backends.symeval import SymbolicAttrs
from effc.errors import CompileError
from effc.ir import DType, Graph, Node, Op, Value
from effc.ir.printer import format_attr

from .kernels import KERNELS


def _widen(v: Any) -> Any:
    if isinstance(v, DType):
        return DType.F64 if v.is_float else v
    if isinstance(v, tuple):
        return tuple(_widen(x) for x in v)
    if isinstance(v, dict):
        return {k: _widen(x) for k, x in v.items()}
    return v


class _Step:
    __slots__ = ("node", "kernel", "body", "args", "attrs", "outs", "frees", "is_extern")

    def __init__(self, node: Node, args: list[int], outs: list[int], upcast: bool) -> None:
        self.node = node
        # a kernel node runs its body as a program of its own; a patched one, tile by tile
        self.body: Any = None
        if node.op is Op.KERNEL and node.attrs["kind"] == "patched":
            from .patched import PatchedRunner
            self.body = PatchedRunner(node, upcast=upcast)
        elif node.op is Op.KERNEL:
            self.body = ReferenceProgram(node.attrs["body"], upcast=upcast)
        self.kernel = KERNELS.get(node.op)
        self.args = args
        self.attrs = {k: SymbolicAttrs(_widen(v) if upcast else v) for k, v in node.attrs.items()
                      if k != "body"}
        self.outs = outs
        self.frees: list[int] = []
        self.is_extern = node.op is Op.EXTERN  # an extern's torch op may return another dtype

    def execute(self, args: list[Any], env: dict[sympy.Symbol, int]) -> Any:
        """The step's result: a tensor or a sequence of tensors."""
        if self.body is not None:
            return self.body.run(args, env)
        return self.kernel(args, {k: a(env) for k, a in self.attrs.items()})


class ReferenceProgram:
    """A callable running ``graph``: ``program(*tensors) -> list of output tensors``."""

    def __init__(self, graph: Graph, *, upcast: bool = False) -> None:
        self.graph = graph
        self.upcast = upcast
        slot: dict[Value, int] = {}
        for v in graph.inputs:
            slot[v] = len(slot)
        self.steps: list[_Step] = []
        self.constant_slots: dict[int, str] = {}
        for node in graph.nodes:
            if node.op is Op.CONSTANT:
                slot[node.output] = len(slot)
                self.constant_slots[slot[node.output]] = node.attrs["name"]
                continue
            args = [slot[v] for v in node.inputs]
            outs = []
            for v in node.outputs:
                slot[v] = len(slot)
                outs.append(slot[v])
            self.steps.append(_Step(node, args, outs, upcast))
        self.output_slots = [slot[v] for v in graph.outputs]
        self.nslots = len(slot)
        self._free_dead(slot)
        self._constants: dict[torch.device, dict[int, torch.Tensor]] = {}

    def _free_dead(self, slot: dict[Value, int]) -> None:
        last: dict[int, int] = {}
        for i, step in enumerate(self.steps):
            for a in step.args:
                last[a] = i
        keep = set(self.output_slots) | set(self.constant_slots)
        for s, i in last.items():
            if s not in keep:
                self.steps[i].frees.append(s)

    def _constants_on(self, device: torch.device) -> dict[int, torch.Tensor]:
        consts = self._constants.get(device)
        if consts is None:
            consts = {}
            for s, name in self.constant_slots.items():
                t = self.graph.constants[name].to(device)
                consts[s] = t.double() if self.upcast and t.is_floating_point() else t
            self._constants[device] = consts
        return consts

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        env = bind_inputs(self.graph, inputs)
        return self.run(inputs, env)

    def run(self, inputs: Sequence[torch.Tensor], env: dict[sympy.Symbol, int]) -> list[torch.Tensor]:
        device = inputs[0].device if inputs else torch.device("cpu")
        vals: list[Any] = [None] * self.nslots
        for i, t in enumerate(inputs):
            vals[i] = t.double() if self.upcast and t.is_floating_point() else t
        for s, t in self._constants_on(device).items():
            vals[s] = t
        for step in self.steps:
            try:
                out = step.execute([vals[a] for a in step.args], env)
            except Exception as e:  # name the node: internal errors must say where they happened
                raise CompileError(f"reference backend failed at {_describe(step, env)}: {e}") from e
            if isinstance(out, torch.Tensor):
                out = (out,)
            for s, t, v in zip(step.outs, out, step.node.outputs):
                if step.is_extern and t.dtype != v.type.dtype.to_torch() and not self.upcast:
                    raise CompileError(f"{_describe(step, env)} returned {t.dtype}; "
                                       f"the IR records {v.type.dtype}")
                if t.device != device:
                    t = t.to(device)
                if self.upcast and t.is_floating_point() and t.dtype != torch.float64:
                    t = t.double()
                vals[s] = t
            for s in step.frees:
                vals[s] = None
        return [vals[s] for s in self.output_slots]


def _describe(step: _Step, env: dict[sympy.Symbol, int]) -> str:
    node = step.node
    attrs = {k: a(env) for k, a in step.attrs.items()}
    shown = ", ".join(f"{k}={format_attr(v) if not isinstance(v, (list,)) else v}" for k, v in attrs.items())
    types = ", ".join(str(v.type) for v in node.outputs)
    return f"{node.op}({len(node.inputs)} inputs) {{{shown}}} : {types}"
