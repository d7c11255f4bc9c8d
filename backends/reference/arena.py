"""Running a graph inside its memory plan: every arena value is a view into one uint8 tensor.

``ArenaProgram(graph, plan)`` runs node by node like ``ReferenceProgram`` (kernel nodes run
their bodies as reference programs), but each intermediate is written into its planned slot,
``arena[off:off + nbytes].view(dtype).view(shape)``, with ``slot.copy_(result)``; views of
arena values are taken at their storage's offset without running anything. A plan that put
two live buffers on the same bytes corrupts the outputs, so comparing with
``ReferenceProgram`` checks a plan end to end. Outputs are cloned out of the arena.
"""

from __future__ import annotations

from typing import Any, Sequence

import sympy
import torch

from effc.backends.signature import bind_inputs
from effc.backends.symeval import SymbolicAttrs
from effc.errors import CompileError
from effc.ir import Graph, Op, Value
from effc.passes.plan_memory import MemoryPlan

from .program import _describe, _Step


class _Slot:
    """Where one arena value lives: its buffer, its dtype and its (possibly symbolic) shape."""

    __slots__ = ("buffer", "dtype", "itemsize", "shape")

    def __init__(self, buffer: int, value: Value) -> None:
        self.buffer = buffer
        self.dtype = value.type.dtype.to_torch()
        self.itemsize = value.type.dtype.itemsize
        self.shape = SymbolicAttrs(value.type.shape)

    def view(self, arena: torch.Tensor, offsets: Sequence[int], env: dict) -> torch.Tensor:
        shape = self.shape(env)
        nbytes = self.itemsize
        for d in shape:
            nbytes *= d
        off = offsets[self.buffer]
        return arena[off:off + nbytes].view(self.dtype).view(shape)


class ArenaProgram:
    """A callable running ``graph`` in the arena ``plan`` lays out: ``program(*tensors)``."""

    def __init__(self, graph: Graph, plan: MemoryPlan) -> None:
        if plan.graph is not graph:
            raise ValueError("the memory plan was made for another graph")
        self.graph = graph
        self.plan = plan
        slot: dict[Value, int] = {v: i for i, v in enumerate(graph.inputs)}
        self.constant_slots: dict[int, str] = {}
        self.steps: list[_Step] = []
        self.views: list[bool] = []           # per step: only views of arena values, run nothing
        self.arena_slots: dict[int, _Slot] = {}
        for node in graph.nodes:
            if node.op is Op.CONSTANT:
                slot[node.output] = len(slot)
                self.constant_slots[slot[node.output]] = node.attrs["name"]
                continue
            outs = []
            for v in node.outputs:
                slot[v] = len(slot)
                outs.append(slot[v])
                b = plan.buffer_of(v)
                if b is not None:
                    self.arena_slots[slot[v]] = _Slot(b.index, v)
            self.steps.append(_Step(node, [slot[v] for v in node.inputs], outs, upcast=False))
            self.views.append(any(v in b.views for v in node.outputs
                                  for b in [plan.buffer_of(v)] if b is not None))
        self.output_slots = [slot[v] for v in graph.outputs]
        self.nslots = len(slot)

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        env = bind_inputs(self.graph, inputs)
        return self.run(inputs, env)

    def run(self, inputs: Sequence[torch.Tensor], env: dict[sympy.Symbol, int]) -> list[torch.Tensor]:
        device = inputs[0].device if inputs else torch.device("cpu")
        layout = self.plan.evaluate(env)      # every offset, once per call
        offsets = layout["offsets"]
        arena = torch.empty(layout["arena"], dtype=torch.uint8, device=device)
        vals: list[Any] = [None] * self.nslots
        vals[:len(inputs)] = list(inputs)
        for s, name in self.constant_slots.items():
            vals[s] = self.graph.constants[name].to(device)
        for step, is_view in zip(self.steps, self.views):
            if is_view:   # the output shares its input's bytes: nothing runs
                for s in step.outs:
                    vals[s] = self.arena_slots[s].view(arena, offsets, env)
                continue
            try:
                out = step.execute([vals[a] for a in step.args], env)
            except Exception as e:
                raise CompileError(f"arena backend failed at {_describe(step, env)}: {e}") from e
            if isinstance(out, torch.Tensor):
                out = (out,)
            for s, t, v in zip(step.outs, out, step.node.outputs):
                if step.is_extern and t.dtype != v.type.dtype.to_torch():
                    raise CompileError(f"{_describe(step, env)} returned {t.dtype}; "
                                       f"the IR records {v.type.dtype}")
                where = self.arena_slots.get(s)
                if where is None:          # a view of an input or constant
                    vals[s] = t
                    continue
                dst = where.view(arena, offsets, env)
                if dst.shape != t.shape:
                    raise CompileError(f"{_describe(step, env)} returned shape "
                                       f"{list(t.shape)}; its slot has {list(dst.shape)}")
                dst.copy_(t)
                vals[s] = dst
        return [vals[s].clone() for s in self.output_slots]
