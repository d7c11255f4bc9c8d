"""Dead code elimination: drop nodes whose outputs nothing uses.

    %0 = exp(%x) : f32[4]
    %1 = neg(%x) : f32[4]          # unused
    return %0
  ->
    %0 = exp(%x) : f32[4]
    return %0

Extern nodes are kept only when used too: effc runs inference graphs, where a torch op that
mutates state has already been functionalised away by AOT tracing. Constants no node uses
leave the constant table with their node.
"""

from __future__ import annotations

from effc.ir import Graph
from effc.ir.analysis import reachable_from_outputs
from effc.ir.rewrite import Rewriter
from effc.options import Options

from .manager import PassResult

NAME = "eliminate_dead_code"


def run(graph: Graph, options: Options) -> PassResult:
    live = reachable_from_outputs(graph)
    dead = [n for n in graph.nodes if n not in live]
    if not dead:
        return PassResult(graph, False)
    rw = Rewriter(graph)
    for n in graph.nodes:
        if n in live:
            rw.copy(n)
    counts: dict[str, int] = {}
    for n in dead:
        counts[n.op.value] = counts.get(n.op.value, 0) + 1
    note = "removed " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
    return PassResult(rw.finish(), True, (note,))
