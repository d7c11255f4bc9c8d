"""Roofline price of a fused group of nodes run as one kernel.

A fused kernel reads each of its external inputs once and writes each of its outputs once;
values made and used inside it stay in registers or cache. Its FLOPs are the sum of its
nodes' (``roofline.node_flops``). The formula is ``roofline.predict_node``'s:
max(bytes / bandwidth, flops / peak) + one kernel's overhead.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import sympy

from effc.ir import Node, Value

from .roofline import Prediction, Target, node_flops


def value_bytes(v: Value, env: Mapping[Any, int]) -> int | None:
    n = v.type.numel()
    if not isinstance(n, int):
        try:
            n = sympy.sympify(n).subs(env)
        except (TypeError, ValueError):
            return None
        if not n.is_number:
            return None
        n = int(n)
    return n * v.type.dtype.itemsize


def external_inputs(nodes: Sequence[Node]) -> list[Value]:
    """Values ``nodes`` use that none of them makes, in order of first use."""
    made = {v for n in nodes for v in n.outputs}
    seen: dict[Value, None] = {}
    for n in nodes:
        for v in n.inputs:
            if v not in made:
                seen.setdefault(v, None)
    return list(seen)


def predict_group(nodes: Sequence[Node], outputs: Sequence[Value], env: Mapping[Any, int],
                  target: Target | None = None) -> Prediction | None:
    """Predicted time of ``nodes`` fused into one kernel writing ``outputs``; None where a
    size is unknown."""
    if target is None:
        from .calibrate import current_target
        target = current_target()
    moved = external_inputs(nodes) + list(dict.fromkeys(outputs))
    sizes = [value_bytes(v, env) for v in moved]
    flops = [node_flops(n, env) for n in nodes]
    if any(s is None for s in sizes) or any(f is None for f in flops):
        return None
    b = sum(s for s in sizes if s is not None)
    f = sum(x for x in flops if x is not None)
    memory, compute = b / target.bandwidth, f / target.peak_flops
    seconds = max(memory, compute) + target.overhead
    return Prediction(seconds, "medium" if target.calibrated else "low",
                      {"bytes": b, "flops": f, "bound": "memory" if memory >= compute else "compute",
                       "n_nodes": len(nodes), "target": target.name})
