"""Which kernel kind a group of nodes forms, or why it forms none (for passes/fuse.py).

``classify(nodes, outputs)`` returns the kind of [Note: kernel groups] in ir/kernel_node.py
that the group (its nodes in order, and the values it must write) is, or a ``Reject`` naming
the rule it breaks. The rules here are that note, read as checks:

- all pointwise and view nodes, every output of one shape -> ``pointwise`` (a lone reshape,
  squeeze or unsqueeze -> ``view``);
- one matmul, views only before it, pointwise nodes and trivial reshapes after it, outputs of
  its shape up to size-1 dims -> ``matmul``;
- one convolution reading kernel inputs (through trivial reshapes at most), the same epilogue
  -> ``conv``;
- reducing nodes over one domain (input shape F, reduced dims R), whose results reach only
  pointwise nodes, trivial reshapes or reducing nodes, at their own outer index; outputs of
  shape F or its reduction up to size-1 dims -> ``reduction``;
- any other single node -> ``op`` or ``extern``; such nodes never join a group.

A trivial reshape (``is_trivial_reshape`` in ir/kernel_views.py) only inserts or removes
size-1 dims, so it keeps the element order and the lowering maps indices through it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from effc.ir import Family, Node, Op, Value
from effc.ir.kernel_views import is_trivial_reshape, same_up_to_ones
from effc.ir.types import Dim, dims_equal, normalize_axis

POINTWISE_FAMILIES = (Family.UNARY, Family.BINARY, Family.COMPARE, Family.TERNARY, Family.CAST)
POINTWISE_OPS = frozenset({Op.FULL, Op.ARANGE, Op.BATCH_NORM})
VIEW_OPS = frozenset({Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SQUEEZE, Op.UNSQUEEZE, Op.SLICE,
                      Op.SELECT})
ALIAS_OPS = frozenset({Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE})  # a lone one is a "view" kernel
REDUCING_OPS = frozenset({Op.SOFTMAX, Op.LOG_SOFTMAX, Op.LAYER_NORM, Op.RMS_NORM})


@dataclass(frozen=True)
class Reject:
    reason: str


def is_pointwise(n: Node) -> bool:
    return n.op.family in POINTWISE_FAMILIES or n.op in POINTWISE_OPS


def is_view(n: Node) -> bool:
    return n.op in VIEW_OPS


def is_reducing(n: Node) -> bool:
    return n.op.family is Family.REDUCE or n.op in REDUCING_OPS


def role(n: Node) -> str:
    """pointwise, view, reduction, matmul, conv, extern or op: how a node may be grouped."""
    if is_pointwise(n):
        return "pointwise"
    if is_view(n):
        return "view"
    if is_reducing(n):
        return "reduction"
    if n.op.family is Family.MATMUL:
        return "matmul"
    if n.op is Op.CONVOLUTION and not n.attrs["transposed"]:
        return "conv"  # a transposed one has no conv template in ir/kernel_lower.py: "op"
    if n.op is Op.EXTERN:
        return "extern"
    return "op"


def solo_kind(n: Node) -> str:
    """The kind of a kernel holding ``n`` alone."""
    r = role(n)
    if r == "view":
        return "view" if n.op in ALIAS_OPS else "pointwise"
    return r


def _one(d: Dim) -> bool:
    return isinstance(d, int) and d == 1


def same_shape(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    return len(a) == len(b) and all(dims_equal(x, y) for x, y in zip(a, b))


def reduction_domain(n: Node) -> tuple[tuple[Dim, ...], frozenset[int]]:
    """(F, R): the shape a reducing node reads and the dims it reduces."""
    f = n.inputs[0].type.shape
    r = len(f)
    if r == 0:
        return f, frozenset()
    if n.op in (Op.ARGMAX, Op.ARGMIN):
        d = n.attrs["dim"]
        return f, frozenset(range(r)) if d is None else frozenset({normalize_axis(d, r)})
    if n.op.family is Family.REDUCE:
        dims = n.attrs["dims"]
        return f, frozenset(range(r)) if not dims else frozenset(normalize_axis(d, r) for d in dims)
    if n.op in (Op.SOFTMAX, Op.LOG_SOFTMAX):
        return f, frozenset({normalize_axis(n.attrs["dim"], r)})
    k = len(n.attrs["normalized_shape"])
    return f, frozenset(range(r - k, r))


def _order(nodes: Sequence[Node]) -> tuple[set[Node], dict[Node, set[Node]]]:
    members = set(nodes)
    deps: dict[Node, set[Node]] = {}  # in-group ancestors of each node
    for n in nodes:
        d: set[Node] = set()
        for v in n.inputs:
            if v.node in members:
                d.add(v.node)
                d |= deps[v.node]
        deps[n] = d
    return members, deps


# Note: GPU matmul epilogues
# On the Triton target an epilogue runs on the whole accumulator tile held in registers (64 to
# 128 values a thread); an op whose Triton form is a long formula (tanh from expm1's polynomial,
# the general pow, the inverse trigonometric functions: [Note: Triton math without libdevice])
# keeps several tile-sized temporaries alive and spills. Measured on an H200 (2026-12-02):
# GPT-2's tanh GELU in the epilogue of its MLP matmul made GPT-2 small 2.6x slower than with
# the GELU as a point-wise kernel of its own. So there those ops stay out of matmul and
# convolution epilogues; the C target, whose epilogue runs on a register block, keeps them.
LONG_ON_GPU = frozenset({Op.TANH, Op.SINH, Op.COSH, Op.TAN, Op.ASIN, Op.ACOS, Op.ATAN, Op.ASINH,
                         Op.ACOSH, Op.ATANH, Op.EXPM1, Op.LOG1P, Op.POW, Op.FMOD, Op.REMAINDER,
                         Op.ATAN2, Op.ERFINV, Op.SOFTPLUS, Op.ELU})


def long_on_gpu(n: Node) -> bool:
    return n.op in LONG_ON_GPU or (n.op is Op.GELU and n.attrs.get("approximate") == "tanh")


def classify(nodes: Sequence[Node], outputs: Sequence[Value], gpu: bool = False) -> str | Reject:
    """The kernel kind of ``nodes`` (in topological order) writing ``outputs``, or why none;
    ``gpu``: for the Triton target ([Note: GPU matmul epilogues])."""
    if len(nodes) == 1:
        return solo_kind(nodes[0])
    roles = {n: role(n) for n in nodes}
    for n, r in roles.items():
        if r in ("op", "extern"):
            return Reject(f"{n.op} runs as a kernel of its own ({r} kind)")
    members, deps = _order(nodes)
    anchors = [n for n in nodes if roles[n] not in ("pointwise", "view")]
    heavy = [n for n in anchors if roles[n] in ("matmul", "conv")]
    reducing = [n for n in anchors if roles[n] == "reduction"]
    if not anchors:
        shapes = [v.type.shape for v in outputs]
        if any(not same_shape(s, shapes[0]) for s in shapes):
            return Reject("pointwise outputs of different shapes")
        return "pointwise"
    if heavy and reducing:
        h, r = heavy[0], reducing[0]
        if h in deps[r]:
            return Reject(f"a {h.op} epilogue cannot hold a reduction (kind rule)")
        if r in deps[h]:
            return Reject(f"a reduction cannot feed a {h.op} prologue (kind rule)")
        return Reject(f"a kernel holds a {h.op} or reductions, not both (kind rule)")
    if len(heavy) > 1:
        return Reject(f"a kernel holds one matmul or convolution, not {heavy[0].op} and {heavy[1].op}")
    if heavy:
        long = next((n for n in nodes if gpu and heavy[0] in deps[n] and long_on_gpu(n)), None)
        if long is not None:
            return Reject(f"a {heavy[0].op} epilogue on the GPU holds no {long.op}: a long formula over "
                          f"the whole accumulator tile spills registers")
        return _check_heavy(heavy[0], nodes, roles, deps, outputs)
    return _check_reduction(reducing, nodes, roles, deps, outputs)


def _check_heavy(h: Node, nodes: Sequence[Node], roles: dict[Node, str],
                 deps: dict[Node, set[Node]], outputs: Sequence[Value]) -> str | Reject:
    kind = roles[h]
    shape = h.outputs[0].type.shape
    for a in deps[h]:
        if kind == "conv" and not is_trivial_reshape(a):
            return Reject(f"a convolution reads kernel inputs directly, not {a.op} (kind rule)")
        if roles[a] != "view":
            return Reject(f"only views may feed a {h.op} operand, not {a.op} (kind rule)")
    for n in nodes:
        if h in deps[n]:
            if roles[n] != "pointwise" and not is_trivial_reshape(n):
                what = (f"a {n.op} beyond size-1 dims" if n.op in ALIAS_OPS else str(n.op))
                return Reject(f"a {h.op} epilogue holds pointwise nodes and trivial reshapes, "
                              f"not {what} (kind rule)")
            # every carried value has the output's shape up to 1s, so broadcasting one keeps
            # its non-1 dims in order: it is read at its own index
            if not same_up_to_ones(n.outputs[0].type.shape, shape):
                return Reject(f"the epilogue {n.op} changes the {h.op} output shape")
    for v in outputs:
        if not same_up_to_ones(v.type.shape, shape):
            return Reject(f"an output of {v.type} is not of the {h.op} output shape")
    return kind


def _check_reduction(reducing: Sequence[Node], nodes: Sequence[Node], roles: dict[Node, str],
                     deps: dict[Node, set[Node]], outputs: Sequence[Value]) -> str | Reject:
    f, r = reduction_domain(reducing[0])
    for n in reducing[1:]:
        f2, r2 = reduction_domain(n)
        if not same_shape(f, f2) or r != r2:
            return Reject(f"{reducing[0].op} and {n.op} reduce different domains")
    removed = tuple(d for i, d in enumerate(f) if i not in r)
    # F's kept (not reduced) dims, as positions among F's non-1 dims
    f_nz = [i for i, d in enumerate(f) if not _one(d)]
    kept = [i for i in f_nz if i not in r]

    def level(s: Sequence[Dim]) -> str | None:  # "full": F; "outer": F reduced; up to 1s
        return ("full" if same_up_to_ones(s, f) else "outer" if same_up_to_ones(s, removed)
                else None)

    def lines_up(s: Sequence[Dim], o: Sequence[Dim]) -> bool:
        """An outer value of shape ``s`` broadcast to a full one of shape ``o`` lands on F's
        kept dims, in order: it is read at its own outer index."""
        to_f = dict(zip([k for k, d in enumerate(o) if not _one(d)], f_nz))
        off = len(o) - len(s)
        return [to_f.get(k + off) for k, d in enumerate(s) if not _one(d)] == kept

    carriers = {n for n in nodes if any(d in reducing for d in deps[n]) or n in reducing}
    for n in nodes:
        if n in reducing or not carriers & deps[n]:
            continue
        if is_trivial_reshape(n):
            continue  # keeps the element order, and the level of what it carries
        out = n.outputs[0].type.shape
        if roles[n] != "pointwise":
            return Reject(f"a reduction result cannot pass through {n.op} inside the kernel")
        have = level(out)
        if have is None:
            return Reject(f"{n.op} broadcasts a reduction result to {list(out)}")
        for v in n.inputs:
            if v.node not in carriers or same_shape(v.type.shape, out):
                continue
            # within one level, broadcasting keeps the non-1 dims in order: the same index
            was = level(v.type.shape)
            if was != have and not (was == "outer" and lines_up(v.type.shape, out)):
                return Reject(f"{n.op} moves a reduction result off its outer index")
    for n in reducing:
        if n.inputs[0].node in carriers and not same_shape(n.inputs[0].type.shape, f):
            return Reject(f"{n.op} reads a reduction result of another shape")
    for v in outputs:
        if level(v.type.shape) is None:
            return Reject(f"an output of {v.type} is outside the reduction domain {list(f)}")
    return "reduction"
