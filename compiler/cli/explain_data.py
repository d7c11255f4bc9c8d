"""The data behind ``effc explain``: the explain record, plus kernels with bytes and predicted
and measured times, at concrete sizes.

Kernels are named as the values they produce in model.effc (``%3``), so a row can be found in
the IR text. Measured time runs the final graph on the reference backend step by step and
takes each step's median over ``repeat`` runs (after one warm-up run).
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    import sympy
    import torch

    from effc.ir import Graph, Node
    from effc.onnx_model import OnnxModel


def explain_data(m: "OnnxModel", dims: Mapping[str, int], seed: int, repeat: int) -> dict[str, Any]:
    from effc.backends.signature import bind_inputs
    from effc.cli.inputs import random_feeds, resolve_sizes, to_tensors
    from effc.ir import Op
    from effc.ir.printer import Namer
    from effc.program import memory_summary, peak_bytes

    sizes = resolve_sizes(m.inputs, dims)
    tensors = to_tensors(m.inputs, random_feeds(m.inputs, sizes, seed))
    graph = m.graph
    env = bind_inputs(graph, tensors)
    data = m.explain().to_json()
    label = m.report.label
    predict = cost_model()
    measured = measure_nodes(graph, tensors, env, repeat) if repeat else {}
    if not m.report.kernels:
        namer = Namer(graph)
        kernels = []
        for node in graph.nodes:
            names = [namer.define(v) for v in node.outputs]
            if node.op is Op.CONSTANT:
                continue
            out = node.outputs[0].type
            fused = node.op is Op.KERNEL
            kernels.append({
                "graph": label, "name": names[0], "op": node.op.value,
                # a fused kernel lists the ops of its body; any other node is its own kernel
                "kind": node.attrs["kind"] if fused else "op",
                "nodes": [n.op.value for n in node.attrs["body"].nodes] if fused else names,
                "dtype": out.dtype.value, "shape": _shape(out.shape),
                "input_bytes": sum(_bytes(v.type, env) for v in node.inputs),
                "output_bytes": sum(_bytes(v.type, env) for v in node.outputs),
                **_predict(predict, node, env),
                "measured_seconds": measured.get(id(node)),
            })
        data["kernels"] = kernels
    planned = next((p.data for p in m.report.passes if p.name == "plan_memory" and p.data), None)
    if planned:  # the memory plan's formulas, at these sizes
        data["memory"] = memory_summary(planned["plan"], planned["scratch"], env)
        data["peak_bytes"] = data["memory"]["arena"] + data["memory"]["scratch"]
    else:
        data["memory"] = None
        data["peak_bytes"] = peak_bytes(graph, env)
    data["sizes"] = dict(sizes)
    data["cost_model"] = None if predict is None else f"{predict.__module__}.{predict.__name__}"
    data["measured"] = bool(repeat)
    data["inputs"] = [_spec(s) for s in m.inputs]
    data["outputs"] = [_spec(s) for s in m.outputs]
    return data


def measure_nodes(graph: "Graph", tensors: Sequence["torch.Tensor"], env: Mapping["sympy.Symbol", int],
                  repeat: int) -> dict[int, float]:
    """Median seconds of each non-constant node (keyed by ``id(node)``), running the graph's
    reference program one step at a time."""
    import torch

    from effc.backends.reference import ReferenceProgram

    program = ReferenceProgram(graph)
    samples: dict[int, list[float]] = {id(s.node): [] for s in program.steps}
    with torch.no_grad():
        for r in range(repeat + 1):
            vals: list[Any] = [None] * program.nslots
            for i, t in enumerate(tensors):
                vals[i] = t
            for s, name in program.constant_slots.items():
                vals[s] = graph.constants[name]
            for step in program.steps:
                args = [vals[a] for a in step.args]
                t0 = time.perf_counter()
                out = step.execute(args, env)
                dt = time.perf_counter() - t0
                if r:
                    samples[id(step.node)].append(dt)
                for slot, value in zip(step.outs, (out,) if isinstance(out, torch.Tensor) else out):
                    vals[slot] = value
                for slot in step.frees:
                    vals[slot] = None
    return {k: statistics.median(v) for k, v in samples.items() if v}


def cost_model() -> Callable[..., float] | None:
    """``effc.costmodel.predict_node(node, env) -> seconds`` when this effc has a cost model."""
    try:
        from effc import costmodel  # type: ignore[attr-defined]
    except ImportError:
        return None
    fn = getattr(costmodel, "predict_node", None)
    return fn if callable(fn) else None


def _predict(predict: Any, node: "Node", env: Mapping["sympy.Symbol", int]) -> dict[str, Any]:
    """The cost model's prediction: a float of seconds, or an object with ``.seconds`` (and
    ``.to_json()``); None where it cannot say. A cost model that fails on a node is shown as
    such rather than failing the whole explanation."""
    if predict is None:
        return {"predicted_seconds": None}
    try:
        p = predict(node, dict(env))
    except Exception as e:  # noqa: BLE001 - reported in the output, next to the node
        return {"predicted_seconds": None, "prediction_error": f"{type(e).__name__}: {e}"}
    if p is None:
        return {"predicted_seconds": None}
    if isinstance(p, (int, float)):
        return {"predicted_seconds": float(p)}
    out: dict[str, Any] = {"predicted_seconds": float(p.seconds)}
    if hasattr(p, "to_json"):
        out["prediction"] = p.to_json()
    return out


def _bytes(t: Any, env: Mapping["sympy.Symbol", int]) -> int:
    import sympy
    n = t.numel()
    if not isinstance(n, int):
        n = int(sympy.sympify(n).subs(env))
    return int(n) * t.dtype.itemsize


def _shape(shape: Sequence[Any]) -> str:
    from effc.ir.types import dim_str
    return "[" + ", ".join(dim_str(d) for d in shape) + "]"


def _spec(s: Any) -> dict[str, Any]:
    return {"name": s.name, "dtype": s.dtype.value, "shape": [d if isinstance(d, int) else str(d) for d in s.shape]}
