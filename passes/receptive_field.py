"""Receptive-field range math for patch-based execution of a CNN stage (MCUNetV2).

A *stage* is a run of nodes fed by one NCHW *spatial input*: convolutions, max/avg pooling,
batch norms and pointwise nodes (residual adds of two stage values, per-channel operands such
as a bias ``f32[16, 1, 1]``). Every value computed from the spatial input is a *spatial value*.

To compute rows/cols ``[lo, hi)`` of a node's output, a convolution or pooling window needs
input rows ``lo*stride - pad .. (hi-1)*stride - pad + dilation*(k-1) + 1``; a pointwise node
needs the same rows of its spatial operands. Going backwards over a stage from one output
tile gives each spatial value the *region* (rows and cols) it must be computed on; a value
read by several consumers gets the hull of their needs.

    tile rows [0, 8) of %3 = conv3x3 s1 p1(%2), %2 = relu(%1), %1 = conv3x3 s2 p1(%x):
      %2 rows [-1, 9) -> [0, 9), the row above the image is the conv's zero padding
      %1 rows [0, 9)
      %x rows [-1, 18) -> [0, 18)

Regions hold exactly the real pixels some window tap reads (``Window.reads``: a window lying
wholly in padding, or a dilation gap at the border, adds nothing); ``Window.needs`` gives the
unclipped interval a window node's input spans, the part outside its producer's region being
padding (zero, or -inf for max pooling). Only padding at the true image border is ever made
up: interior overlap between tiles is recomputed from real neighbouring pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from effc.errors import CompileError
from effc.ir import Family, Graph, Node, Op, Value

Range = tuple[int, int]          # [lo, hi) along one axis
Region = tuple[Range, Range]     # (rows, cols)

POINTWISE = (Family.UNARY, Family.BINARY, Family.COMPARE, Family.TERNARY, Family.CAST)
WINDOW_OPS = (Op.CONVOLUTION, Op.MAX_POOL, Op.AVG_POOL)


@dataclass(frozen=True)
class Window:
    """One axis of a sliding window: output o reads inputs o*stride - pad + dilation*j, j < kernel."""
    kernel: int
    stride: int
    padding: int
    dilation: int

    def needs(self, out: Range) -> Range:
        """Unclipped input interval for outputs ``out`` (empty in, empty out)."""
        lo, hi = out
        if hi <= lo:
            return (0, 0)
        return (lo * self.stride - self.padding,
                (hi - 1) * self.stride - self.padding + self.dilation * (self.kernel - 1) + 1)


    def reads(self, out: Range, size: int) -> Range:
        """The smallest interval of ``[0, size)`` holding every real position that outputs
        ``out`` read: exact, so a window partly in padding adds no row that only a dilation
        gap or the padding covers. ``(0, 0)`` when every tap falls in padding."""
        lo, hi = out
        first = last = None
        for o in range(lo, hi):        # windows starting in the padding before the image
            base = o * self.stride - self.padding
            j = max(0, -(base // self.dilation))
            if j < self.kernel and 0 <= base + self.dilation * j < size:
                first = base + self.dilation * j if first is None else min(first, base + self.dilation * j)
            if base >= 0:
                break
        for o in range(hi - 1, lo - 1, -1):  # windows ending in the padding after it
            base = o * self.stride - self.padding
            j = min(self.kernel - 1, (size - 1 - base) // self.dilation)
            if j >= 0 and 0 <= base + self.dilation * j < size:
                last = base + self.dilation * j if last is None else max(last, base + self.dilation * j)
            if base + self.dilation * (self.kernel - 1) < size:
                break
        if first is None or last is None:
            return (0, 0)
        return (first, last + 1)


def windows(node: Node) -> tuple[Window, Window]:
    """The (row, col) windows of a 2-d convolution or pooling node."""
    a = node.attrs
    if node.op is Op.CONVOLUTION:
        k = [int(d) for d in node.inputs[1].type.shape[2:]]
        dil = a["dilation"]
    else:
        k = list(a["kernel"])
        dil = a.get("dilation", (1, 1))
    return tuple(Window(int(k[i]), int(a["stride"][i]), int(a["padding"][i]), int(dil[i]))  # type: ignore[return-value]
                 for i in range(2))


def clip(r: Range, size: int) -> tuple[Range, int, int]:
    """``r`` clipped to ``[0, size)``, with how many positions fell off before and after."""
    a, b = r
    lo = min(max(a, 0), size)
    hi = max(min(b, size), lo)
    return (lo, hi), max(0, min(lo, b) - a), max(0, b - max(hi, a))


def hull(a: Range | None, b: Range) -> Range:
    """Smallest interval holding both (an empty interval adds nothing)."""
    if a is None or a[1] <= a[0]:
        return b
    if b[1] <= b[0]:
        return a
    return (min(a[0], b[0]), max(a[1], b[1]))


def spatial_hw(v: Value) -> tuple[int, int]:
    h, w = v.type.shape[-2:]
    return int(h), int(w)


def spatial_operands(node: Node, spatial: set[Value]) -> list[int]:
    """Positions of ``node``'s inputs that are spatial values."""
    return [i for i, v in enumerate(node.inputs) if v in spatial]


def unsupported(node: Node, spatial: set[Value]) -> str | None:
    """Why ``node`` (reading at least one spatial value) cannot be part of a stage; None if it can."""
    pos = spatial_operands(node, spatial)
    if len(node.outputs) != 1:
        return f"{node.op} has {len(node.outputs)} outputs"
    out = node.output.type
    if out.rank != 4 or not out.is_static:
        return f"{node.op} output {out} is not a static NCHW tensor"
    if node.op in WINDOW_OPS or node.op is Op.BATCH_NORM:
        if pos != [0]:
            return f"{node.op} reads a spatial value as a parameter"
        if node.op is Op.CONVOLUTION and (node.attrs["transposed"] or len(node.attrs["stride"]) != 2):
            return "only 2-d, non-transposed convolutions are tiled"
        if node.op in (Op.MAX_POOL, Op.AVG_POOL) and (len(node.attrs["kernel"]) != 2
                                                      or node.inputs[0].type.rank != 4):
            return f"only 2-d {node.op} over NCHW is tiled"
        if node.op is Op.MAX_POOL and node.inputs[0].type.dtype.is_bool:
            return "max_pool over bool"
        return None
    if node.op.family not in POINTWISE:
        return f"{node.op} is not a convolution, pooling, batch norm or pointwise node"
    hw = spatial_hw(node.output)
    for i, v in enumerate(node.inputs):
        t = v.type
        if i in pos:
            if t.rank != 4 or spatial_hw(v) != hw:
                return f"{node.op} broadcasts a spatial operand {t} to {out}"
        elif t.rank > 4 or not t.is_static or any(int(d) != 1 for d in t.shape[max(0, t.rank - 2):]):
            return f"{node.op} operand {t} varies over rows or columns and is not computed in the stage"
    return None


def spatial_values(graph: Graph, source: Value) -> tuple[set[Value], list[Node]]:
    """Values computed from ``source`` in ``graph``, and the nodes computing them, in order."""
    spatial = {source}
    nodes = []
    for n in graph.nodes:
        if any(v in spatial for v in n.inputs):
            spatial.update(n.outputs)
            nodes.append(n)
    return spatial, nodes


def input_region(node: Node, out: Region, spatial: set[Value]) -> dict[int, Region]:
    """For each spatial operand position of ``node``, the clipped region it needs for ``out``."""
    needs: dict[int, Region] = {}
    for i in spatial_operands(node, spatial):
        h, w = spatial_hw(node.inputs[i])
        if node.op in WINDOW_OPS:
            wr, wc = windows(node)
            rows, cols = wr.reads(out[0], h), wc.reads(out[1], w)
        else:
            rows, cols = out
        needs[i] = (rows, cols)
    return needs


def stage_regions(nodes: Sequence[Node], spatial: set[Value], output: Value,
                  tile: Region) -> dict[Value, Region]:
    """The region every spatial value must be computed on so that ``output`` gets ``tile``.

    ``nodes`` are the stage's nodes in order; a value missing from the result is not needed.
    """
    need: dict[Value, tuple[Range | None, Range | None]] = {output: tile}
    for node in reversed(nodes):
        out = need.get(node.output)
        if out is None or out[0] is None or out[1] is None:
            continue
        for i, (rows, cols) in input_region(node, (out[0], out[1]), spatial).items():
            v = node.inputs[i]
            old = need.get(v, (None, None))
            need[v] = (hull(old[0], rows), hull(old[1], cols))
    return {v: (r, c) for v, (r, c) in need.items() if r is not None and c is not None}


def even_bounds(size: int, parts: int) -> tuple[int, ...]:
    """``parts`` near-equal intervals of ``[0, size)`` as boundaries ``(0, ..., size)``."""
    parts = max(1, min(parts, size))
    return tuple(round(i * size / parts) for i in range(parts + 1))


def tiles(rows: Sequence[int], cols: Sequence[int]) -> list[Region]:
    """The tile grid given by row and column boundaries, row-major."""
    return [((rows[i], rows[i + 1]), (cols[j], cols[j + 1]))
            for i in range(len(rows) - 1) for j in range(len(cols) - 1)]


def tile_bounds(node: Node) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The row and column tile boundaries of a patched kernel node's output."""
    params = node.attrs["params"]
    h, w = spatial_hw(node.attrs["body"].outputs[0])
    grid = params.get("tiles", (1, 1))
    rows = tuple(params["rows"]) if "rows" in params else even_bounds(h, int(grid[0]))
    cols = tuple(params["cols"]) if "cols" in params else even_bounds(w, int(grid[1]))
    for b, size, name in ((rows, h, "rows"), (cols, w, "cols")):
        if b[0] != 0 or b[-1] != size or any(x >= y for x, y in zip(b, b[1:])):
            raise CompileError(f"patched kernel {node.attrs['name']}: {name} {list(b)} do not split "
                               f"[0, {size}) into non-empty tiles")
    return rows, cols


def check_body(node: Node) -> tuple[Value, set[Value], list[Node]]:
    """The spatial input, the spatial values and the tiled nodes of a patched kernel's body."""
    body = node.attrs["body"]
    idx = int(node.attrs["params"].get("input", 0))
    if len(body.outputs) != 1 or not 0 <= idx < len(body.inputs):
        raise CompileError(f"patched kernel {node.attrs['name']}: needs one output and a spatial input")
    source = body.inputs[idx]
    spatial, nodes = spatial_values(body, source)
    if source.type.rank != 4 or not source.type.is_static or body.outputs[0] not in spatial:
        raise CompileError(f"patched kernel {node.attrs['name']}: the output is not computed from "
                           f"a static NCHW input")
    for n in nodes:
        why = unsupported(n, spatial)
        if why:
            raise CompileError(f"patched kernel {node.attrs['name']} cannot tile {n.op}: {why}")
    return source, spatial, nodes
