"""A compiled graph as a callable: picks the backend, runs it, and rebuilds the outputs.

``CompiledGraph`` takes the same flat argument list as the FX graph it came from (tensors,
sizes and parameters), hands the IR inputs to the backend, and returns outputs in FX order,
evaluating size outputs from the bound symbols.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator, Mapping

import sympy
import torch

from effc.backends.reference import ReferenceProgram
from effc.backends.signature import bind_inputs
from effc.backends.symeval import SymbolicAttrs
from effc.errors import OptionError
from effc.report import GraphReport
from effc.frontends.fx import Imported
from effc.ir import Graph, Node, Op
from effc.options import Options
from effc.passes import PIPELINE, run_pipeline


def select_target(options: Options, device: torch.device | None) -> str:
    cuda = device is not None and device.type == "cuda"
    if options.target == "auto" and cuda and _triton_available():
        return "triton"
    if options.target in ("auto", "reference"):
        return "reference"
    if options.target == "triton":
        if not _triton_available():
            raise OptionError("target 'triton' needs the triton package (pip install triton)")
        # no device (an ONNX model): the program moves CPU inputs to the GPU when there is one
        if device is None and torch.cuda.is_available():
            cuda = True
        if not cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise OptionError("target 'triton' needs a CUDA device (or TRITON_INTERPRET=1 to run on the CPU)")
        from effc.backends.triton import interpreter_mismatch
        why = interpreter_mismatch()
        if why is not None:
            raise OptionError(f"target 'triton': {why}")
        return "triton"
    if options.target == "c":
        if device is not None and device.type != "cpu":
            raise OptionError(f"target 'c' runs on the CPU; these inputs are on {device}")
        from effc.backends.c.build import compiler_available
        if not compiler_available():
            raise OptionError("target 'c' needs a C compiler (cc) on PATH")
        return "c"
    raise OptionError(f"target {options.target!r} is not available in this version of effc; "
                      "use 'c', 'triton', 'reference' or 'auto'")


def _triton_available() -> bool:
    from effc.backends.triton import triton_available
    return triton_available()


class CompiledGraph:
    def __init__(self, imported: Imported, graph: Graph, program: Any, report: GraphReport) -> None:
        self.imported = imported
        self.graph = graph
        self.program = program
        self.report = report
        self._sym_outs = [SymbolicAttrs(o.value) if o.kind == "sym" else None for o in imported.outputs]

    def __call__(self, *args: Any) -> tuple:
        tensors = [args[i] for i in self.imported.input_map]
        env = bind_inputs(self.graph, tensors)
        outs = self.program.run(tensors, env)
        result = []
        for spec, sym in zip(self.imported.outputs, self._sym_outs):
            if spec.kind == "ir":
                result.append(outs[spec.index])
            elif sym is not None:
                result.append(sym(env))
            else:
                result.append(spec.value)
        return tuple(result)


def compile_imported(imported: Imported, options: Options, label: str,
                     device: torch.device | None = None) -> CompiledGraph:
    t0 = time.perf_counter()
    target = select_target(options, device)
    # the example inputs' sizes price the cost model's decisions; the user's hints win
    hints = {str(s): int(v) for s, v in imported.hints.items()}
    options = options.replace(size_hints={**hints, **options.size_hints})
    key = None
    if target == "c" and options.cache and not options.dump_dir:   # dumps need the passes to run
        from effc.backends.c import program_cache
        key = program_cache.program_key(imported.graph, options)
        hit = program_cache.load(key, imported.graph.constants, label)
        if hit is not None:
            report = hit.report
            report.label, report.graph = label, hit.graph
            report.extern_reasons = dict(imported.extern_reasons)
            report.cache = {"hit": True, "key": key, "entry": str(hit.entry),
                            "first_compile_seconds": report.compile_seconds}
            report.compile_seconds = time.perf_counter() - t0
            return CompiledGraph(imported, hit.graph, hit.program, report)
    # the passes see the target chosen (fuse keeps GPU matmul epilogues light)
    graph, records = run_pipeline(imported.graph, PIPELINE, options.replace(target=target), label)
    planned = next((r.data for r in records if r.name == "plan_memory" and r.data), None)
    if target == "c":
        if planned is None:
            raise OptionError("target 'c' runs the memory plan; do not disable plan_memory")
        from effc.backends.c.program import CProgram
        program: Any = CProgram(graph, planned["plan"], label)
    elif target == "triton":
        if planned is None:
            raise OptionError("target 'triton' runs the memory plan; do not disable plan_memory")
        from effc.backends.triton.program import TritonProgram
        program = TritonProgram(graph, planned["plan"], label, options, device)
    else:
        program = ReferenceProgram(graph)
    report = GraphReport(label=label, target=target, nodes_in=_count(imported.graph),
                         nodes_out=_count(graph), passes=records, externs=_externs(graph),
                         extern_reasons=dict(imported.extern_reasons), graph=graph)
    hint_env = options.hint_env(graph.symbols())
    fused = next((r.data for r in records if r.name == "fuse" and r.data), None)
    if fused:
        report.fusion = fusion_summary(fused)
    if target in ("c", "triton"):
        report.python_kernels = dict(program.fallbacks)
    if planned:
        report.memory = memory_summary(planned["plan"], planned["scratch"], hint_env)
        # the C templates' own scratch (packing panels, attention blocks) after the plan's buffers
        kernel_scratch = sympy.sympify(getattr(program, "scratch_bytes", 0)).xreplace(
            {s: sympy.Integer(v) for s, v in hint_env.items()})
        report.memory["kernel_scratch"] = int(kernel_scratch) if kernel_scratch.is_Integer else None
        report.peak_bytes = report.memory["arena"] + report.memory["scratch"] + (report.memory["kernel_scratch"] or 0)
    else:
        report.peak_bytes = peak_bytes(graph, imported.hints)
    for n in all_nodes(graph):
        report.ops[n.op.value] = report.ops.get(n.op.value, 0) + 1
    report.compile_seconds = time.perf_counter() - t0
    if key is not None:
        from effc.backends.c import program_cache
        entry = program_cache.store(key, graph, planned["plan"], program, report,
                                    imported.graph.constants, label)
        report.cache = {"hit": False, "key": key, "entry": None if entry is None else str(entry)}
        report.compile_seconds = time.perf_counter() - t0
    return CompiledGraph(imported, graph, program, report)


def _count(graph: Graph) -> int:
    return sum(1 for n in graph.nodes if n.op is not Op.CONSTANT)


def fusion_summary(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the fuse pass did, priced by the cost model at the size hints: its input graph with
    every node a kernel of its own, against the kernels it made."""
    before, after = data["unfused"], data["fused"]
    return {"ir_nodes": data["nodes"], "kernels": after.kernels,
            "bytes_unfused": before.bytes, "bytes_fused": after.bytes,
            "activation_bytes_unfused": before.bytes - before.weight_bytes,
            "activation_bytes_fused": after.bytes - after.weight_bytes,
            "seconds_unfused": before.seconds, "seconds_fused": after.seconds,
            "unpriced": before.unknown + after.unknown}


def memory_summary(plan: Any, scratch: int, env: dict) -> dict[str, Any]:
    """The memory plan at ``env``: arena bytes (and tile scratch beside it) against one
    allocation per value and the liveness lower bound."""
    return {"arena": plan.evaluate(env)["arena"], "scratch": scratch, "naive": plan.naive_bytes(env),
            "lower_bound": plan.lower_bound(env), "strategy": plan.strategy,
            "strategies": dict(plan.candidates),
            "in_place": sum(len(b.inplace) for b in plan.buffers),
            "sizes": {str(k): v for k, v in env.items()}}


def all_nodes(graph: Graph) -> Iterator[Node]:
    """Every node of ``graph``, kernel nodes followed by the nodes of their bodies."""
    for n in graph.nodes:
        yield n
        if n.op is Op.KERNEL:
            yield from all_nodes(n.attrs["body"])


def _externs(graph: Graph) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in all_nodes(graph):
        if n.op is Op.EXTERN:
            out[n.attrs["target"]] = out.get(n.attrs["target"], 0) + 1
    return out


def peak_bytes(graph: Graph, env: dict) -> int | None:
    """Peak bytes of intermediates held at once when the graph runs node by node, freeing each
    value after its last use (no buffer reuse), for the sizes in ``env``."""
    if graph.symbols() - set(env):
        return None
    last: dict[Any, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            last[v] = i
    outs = set(graph.outputs)
    live: dict[Any, int] = {}
    peak = 0
    for i, n in enumerate(graph.nodes):
        if n.op is Op.CONSTANT:
            continue
        for v in n.outputs:
            size = v.type.numel()
            size = int(sympy.sympify(size).subs(env)) if not isinstance(size, int) else size
            live[v] = size * v.type.dtype.itemsize
        peak = max(peak, sum(live.values()))
        for v in list(live):
            if last.get(v, -1) <= i and v not in outs:
                del live[v]
    return peak
