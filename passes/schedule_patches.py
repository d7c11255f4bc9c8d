"""Patch-based scheduling of an early CNN stage under a memory budget (MCUNetV2).

When the layer-by-layer peak exceeds the budget, the high-resolution stage that starts at a
spatial graph input is replaced by one ``patched`` kernel: its output is computed tile by tile
from overlapping input tiles, so the large intermediates never exist whole.

    graph(%x: f32[1, 3, 64, 64]) {
      %0 = constant() {name="p"} : f32[8, 3, 3, 3]
      %1 = convolution(%x, %0) {stride=[2, 2], padding=[1, 1], ...} : f32[1, 8, 32, 32]
      %2 = clamp(%1) {min=0.0, max=6.0} : f32[1, 8, 32, 32]
      %3 = constant() {name="p_1"} : f32[8, 1, 3, 3]
      %4 = convolution(%2, %3) {stride=[2, 2], padding=[1, 1], groups=8, ...} : f32[1, 8, 16, 16]
      %5 = mean(%4) {dims=[2, 3], keepdim=false} : f32[1, 8]
      return %5
    }
  ->
    graph(%x: f32[1, 3, 64, 64]) {
      %0 = constant() {name="p"} : f32[8, 3, 3, 3]
      %1 = constant() {name="p_1"} : f32[8, 1, 3, 3]
      %2 = kernel(%x, %0, %1) {kind="patched", name="patch0",
                               params={"input": 0, "rows": [0, 8, 16], "cols": [0, 8, 16]}} : f32[1, 8, 16, 16]
        graph(%a0: f32[1, 3, 64, 64], %a1: f32[8, 3, 3, 3], %a2: f32[8, 1, 3, 3]) {
          %0 = convolution(%a0, %a1) {stride=[2, 2], padding=[1, 1], ...} : f32[1, 8, 32, 32]
          %1 = clamp(%0) {min=0.0, max=6.0} : f32[1, 8, 32, 32]
          %2 = convolution(%1, %a2) {stride=[2, 2], padding=[1, 1], groups=8, ...} : f32[1, 8, 16, 16]
          return %2
        }
      %3 = mean(%2) {dims=[2, 3], keepdim=false} : f32[1, 8]
      return %3
    }

The 32x32 intermediate %1 now exists only in tiles of at most 17x17 (8 outputs of the
stride-2 depthwise conv read 17 rows: 15 for the stride plus the halo).

Candidates are every valid stage end (a prefix of the nodes fed by the input whose
intermediates are used only inside it) times every tile grid in ``grids``. Each is priced by
``peak_of`` (the memory planner's arena bytes) plus, unless the planner already counts it, the tile
working set (``scratch_bytes``); among those within the budget the one that recomputes the
fewest FLOPs (tiled FLOPs minus layer-by-layer FLOPs, from the receptive-field regions) wins.
If none fits, MemoryBudgetError names the budget and the smallest peak found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from effc.costmodel.roofline import node_flops
from effc.errors import MemoryBudgetError
from effc.ir import Graph, Node, Op, Value
from effc.ir.kernel_node import add_kernel, extract_body
from effc.ir.rewrite import Rewriter

from . import receptive_field as rf

NAME = "schedule_patches"
# square grids; the finer ones pay off for long stages, whose halos make coarse tiles big
DEFAULT_GRIDS: tuple[tuple[int, int], ...] = tuple((n, n) for n in (*range(2, 9), 10, 12, 14, 16))
PeakFn = Callable[[Graph], int]


@dataclass(frozen=True)
class Stage:
    """A prefix of the nodes fed by the spatial graph input ``source``, ending at ``output``."""
    source: Value
    nodes: tuple[Node, ...]
    output: Value


@dataclass(frozen=True)
class Candidate:
    label: str
    graph: Graph
    peak: int
    recompute: int      # FLOPs of tiled execution minus layer-by-layer
    stage_flops: int


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def find_stages(graph: Graph) -> tuple[list[Stage], list[str]]:
    """Every stage that can run patch by patch, and why each prefix walk stopped."""
    users = graph.users()
    outs = set(graph.outputs)
    stages: list[Stage] = []
    notes: list[str] = []
    for x in graph.inputs:
        t = x.type
        if t.rank != 4 or not t.is_static or min(rf.spatial_hw(x)) < 2:
            continue
        spatial, prefix = {x}, []
        for n in graph.nodes:
            if not any(v in spatial for v in n.inputs):
                continue
            why = rf.unsupported(n, spatial)
            if why:
                notes.append(f"stage from %{x.name} stops before {n.op}: {why}")
                break
            spatial.update(n.outputs)
            prefix.append(n)
        members: set[Node] = set()
        for k, n in enumerate(prefix):
            members.add(n)
            inner = [m.output for m in prefix[:k]]
            if any(v in outs or any(u not in members for u in users.get(v, ())) for v in inner):
                continue  # an intermediate escapes: the stage cannot end here
            if min(rf.spatial_hw(n.output)) >= 2:
                stages.append(Stage(x, tuple(prefix[:k + 1]), n.output))
    return stages, notes


def patch_stage(graph: Graph, stage: Stage, rows: Sequence[int], cols: Sequence[int],
                name: str = "patch0") -> Graph:
    """``graph`` with ``stage`` replaced by one patched kernel node tiled by ``rows`` x ``cols``."""
    body, outer = extract_body(stage.nodes, [stage.output])
    params = {"input": outer.index(stage.source), "rows": tuple(rows), "cols": tuple(cols)}
    members = set(stage.nodes)
    rw = Rewriter(graph)
    for node in graph.nodes:
        if node not in members:
            rw.copy(node)
        elif node.output is stage.output:
            rw.replace(stage.output, add_kernel(rw.b, "patched", name, rw.map(outer), body, params).output)
    return rw.finish()


def _tile_bytes(v: Value, region: rf.Region) -> int:
    (r0, r1), (c0, c1) = region
    n, c = (int(d) for d in v.type.shape[:2])
    return n * c * (r1 - r0) * (c1 - c0) * v.type.dtype.itemsize


def scratch_bytes(node: Node, env: Mapping[Any, int]) -> int:
    """Bytes of one tile's intermediates held at once, for the largest tile, when a patched
    node's body runs node by node freeing each value after its last use, and a pointwise node
    writes over an input tile of the same size that dies there (as the arena plan does for
    whole buffers). The spatial input is read in place and each output tile written in place,
    so neither counts."""
    source, spatial, nodes = rf.check_body(node)
    output = node.attrs["body"].outputs[0]
    rows, cols = rf.tile_bounds(node)
    last = {v: i for i, n in enumerate(nodes) for v in n.inputs}
    peak = 0
    for tile in rf.tiles(rows, cols):
        regions = rf.stage_regions(nodes, spatial, output, tile)
        live: dict[Value, int] = {}
        for i, n in enumerate(nodes):
            if n.output not in regions:
                continue
            if n.output is not output:
                size = _tile_bytes(n.output, regions[n.output])
                if n.op.family in rf.POINTWISE:
                    donor = next((v for v in n.inputs if live.get(v) == size and last.get(v) == i), None)
                    if donor is not None:
                        del live[donor]
                live[n.output] = size
            peak = max(peak, sum(live.values()))
            for v in [v for v in live if last.get(v, -1) <= i]:
                del live[v]
    return peak


def tile_flops(node: Node, env: Mapping[Any, int]) -> tuple[int, int]:
    """(FLOPs of the patched node run tile by tile, FLOPs of its body run layer by layer)."""
    source, spatial, nodes = rf.check_body(node)
    output = node.attrs["body"].outputs[0]
    rows, cols = rf.tile_bounds(node)
    rate = {}
    full = 0
    for n in nodes:
        f = node_flops(n, env) or 0
        h, w = rf.spatial_hw(n.output)
        rate[n] = f / (h * w)  # FLOPs per output pixel (all batches and channels)
        full += f
    tiled = 0.0
    for tile in rf.tiles(rows, cols):
        regions = rf.stage_regions(nodes, spatial, output, tile)
        for n in nodes:
            if n.output in regions:
                (r0, r1), (c0, c1) = regions[n.output]
                tiled += rate[n] * (r1 - r0) * (c1 - c0)
    return round(tiled), full


def _names(graph: Graph) -> dict[Value, str]:
    """Values as the printer numbers them (%0, %1, ...), inputs by name."""
    out = {v: f"%{v.name}" for v in graph.inputs}
    i = 0
    for n in graph.nodes:
        for v in n.outputs:
            out[v] = f"%{i}"
            i += 1
    return out


def candidates(graph: Graph, env: Mapping[Any, int], peak_of: PeakFn,
               grids: Sequence[tuple[int, int]] = DEFAULT_GRIDS,
               add_scratch: bool = True) -> tuple[list[Candidate], list[str]]:
    """Every (stage end, tile grid) schedule, priced; and why stages stopped where they did."""
    stages, notes = find_stages(graph)
    names = _names(graph)
    out: list[Candidate] = []
    for stage in stages:
        h, w = rf.spatial_hw(stage.output)
        for gh, gw in grids:
            if gh > h or gw > w:
                continue
            g = patch_stage(graph, stage, rf.even_bounds(h, gh), rf.even_bounds(w, gw))
            (k,) = [n for n in g.nodes if n.op is Op.KERNEL and n.attrs["kind"] == "patched"]
            peak = peak_of(g) + (scratch_bytes(k, env) if add_scratch else 0)
            tiled, full = tile_flops(k, env)
            label = (f"stage %{stage.source.name}..{names[stage.output]} ({len(stage.nodes)} nodes, "
                     f"{stage.output.node.op} : {stage.output.type}) in {gh}x{gw} tiles")
            out.append(Candidate(label, g, peak, tiled - full, full))
    return out, notes


def _pct(c: Candidate) -> str:
    return f"{100 * c.recompute / max(1, c.stage_flops):.1f}%"


def schedule(graph: Graph, budget_bytes: int, env: Mapping[Any, int], peak_of: PeakFn, *,
             grids: Sequence[tuple[int, int]] = DEFAULT_GRIDS,
             add_scratch: bool = True) -> tuple[Graph, list[str], list[str]]:
    """``graph`` scheduled to peak at most ``budget_bytes``: (graph, notes, rejected).

    ``peak_of(graph)`` is the planner's arena bytes. With ``add_scratch`` (the default) the
    patched node's ``scratch_bytes`` is added to it; pass False when ``peak_of`` already
    reserves the tile working set. Returns ``graph`` itself when it already fits; raises
    MemoryBudgetError when no candidate does.
    """
    base = peak_of(graph)
    budget = format_bytes(budget_bytes)
    if base <= budget_bytes:
        return graph, [f"layer-by-layer peak {format_bytes(base)} fits the budget {budget}"], []
    cands, stops = candidates(graph, env, peak_of, grids, add_scratch)
    fits = sorted((c for c in cands if c.peak <= budget_bytes), key=lambda c: (c.recompute, c.peak))
    if not fits:
        best = min(cands, key=lambda c: c.peak, default=None)
        if best is None or best.peak >= base:
            found = f"{format_bytes(base)} ({base} bytes), layer by layer"
            why = "; no stage can run patch by patch" if best is None else ""
        else:
            found = f"{format_bytes(best.peak)} ({best.peak} bytes), with {best.label}"
            why = f"; layer by layer it is {format_bytes(base)}"
        raise MemoryBudgetError(f"no schedule fits the memory budget of {budget} ({budget_bytes} bytes): "
                                f"the smallest peak found is {found}{why}" + (f" ({stops[0]})" if stops else ""))
    chosen = fits[0]
    notes = [f"patched {chosen.label}: peak {format_bytes(chosen.peak)} (layer by layer "
             f"{format_bytes(base)}, budget {budget}), recomputes {_pct(chosen)} of the stage's FLOPs"]
    rejected = [f"{c.label}: peak {format_bytes(c.peak)} over the budget {budget}" if c.peak > budget_bytes
                else f"{c.label}: fits (peak {format_bytes(c.peak)}) but recomputes {_pct(c)} "
                     f"(chosen {_pct(chosen)})"
                for c in cands if c is not chosen]
    return chosen.graph, notes, rejected + stops
