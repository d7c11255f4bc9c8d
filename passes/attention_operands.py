"""Q, K and V of a matched attention, read back through the views model code puts on them.

``attention_match`` finds ``softmax(Q Kᵀ) V``; the functions here follow each operand of the
two matmuls up to the tensor the attention op should read, and say how to view it (an
``Operand``: a permute and a reshape of a source-graph value) so that its batch axes line up
with the frame's (the scores' batch axes, e.g. [B, H]).

[Note: attention operands]
- batch views: core ATen writes a 4-d matmul as ``reshape [B*H, S, D] -> bmm -> reshape``; a
  reshape, squeeze or unsqueeze that keeps the last two axes and the number of matrices is
  read through, and the operand is reshaped back to the frame's batch axes when needed.
- constant factors on Q and K (``q * d**-0.5``, ``k / sqrt(d)``) join the op's scale.
- Kᵀ = permute(K', p) gives K = permute(K', p with its last two axes swapped), K' itself when
  that is the identity; any other Kᵀ is transposed by a new permute.
- broadcast batch axes (K and V only): a matmul broadcasts a K or V with size-1 batch axes
  (one head shared by all, multi-query attention; one K for the whole batch), either in the
  IR's own matmul (ONNX) or through an ``expand`` to the frame's batch axes (core ATen writes
  out matmul's broadcasting). The attention op broadcasts such axes itself, so the expand is
  read through and the size-1 axes kept; with one K/V head the op reads it with
  ``enable_gqa``. Q has the frame's batch axes: the output does.
- grouped-query attention: K and V both ``expand`` [*B', Hkv, 1, S, D] -> [*B', Hkv, r, S, D]
  and merged to H = Hkv·r heads (``repeat_kv``, ``repeat_interleave``): the op reads the Hkv
  heads with ``enable_gqa``. Head h uses group h // r, which is what ``repeat_interleave``
  does; ``repeat`` (tiling, group h % Hkv) is not grouping, and such K/V are kept as the model
  repeated them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from effc.ir import Graph, Node, Op, Value
from effc.ir.types import Dim, dims_equal, normalize_axis

from .attention_mask import uniform


class Miss(Exception):
    """A near miss; the message says why."""


@dataclass(frozen=True)
class Operand:
    """``reshape(permute(base, perm), shape)``; either step absent when None."""
    base: Value
    perm: tuple[int, ...] | None = None
    shape: tuple[Dim, ...] | None = None

    @property
    def batch(self) -> tuple[Dim, ...]:
        if self.shape is not None:
            return tuple(self.shape[:-2])
        shape = self.base.type.shape
        return tuple(shape[i] for i in self.perm)[:-2] if self.perm else shape[:-2]


def batch_view(n: Node) -> bool:
    """A reshape, squeeze, unsqueeze or no-op expand that keeps the last two axes and the
    number of matrices: only the batch axes are re-arranged."""
    if n.op not in (Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE, Op.EXPAND) or not n.inputs:
        return False
    src, dst = n.inputs[0].type, n.output.type
    if n.op is Op.EXPAND:
        return src.same_as(dst)
    if src.rank < 2 or dst.rank < 2 or not all(dims_equal(a, b) for a, b in zip(src.shape[-2:], dst.shape[-2:])):
        return False
    return dims_equal(prod(src.shape[:-2]), prod(dst.shape[:-2]))


def prod(dims: Sequence[Dim]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = out * d  # type: ignore[operator]
    return out


def peel(graph: Graph, v: Value, batch: Sequence[Dim] | None, scalars: bool,
         broadcast: bool = False) -> tuple[Value, float]:
    """Follow an operand up through batch views (unless ``batch`` is None), (when
    ``scalars``) constant factors and (when ``broadcast``) expands of size-1 batch axes to
    ``batch``; the value reached and the product of the factors."""
    scale = 1.0
    while v.node is not None:
        n = v.node
        if batch is not None and batch_view(n) and dims_equal(prod(n.inputs[0].type.shape[:-2]), prod(batch)):
            v = n.inputs[0]
            continue
        if broadcast and batch is not None and _broadcast_expand(n, batch):
            v = n.inputs[0]
            continue
        if scalars and n.op in (Op.MUL, Op.DIV) and (n.op is Op.MUL or n.attrs["rounding_mode"] is None):
            for x, f in ((n.inputs, n.inputs[::-1]) if n.op is Op.MUL else (n.inputs,)):
                c = uniform(graph, f)
                if c is not None and c != 0 and x.type.same_as(v.type):
                    scale *= 1.0 / c if n.op is Op.DIV else c
                    v = x
                    break
            else:
                break
            continue
        break
    return v, scale


def _broadcast_expand(n: Node, batch: Sequence[Dim]) -> bool:
    """``expand`` to exactly the frame's batch axes from size-1 ones, last two axes kept."""
    if n.op is not Op.EXPAND:
        return False
    src, dst = n.inputs[0].type.shape, n.output.type.shape
    return len(src) == len(dst) >= 2 and _same(dst[:-2], batch) and _same(src[-2:], dst[-2:]) \
        and broadcasts(src[:-2], batch)


def _same(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    return len(a) == len(b) and all(dims_equal(x, y) for x, y in zip(a, b))


def broadcasts(have: Sequence[Dim], batch: Sequence[Dim]) -> bool:
    """Whether batch axes ``have`` broadcast to ``batch`` (aligned from the right, each axis
    equal to the frame's or 1)."""
    return len(have) <= len(batch) and all(
        dims_equal(a, b) or (isinstance(a, int) and a == 1) for a, b in zip(reversed(have), reversed(batch)))


def key(graph: Graph, kt: Value, batch: Sequence[Dim]) -> tuple[Value | Operand, float]:
    """K from Kᵀ: the permute's input when Kᵀ is a transposing permute, else a new permute."""
    n, r = kt.node, kt.type.rank
    swap = tuple(range(r - 2)) + (r - 1, r - 2)
    if n is None or n.op is not Op.PERMUTE:
        return Operand(kt, swap), 1.0
    p = [normalize_axis(d, r) for d in n.attrs["dims"]]
    p2 = tuple(p[:-2] + [p[-1], p[-2]])
    if p2 == tuple(range(r)):
        return peel(graph, n.inputs[0], batch, scalars=True, broadcast=True)
    base, s = peel(graph, n.inputs[0], None, scalars=True)  # constant factors only
    return Operand(base, p2), s


def fit(x: Value | Operand, batch: Sequence[Dim], name: str, broadcast: bool = False) -> Operand:
    """``x`` as an operand with the frame's batch axes (a reshape when they differ), or with
    (``broadcast``) batch axes of size 1 where the frame's are larger."""
    op = x if isinstance(x, Operand) else Operand(x)
    have = op.batch
    if _same(have, batch):
        return op
    tail = op.base.type.shape
    tail = tuple(tail[i] for i in op.perm)[-2:] if op.perm else tail[-2:]
    if broadcast and broadcasts(have, batch):   # K or V shared across some batch axes
        shape = (1,) * (len(batch) - len(have)) + tuple(have) + tail
        return op if len(have) == len(batch) else Operand(op.base, op.perm, shape)
    if not dims_equal(prod(have), prod(batch)):
        raise Miss(f"{name} has batch axes {list(have)}, not one matrix per frame batch {list(batch)}")
    return Operand(op.base, op.perm, tuple(batch) + tail)


def grouped(x: Value | Operand, batch: Sequence[Dim]) -> tuple[Operand, Dim] | None:
    """K or V repeated for grouped-query attention: (the Hkv-head operand, Hkv), or None."""
    if isinstance(x, Operand) or x.node is None or x.node.op is not Op.EXPAND or not batch:
        return None
    u, have = x.node.inputs[0], x.type.shape[:-2]
    if u.type.rank != x.type.rank:
        return None
    ub = u.type.shape[:-2]
    if len(have) == len(batch) + 1 and all(dims_equal(a, b) for a, b in zip(have[:-2], batch[:-1])) \
            and dims_equal(have[-2] * have[-1], batch[-1]) and ub[-1] == 1 \
            and all(dims_equal(a, b) for a, b in zip(ub[:-1], have[:-1])):
        # [*B', Hkv, 1, S, D] -> [*B', Hkv, r, S, D]: repeat_kv / repeat_interleave
        kv = u.node.inputs[0] if u.node is not None and u.node.op is Op.UNSQUEEZE \
            and normalize_axis(u.node.attrs["dim"], u.type.rank) == u.type.rank - 3 else None
        if kv is not None:
            return Operand(kv), have[-2]
        return Operand(u, shape=tuple(ub[:-1]) + u.type.shape[-2:]), have[-2]
    return None


def one_head(k: Operand, v: Operand, batch: Sequence[Dim]) -> bool:
    """K and V both broadcast one head to the frame's several: multi-query attention."""
    return len(batch) > 0 and not dims_equal(batch[-1], 1) and all(
        len(o.batch) == len(batch) and dims_equal(o.batch[-1], 1) for o in (k, v))


def depends(v: Value, node: Node) -> bool:
    """Whether ``v`` is computed from ``node``'s outputs."""
    seen: set[Node] = set()
    stack = [v.node] if v.node is not None else []
    while stack:
        n = stack.pop()
        if n is node:
            return True
        if n in seen:
            continue
        seen.add(n)
        stack.extend(u.node for u in n.inputs if u.node is not None)
    return False
