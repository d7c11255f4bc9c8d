"""The explain record: what effc did to each graph it compiled, and what it left to PyTorch.

JSON keys are stable: ``graphs`` (one entry per compiled graph), and across all graphs
``passes``, ``kernels``, ``fallbacks`` and ``peak_bytes``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from effc.passes import PassRecord


@dataclass
class GraphReport:
    label: str
    target: str
    nodes_in: int = 0
    nodes_out: int = 0
    passes: list[PassRecord] = field(default_factory=list)
    externs: dict[str, int] = field(default_factory=dict)
    extern_reasons: dict[str, str] = field(default_factory=dict)
    fallback: str | None = None          # why the whole graph runs in PyTorch, if it does
    compile_seconds: float = 0.0
    peak_bytes: int | None = None
    kernels: list[dict] = field(default_factory=list)
    graph: Any = field(default=None, repr=False)   # the final IR graph (not serialised)
    ops: dict[str, int] = field(default_factory=dict)  # IR op counts after passes
    # at the size hints: IR nodes vs kernels, bytes moved and predicted seconds unfused/fused
    fusion: dict[str, Any] = field(default_factory=dict)
    # at the size hints: the memory plan's arena vs no reuse and the liveness lower bound
    memory: dict[str, Any] = field(default_factory=dict)
    # target c: kernels the compiled program hands back to Python (reference ops), with why
    python_kernels: dict[str, str] = field(default_factory=dict)
    # target c, the whole-program cache ([Note: C program cache]): ``hit``, ``key``, ``entry``
    # (its folder; None where it could not be stored) and, on a hit, ``first_compile_seconds``
    # (the compile whose passes, kernels and figures this report shows); empty when not used
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def ir(self) -> str:
        return "" if self.graph is None else str(self.graph)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label, "target": self.target, "nodes_in": self.nodes_in,
            "nodes_out": self.nodes_out, "passes": [p.to_json() for p in self.passes],
            "externs": dict(self.externs), "extern_reasons": dict(self.extern_reasons),
            "fallback": self.fallback, "compile_seconds": round(self.compile_seconds, 4),
            "peak_bytes": self.peak_bytes, "kernels": self.kernels, "ops": dict(self.ops),
            "fusion": dict(self.fusion), "memory": dict(self.memory),
            "python_kernels": dict(self.python_kernels), "cache": dict(self.cache),
        }


@dataclass
class Explain:
    graphs: list[GraphReport] = field(default_factory=list)

    @property
    def extern_count(self) -> int:
        return sum(sum(g.externs.values()) for g in self.graphs)

    @property
    def fallbacks(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for g in self.graphs:
            if g.fallback:
                out.append({"graph": g.label, "kind": "graph", "reason": g.fallback})
            for op, n in sorted(g.externs.items()):
                out.append({"graph": g.label, "kind": "extern", "op": op, "count": n,
                            "reason": g.extern_reasons.get(op, "")})
        return out

    def to_json(self) -> dict[str, Any]:
        peaks = [g.peak_bytes for g in self.graphs if g.peak_bytes is not None]
        return {
            "graphs": [g.to_json() for g in self.graphs],
            "passes": [dict(p.to_json(), graph=g.label) for g in self.graphs for p in g.passes],
            "kernels": [dict(k, graph=g.label) for g in self.graphs for k in g.kernels],
            "fallbacks": self.fallbacks,
            "peak_bytes": max(peaks) if peaks else None,
        }

    def json(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False)

    def __str__(self) -> str:
        lines: list[str] = []
        for g in self.graphs:
            head = f"graph {g.label} -> {g.target}: {g.nodes_in} IR nodes in, {g.nodes_out} after passes"
            if g.cache.get("hit"):
                lines.append(head + f", loaded from cache in {g.compile_seconds:.2f} s")
                lines.append(f"  loaded from the compile cache ({g.cache['entry']}): the passes and kernels "
                             f"below are those of the first compile, which took "
                             f"{g.cache['first_compile_seconds']:.2f} s")
            else:
                lines.append(head + f", compiled in {g.compile_seconds:.2f} s")
            if g.fallback:
                lines.append(f"  runs in PyTorch: {g.fallback}")
            for p in g.passes:
                if p.skipped:
                    lines.append(f"  pass {p.name}: disabled")
                elif p.modified:
                    lines.append(f"  pass {p.name}: {p.nodes_before} -> {p.nodes_after} nodes"
                                 + (f" ({'; '.join(p.notes[:3])}{' ...' if len(p.notes) > 3 else ''})" if p.notes else ""))
                if p.rejected and not p.skipped:   # near misses, with the reason each was declined
                    lines.append(f"  pass {p.name} rejected {len(p.rejected)}: {'; '.join(p.rejected[:3])}"
                                 + (" ..." if len(p.rejected) > 3 else ""))
            for op, n in sorted(g.externs.items()):
                lines.append(f"  extern {op} x{n}: {g.extern_reasons.get(op, '')}")
            if g.python_kernels:
                lines.append(f"  {len(g.python_kernels)} kernels run in Python (reference ops): "
                             + "; ".join(f"{k}: {why}" for k, why in list(g.python_kernels.items())[:5])
                             + (" ..." if len(g.python_kernels) > 5 else ""))
            if g.fusion:
                f = g.fusion
                lines.append(f"  fusion: {f['ir_nodes']} IR nodes -> {f['kernels']} kernels; bytes moved "
                             f"{_human(f['bytes_unfused'])} -> {_human(f['bytes_fused'])} (cost model)")
            if g.memory:
                m = g.memory
                scratch = f" + {_human(m['scratch'])} tile scratch" if m["scratch"] else ""
                if m.get("kernel_scratch"):
                    scratch += f" + {_human(m['kernel_scratch'])} kernel scratch"
                lines.append(f"  peak intermediate memory {_human(m['arena'])}{scratch} (planned arena, "
                             f"{m['strategy']}; {_human(m['naive'])} without reuse)")
            elif g.peak_bytes is not None:
                lines.append(f"  peak intermediate memory {_human(g.peak_bytes)} (node by node, no buffer reuse)")
        if not lines:
            lines.append("nothing compiled yet")
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"
