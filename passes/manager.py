"""The pass manager: runs the ordered pipeline, verifies, dumps, and records what changed.

Each pass is a function ``run(graph, options) -> PassResult`` that returns a new graph (or
the same object with ``modified=False``) and never mutates its input.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from effc.debug import log
from effc.errors import CompileError, UserError
from effc.ir import Graph, Op
from effc.options import Options


@dataclass(frozen=True)
class PassResult:
    graph: Graph
    modified: bool
    notes: tuple[str, ...] = ()      # what the pass changed, one line each
    rejected: tuple[str, ...] = ()   # matches it declined, with the reason
    data: Mapping[str, Any] = field(default_factory=dict)  # results for the report (a memory plan)


@dataclass
class PassRecord:
    name: str
    modified: bool
    seconds: float
    nodes_before: int
    nodes_after: int
    notes: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    skipped: bool = False
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)  # not serialised

    def to_json(self) -> dict:
        return {"name": self.name, "modified": self.modified, "seconds": round(self.seconds, 6),
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "notes": self.notes, "rejected": self.rejected, "skipped": self.skipped}


PassFn = Callable[[Graph, Options], PassResult]


def run_pipeline(graph: Graph, pipeline: Sequence[tuple[str, PassFn]], options: Options,
                 label: str = "graph") -> tuple[Graph, list[PassRecord]]:
    records: list[PassRecord] = []
    dump = _dump_folder(graph, options, label)
    if options.verify:
        _verify(graph, "the frontend")
    if dump:
        _write(dump, "00_input.txt", str(graph))
    for i, (name, fn) in enumerate(pipeline, start=1):
        before = _size(graph)
        if name in options.disable_passes:
            records.append(PassRecord(name, False, 0.0, before, before, skipped=True))
            continue
        t0 = time.perf_counter()
        try:
            result = fn(graph, options)
        except UserError:   # the user's request cannot be met (a memory budget): say so as is
            raise
        except Exception as e:
            raise CompileError(f"pass {name} failed: {e}") from e
        dt = time.perf_counter() - t0
        if options.verify and result.modified:
            _verify(result.graph, f"pass {name}")
        graph = result.graph
        rec = PassRecord(name, result.modified, dt, before, _size(graph), list(result.notes),
                         list(result.rejected), data=result.data)
        records.append(rec)
        if options.explain:
            for line in rec.notes:
                log.info("%s: %s", name, line)
            for line in rec.rejected:
                log.info("%s rejected: %s", name, line)
        if dump:
            _write(dump, f"{i:02d}_{name}.txt", str(graph))
    if dump:
        _write(dump, "passes.json", json.dumps([r.to_json() for r in records], indent=2))
    return graph, records


def _size(graph: Graph) -> int:
    """Nodes that compute something (constants are table entries, not work)."""
    return sum(1 for n in graph.nodes if n.op is not Op.CONSTANT)


def _verify(graph: Graph, after: str) -> None:
    from effc.ir.verify import VerificationError, verify
    try:
        verify(graph)
    except VerificationError as e:
        raise CompileError(f"IR invalid after {after}: {e}") from e


def _dump_folder(graph: Graph, options: Options, label: str) -> str | None:
    if not options.dump_dir:
        return None
    digest = hashlib.sha256(str(graph).encode()).hexdigest()[:10]
    folder = os.path.join(options.dump_dir, f"{label}-{digest}")
    os.makedirs(folder, exist_ok=True)
    return folder


def _write(folder: str, name: str, text: str) -> None:
    path = os.path.join(folder, name)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
