"""Fitting a graph into ``options.memory_budget``: patch-based scheduling of its first CNN stage.

The plan_memory pass calls ``fit`` when the planned arena exceeds the budget. Patching works on
the unfused graph (the receptive-field math reads convolutions and pools, not kernels), so the
kernels are inlined, ``schedule_patches.schedule`` picks the stage and tile grid (the fewest
recomputed FLOPs among schedules whose planned peak fits; each candidate priced by this
planner), and the result is fused again around the new ``patched`` kernel. If fusing moved the
peak back over the budget (it changes which values exist), the unfused schedule is kept.

A patched kernel needs its tile working set on top of the arena (``schedule_patches.
scratch_bytes``); ``total_bytes`` counts it, and it is what the budget is compared with.
"""

from __future__ import annotations

from typing import Any, Mapping

from effc.errors import MemoryBudgetError
from effc.ir import Graph, Op
from effc.ir.kernel_node import inline_kernels
from effc.options import Options

from . import fuse
from .manager import PassResult
from .schedule_patches import format_bytes, schedule, scratch_bytes


def scratch(graph: Graph, env: Mapping[Any, int]) -> int:
    """Bytes the patched kernels need beside the arena (they run one at a time)."""
    return max((scratch_bytes(n, env) for n in graph.nodes
                if n.op is Op.KERNEL and n.attrs["kind"] == "patched"), default=0)


def total_bytes(graph: Graph, env: Mapping[Any, int]) -> int:
    from .plan_memory import plan
    return plan(graph, env).evaluate(env)["arena"] + scratch(graph, env)


def fit(graph: Graph, options: Options, planned: int) -> PassResult:
    """``graph`` rescheduled to peak within the budget, or MemoryBudgetError."""
    from .plan_memory import live_peak
    budget = options.memory_budget
    assert budget is not None
    if graph.symbols():
        raise MemoryBudgetError(
            f"the memory plan needs {format_bytes(planned)} at the size hints, over the budget of "
            f"{format_bytes(budget)}, and patch-based scheduling needs static sizes (this graph "
            f"has {', '.join(sorted(map(str, graph.symbols())))}); compile with static shapes")
    env: dict[Any, int] = {}
    # only convolution and pointwise kernels can join a stage; the rest (a classifier whose
    # weight is read transposed, say) stay fused, as they will be in the end
    flat = inline_kernels(graph, lambda k: k.attrs["kind"] in ("conv", "pointwise"))
    # candidates are priced by the liveness bound (cheap); the chosen one is planned in full
    patched, notes, rejected = schedule(flat, budget, env, lambda g: live_peak(g, env))
    fused = fuse.run(patched, options).graph
    peak = total_bytes(fused, env)
    if peak > budget:
        unfused = total_bytes(patched, env)
        if unfused > budget:
            raise MemoryBudgetError(
                f"no schedule fits the memory budget of {format_bytes(budget)}: the best schedule "
                f"found ({notes[0]}) plans to {format_bytes(min(peak, unfused))}")
        notes.append(f"kept the schedule unfused: fused around the patched stage it peaks at "
                     f"{format_bytes(peak)}, over the budget")
        fused = patched
    return PassResult(fused, True, tuple(notes), tuple(rejected))
