"""Runs a ``patched`` kernel node: a CNN stage computed output tile by output tile (MCUNetV2).

    %9 = kernel(%x, %w0, %w1) {kind="patched", name="patch0",
                               params={"input": 0, "rows": [0, 24, 48], "cols": [0, 24, 48]}}
        graph(%a0: f32[1, 3, 96, 96], %a1: f32[16, 3, 3, 3], %a2: f32[16, 1, 3, 3]) { ... }

[Note: patched params]
A patched kernel's ``params``:

- ``input``: which body input is the stage's spatial (NCHW) input; the other inputs are
  weights and per-channel operands, used whole by every tile.
- ``rows`` / ``cols``: tile boundaries of the stage output, ``(0, b1, ..., H)`` and
  ``(0, c1, ..., W)``; tiles may differ in size (redistributed receptive fields).
- or ``tiles``: ``(th, tw)`` grid counts, split as evenly as possible (``rows``/``cols`` win).

For each tile, passes/receptive_field.py gives the region every body value must be computed
on. Each node then runs on its region with its padding made explicit: a window node's input is
sliced from its producer's region and padded (zero; -inf for max pooling) only where the
window crosses the true image border, and the node runs with padding 0. Average pooling sums
its window and divides by the count the op defines (count_include_pad, ceil_mode,
divisor_override), computed per output row and column.
"""

from __future__ import annotations

from typing import Any, Sequence

import sympy
import torch
import torch.nn.functional as F

from effc.ir import Node, Op, Value
from effc.passes import receptive_field as rf

from .kernels import KERNELS


def _widen(v: Any) -> Any:
    from .program import _widen as widen
    return widen(v)


class PatchedRunner:
    """Runs a patched kernel node: ``run(inputs, env) -> [stage output]``."""

    def __init__(self, node: Node, *, upcast: bool = False) -> None:
        self.node = node
        self.body = node.attrs["body"]
        self.upcast = upcast
        self.source, self.spatial, self.tiled = rf.check_body(node)
        tiled = set(self.tiled)
        self.once = [n for n in self.body.nodes if n not in tiled]  # nodes not fed by the input
        self.output = self.body.outputs[0]
        rows, cols = rf.tile_bounds(node)
        self.plans = [(t, rf.stage_regions(self.tiled, self.spatial, self.output, t))
                      for t in rf.tiles(rows, cols)]
        self.attrs = {n: _widen(n.attrs) if upcast else n.attrs for n in self.body.nodes}

    def _attrs(self, n: Node, env: dict[sympy.Symbol, int]) -> dict:
        a = self.attrs[n]
        if any(isinstance(x, sympy.Basic) for x in a.values()):
            a = {k: int(x.subs(env)) if isinstance(x, sympy.Basic) else x for k, x in a.items()}
        return a

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.double() if self.upcast and t.is_floating_point() and t.dtype != torch.float64 else t

    def run(self, inputs: Sequence[torch.Tensor], env: dict[sympy.Symbol, int]) -> list[torch.Tensor]:
        whole: dict[Value, torch.Tensor] = {v: self._cast(t) for v, t in zip(self.body.inputs, inputs)}
        for n in self.once:
            whole[n.output] = self._cast(KERNELS[n.op]([whole[v] for v in n.inputs], self._attrs(n, env)))
        shape = [int(d) for d in self.output.type.shape]
        out: torch.Tensor | None = None
        for tile, regions in self.plans:
            # each spatial value: (tensor over its region, the region's top-left corner)
            have: dict[Value, tuple[torch.Tensor, tuple[int, int]]] = {self.source: (whole[self.source], (0, 0))}
            for n in self.tiled:
                if n.output not in regions:
                    continue
                t = self._cast(self._node(n, regions[n.output], have, whole, env))
                have[n.output] = (t, (regions[n.output][0][0], regions[n.output][1][0]))
            res = have[self.output][0]
            if out is None:
                out = res.new_empty(shape)
            (r0, r1), (c0, c1) = tile
            out[..., r0:r1, c0:c1] = res
        assert out is not None
        return [out]

    def _node(self, n: Node, region: rf.Region, have: dict, whole: dict,
              env: dict[sympy.Symbol, int]) -> torch.Tensor:
        (r0, r1), (c0, c1) = region
        if r1 <= r0 or c1 <= c0:  # read by no consumer but as padding: nothing to compute
            n_, c_ = (int(d) for d in n.output.type.shape[:2])
            dt = torch.float64 if self.upcast and n.output.type.dtype.is_float else n.output.type.dtype.to_torch()
            return torch.zeros(n_, c_, max(0, r1 - r0), max(0, c1 - c0), dtype=dt,
                               device=whole[self.source].device)
        attrs = self._attrs(n, env)
        args = []
        for v in n.inputs:
            if v in self.spatial:
                t, corner = have[v]
                args.append((t, corner))
            else:
                args.append(whole[v])
        if n.op in rf.WINDOW_OPS:
            x = _window_input(n, region, *args[0], pad_value=_pad_value(n, args[0][0]))
            if n.op is Op.CONVOLUTION:
                a = dict(attrs, padding=(0, 0))
                return KERNELS[n.op]([x, *args[1:]], a)
            if n.op is Op.MAX_POOL:
                return F.max_pool2d(x, attrs["kernel"], attrs["stride"], 0, attrs["dilation"], False)
            return _avg_pool(n, region, x, attrs)
        ins = [_crop(*a, region) if isinstance(a, tuple) else a for a in args]
        return KERNELS[n.op](ins, attrs)


def _crop(t: torch.Tensor, corner: tuple[int, int], region: rf.Region) -> torch.Tensor:
    (r0, r1), (c0, c1) = region
    return t[..., r0 - corner[0]:r1 - corner[0], c0 - corner[1]:c1 - corner[1]]


def _pad_value(n: Node, t: torch.Tensor) -> float | int:
    if n.op is not Op.MAX_POOL:
        return 0
    return float("-inf") if t.is_floating_point() else torch.iinfo(t.dtype).min


def _window_input(n: Node, region: rf.Region, t: torch.Tensor, corner: tuple[int, int],
                  pad_value: float | int) -> torch.Tensor:
    """The window node's input for output ``region``: the producer's pixels, padded where the
    windows reach past them. Past the image that is the op's padding; inside it, only rows a
    dilation gap skips (the producer's region holds every row a tap reads)."""
    wr, wc = rf.windows(n)
    a, b = wr.needs(region[0])
    c, d = wc.needs(region[1])
    rows, top, bottom = rf.clip((a - corner[0], b - corner[0]), t.shape[-2])
    cols, left, right = rf.clip((c - corner[1], d - corner[1]), t.shape[-1])
    x = t[..., rows[0]:rows[1], cols[0]:cols[1]]
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=pad_value)
    return x


def _avg_divisors(win: rf.Window, out: rf.Range, size: int, include_pad: bool) -> list[int]:
    """Per output index, the count average pooling divides by along one axis (as torch does)."""
    res = []
    for o in range(*out):
        start = o * win.stride - win.padding
        end = min(start + win.kernel, size + win.padding)
        res.append(end - start if include_pad else min(end, size) - max(start, 0))
    return res


def _avg_pool(n: Node, region: rf.Region, x: torch.Tensor, attrs: dict) -> torch.Tensor:
    total = F.avg_pool2d(x, attrs["kernel"], attrs["stride"], 0, False, True, divisor_override=1)
    if attrs["divisor_override"]:
        return total / attrs["divisor_override"]
    h, w = rf.spatial_hw(n.inputs[0])
    wr, wc = rf.windows(n)
    inc = attrs["count_include_pad"]
    dr = torch.tensor(_avg_divisors(wr, region[0], h, inc), dtype=torch.int64, device=x.device)
    dc = torch.tensor(_avg_divisors(wc, region[1], w, inc), dtype=torch.int64, device=x.device)
    return total / (dr[:, None] * dc[None, :]).to(total.dtype)
