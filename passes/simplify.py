"""Algebraic simplification: a table of local rewrite rules, applied to a fixed point.

    %0 = full() {shape=[], value=1.0, dtype=f32} : f32[]
    %1 = mul(%x, %0) : f32[4, 8]
    %2 = permute(%1) {dims=[1, 0]} : f32[8, 4]
    %3 = permute(%2) {dims=[1, 0]} : f32[4, 8]
    return %3
  ->
    return %x

Each rule looks at one node (its inputs already rewritten) and returns a replacement value, a
reason it declined (a near miss, reported in ``rejected``), or None (the pattern does not
apply). A replacement must have exactly the node's type; rules that could change the shape or
dtype through broadcasting or promotion decline instead. Rules never trade exactness for speed:
``x * 0 -> 0`` is deliberately absent (x may be NaN or inf).

Nodes a rewrite leaves without users (the ``0`` of ``x + 0``, an inner cast) are dropped;
nodes that were dead before the pass stay for ``eliminate_dead_code`` to remove and report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from effc.ir import DType, Graph, GraphBuilder, Node, Op, Value
from effc.ir.ops import Family
from effc.ir.rewrite import Rewriter
from effc.ir.types import TensorType, dims_equal, normalize_axis
from effc.options import Options

from .manager import PassResult

NAME = "simplify"

# A graph rarely needs more than two sweeps (one to rewrite, one to confirm); the bound only
# guards against a pair of rules that undo each other.
MAX_SWEEPS = 32


@dataclass(frozen=True)
class Site:
    """The node a rule is asked about: its source node and its inputs in the new graph."""

    node: Node
    ins: tuple[Value, ...]
    b: GraphBuilder
    uses: Mapping[Value, int]  # uses of each value of the graph being rewritten

    def sole_use(self, i: int) -> bool:
        """Whether input ``i`` is used by this node only (so absorbing its producer
        duplicates no work)."""
        v = self.node.inputs[i]
        return self.uses.get(v, 0) == 1 and v not in self.graph_outputs

    @property
    def graph_outputs(self) -> frozenset[Value]:
        return self.uses.get("outputs", frozenset())  # type: ignore[call-overload, return-value]

    @property
    def out(self) -> TensorType:
        return self.node.outputs[0].type

    @property
    def attrs(self) -> Mapping[str, Any]:
        return self.node.attrs


RuleFn = Callable[[Site], "Value | str | None"]


@dataclass(frozen=True)
class Rule:
    name: str
    ops: frozenset[Op]
    fn: RuleFn


# -- helpers ---------------------------------------------------------------------------------

def _producer(v: Value, op: Op) -> Node | None:
    return v.node if v.node is not None and v.node.op is op else None


def _uniform(s: Site, v: Value) -> bool | int | float | None:
    """The one value every element of ``v`` holds, when ``v`` is a full node or a constant."""
    n = v.node
    if n is None:
        return None
    if n.op is Op.FULL:
        value = n.attrs["value"]
        return value if isinstance(value, (bool, int, float)) else None
    if n.op is Op.CONSTANT:
        t = s.b.constants[n.attrs["name"]].reshape(-1)
        # The first pair settles most weights cheaply; NaN never equals itself, so gives None.
        if t.numel() == 0 or (t.numel() > 1 and bool(t[1] != t[0])) or not bool((t == t[0]).all()):
            return None
        return t[0].item()
    return None


def _identity_operand(s: Site, const_at: int, identity: int) -> Value | str | None:
    """``x`` when input ``const_at`` is filled with ``identity`` and ``x`` has the node's type."""
    c, x = s.ins[const_at], s.ins[1 - const_at]
    value = _uniform(s, c)
    if value is None or value != identity:
        return None
    if x.type.dtype is not s.out.dtype:
        return (f"type promotion with the {identity} operand ({c.type}) makes the result "
                f"{s.out}, not x's {x.type}")
    if not x.type.same_as(s.out):
        return (f"broadcasting against the {identity} operand ({c.type}) makes the result "
                f"{s.out}, not x's {x.type}")
    return x


def _perm(dims: Sequence[int], rank: int) -> list[int]:
    return [normalize_axis(d, rank) for d in dims]


# Which casts keep every value exactly (so a later cast sees the original value). Integer
# ranges and float significand bits (including the implicit bit) decide it.
_INT_RANGE = {DType.BOOL: (0, 1), DType.U8: (0, 255), DType.I8: (-2**7, 2**7 - 1),
              DType.I16: (-2**15, 2**15 - 1), DType.I32: (-2**31, 2**31 - 1),
              DType.I64: (-2**63, 2**63 - 1)}
_SIGNIFICAND = {DType.F16: 11, DType.BF16: 8, DType.F32: 24, DType.F64: 53}
_FLOAT_WIDENING = {(DType.F16, DType.F32), (DType.F16, DType.F64), (DType.BF16, DType.F32),
                   (DType.BF16, DType.F64), (DType.F32, DType.F64)}


def exact_cast(src: DType, dst: DType) -> bool:
    if src is dst:
        return True
    if src in _INT_RANGE and dst in _INT_RANGE:
        (lo, hi), (dlo, dhi) = _INT_RANGE[src], _INT_RANGE[dst]
        return dst is not DType.BOOL and dlo <= lo and hi <= dhi
    if src in _INT_RANGE and dst in _SIGNIFICAND:
        lo, hi = _INT_RANGE[src]
        return max(-lo, hi) <= 1 << _SIGNIFICAND[dst]
    return (src, dst) in _FLOAT_WIDENING


# -- rules -----------------------------------------------------------------------------------

def _add_zero_right(s: Site) -> Value | str | None:
    # x + 0 -> x   (only the sign of a zero x can differ: -0 + 0 = +0)
    return _identity_operand(s, 1, 0)


def _add_zero_left(s: Site) -> Value | str | None:
    # 0 + x -> x
    return _identity_operand(s, 0, 0)


def _sub_zero(s: Site) -> Value | str | None:
    # x - 0 -> x
    return _identity_operand(s, 1, 0)


def _mul_one_right(s: Site) -> Value | str | None:
    # x * 1 -> x
    return _identity_operand(s, 1, 1)


def _mul_one_left(s: Site) -> Value | str | None:
    # 1 * x -> x
    return _identity_operand(s, 0, 1)


def _div_one(s: Site) -> Value | str | None:
    # x / 1 -> x   (a rounding division of floats would round x: floor(x / 1) != x)
    found = _identity_operand(s, 1, 1)
    if isinstance(found, Value) and s.attrs["rounding_mode"] is not None and s.out.dtype.is_float:
        return f"division with rounding_mode={s.attrs['rounding_mode']} rounds a float x"
    return found


def _neg_neg(s: Site) -> Value | str | None:
    # neg(neg(x)) -> x
    inner = _producer(s.ins[0], Op.NEG)
    return inner.inputs[0] if inner is not None else None


def _cast_same(s: Site) -> Value | str | None:
    # cast(x, dtype(x)) -> x
    return s.ins[0] if s.ins[0].type.dtype is s.attrs["dtype"] else None


def _cast_cast(s: Site) -> Value | str | None:
    # cast(cast(x, a), dtype(x)) -> x            when x -> a is exact
    # cast(cast(x, a), b) -> cast(x, b)          when x -> a is exact: b sees x's own value
    inner = _producer(s.ins[0], Op.CAST)
    if inner is None:
        return None
    x, a, b = inner.inputs[0], inner.attrs["dtype"], s.attrs["dtype"]
    if not exact_cast(x.type.dtype, a):
        return f"the inner cast {x.type.dtype} -> {a} is not exact, so it cannot be skipped"
    if b is x.type.dtype:
        return x
    if b.is_int and x.type.dtype.is_float:
        return (f"{x.type.dtype} -> {a} -> {b}: float-to-integer casts of out-of-range values "
                f"depend on the source type")
    return s.b.op(Op.CAST, [x], dtype=b)


def _permute_identity(s: Site) -> Value | str | None:
    # permute(x, [0, 1, ..., n-1]) -> x
    x = s.ins[0]
    return x if _perm(s.attrs["dims"], x.type.rank) == list(range(x.type.rank)) else None


def _permute_permute(s: Site) -> Value | str | None:
    # permute(permute(x, p), q) -> permute(x, [p[i] for i in q])   (-> x when the identity)
    inner = _producer(s.ins[0], Op.PERMUTE)
    if inner is None:
        return None
    x = inner.inputs[0]
    p, q = _perm(inner.attrs["dims"], x.type.rank), _perm(s.attrs["dims"], x.type.rank)
    composed = [p[i] for i in q]
    if composed == list(range(x.type.rank)):
        return x
    return s.b.op(Op.PERMUTE, [x], dims=composed)


def _reshape_reshape(s: Site) -> Value | str | None:
    # reshape(reshape(x, s1), s2) -> reshape(x, s2)   (-1 resolves the same: equal numel)
    inner = _producer(s.ins[0], Op.RESHAPE)
    if inner is None:
        return None
    x = inner.inputs[0]
    return x if x.type.same_as(s.out) else s.b.op(Op.RESHAPE, [x], shape=s.attrs["shape"])


def _layout_noop(s: Site) -> Value | str | None:
    # reshape(x, shape(x)) -> x;  expand(x, shape(x)) -> x;  cat([x]) -> x;
    # slice(x, d, 0, size, 1) -> x   (a slice as long as its axis, with step >= 1, takes all of it)
    if s.node.op is Op.CAT and len(s.ins) != 1:
        return None
    return s.ins[0] if s.ins[0].type.same_as(s.out) else None


def _squeeze_unsqueeze(s: Site) -> Value | str | None:
    # squeeze(unsqueeze(x, d), [d]) -> x   (both keep element order: equal type means equal)
    inner = _producer(s.ins[0], Op.UNSQUEEZE)
    if inner is None:
        return None
    x = inner.inputs[0]
    return x if x.type.same_as(s.out) else None


def _unsqueeze_squeeze(s: Site) -> Value | str | None:
    # unsqueeze(squeeze(x, dims), d) -> x   when the squeeze removed exactly axis d
    inner = _producer(s.ins[0], Op.SQUEEZE)
    if inner is None:
        return None
    x = inner.inputs[0]
    if not x.type.same_as(s.out):
        return None
    dims = _perm(inner.attrs["dims"], x.type.rank) if x.type.rank else []
    symbolic = [x.type.shape[d] for d in dims if not isinstance(x.type.shape[d], int)]
    if symbolic:
        return (f"the squeeze also names axes of symbolic size {symbolic}, which torch drops "
                f"when they are 1 at run time")
    return x


def _matmul_bias(s: Site) -> Value | str | None:
    # matmul(x, w) + b -> addmm(b, x, w)   for 2-D x and w, b broadcasting over rows, one dtype
    # (ONNX's Gemm arrives as mm + add; torch.compile's linear as addmm: one vocabulary)
    for mm_at in (0, 1):
        inner = _producer(s.ins[mm_at], Op.MATMUL)
        if inner is None:
            continue
        bias = s.ins[1 - mm_at]
        x, w = inner.inputs
        if x.type.rank != 2 or w.type.rank != 2 or bias.type.rank not in (1, 2):
            return None
        if len({x.type.dtype, w.type.dtype, bias.type.dtype, s.out.dtype}) != 1 or not s.out.dtype.is_float:
            return None
        if bias.type.rank == 2 and bias.type.shape[0] != 1:
            return None
        if not s.sole_use(mm_at):
            return "the matmul has other users"
        return s.b.op(Op.ADDMM, [bias, x, w], beta=1, alpha=1)
    return None


def _pow_scalar(s: Site) -> Value | str | None:
    # pow(x, 2) -> x * x,  pow(x, 3) -> x * x * x,  pow(x, 0.5) -> sqrt(x)
    # exactly as eager computes a tensor to these scalar powers (ATen's pow_tensor_scalar
    # special cases), and without a pow call a code generator cannot vectorise
    x, e = s.ins
    value = _uniform(s, e)
    if value not in (2, 3, 0.5) or isinstance(value, bool) or e.type.rank != 0:
        return None
    if not x.type.same_as(s.out) or s.out.dtype not in (DType.F32, DType.F64):
        # half precision: eager rounds pow once, a product of halves twice
        return "only float32/float64 x of the result's own type"
    if value == 0.5:
        return s.b.op(Op.SQRT, [x])
    sq = s.b.op(Op.MUL, [x, x])
    return sq if value == 2 else s.b.op(Op.MUL, [sq, x])


_POINTWISE = (Family.UNARY, Family.BINARY, Family.COMPARE, Family.TERNARY, Family.CAST)


def _sink_reshape(s: Site) -> Value | str | None:
    # f(reshape(x), y, ...) -> reshape(f(x, y', ...))   for point-wise f and a reshape that only
    # regroups the leading axes (the last kept) of a matmul's result or of such a point-wise
    # chain; each other operand a rank-0 value, a row broadcast along the last axis, or a tensor
    # of the result's shape (y' = y viewed in x's shape). Element (m, n) of x meets the same
    # elements either way; the point-wise work lands next to the matmul, where fuse can make it
    # the epilogue (torch.compile's Linear on [B, S, K] is addmm on [B*S, K] and a reshape).
    if s.node.op.family not in _POINTWISE:
        return None
    out = s.out.shape
    at = next((i for i, v in enumerate(s.ins) if _regrouped(v, out)), None)
    if at is None:
        return None
    x = s.ins[at].node.inputs[0]   # type: ignore[union-attr]
    ins: list[Value] = []
    for i, v in enumerate(s.ins):
        if i == at:
            ins.append(x)
        elif v.type.rank == 0:
            ins.append(v)
        elif v.type.dtype is not x.type.dtype and not (s.node.op is Op.WHERE and i == 0):
            return None   # a broadcast operand of another dtype: promotion could depend on its rank
        elif all(_is_one(d) for d in v.type.shape[:-1]) and (_is_one(v.type.shape[-1])
                                                             or dims_equal(v.type.shape[-1], out[-1])):
            ins.append(v if v.type.rank <= x.type.rank else s.b.op(Op.RESHAPE, [v], shape=[v.type.shape[-1]]))
        elif len(v.type.shape) == len(out) and all(dims_equal(a, b) for a, b in zip(v.type.shape, out)):
            src = _producer(v, Op.RESHAPE)
            same = src is not None and src.inputs[0].type.shape == x.type.shape
            ins.append(src.inputs[0] if same else s.b.op(Op.RESHAPE, [v], shape=list(x.type.shape)))  # type: ignore[union-attr]
        else:
            return None
    inner = s.b.op(s.node.op, ins, **s.attrs)
    return s.b.op(Op.RESHAPE, [inner], shape=list(out))


def _regrouped(v: Value, out: Sequence[Any]) -> bool:
    """``v`` is a reshape to ``out`` of a matmul's (or a point-wise node's) result that keeps
    its last axis and regroups the ones before it."""
    r = _producer(v, Op.RESHAPE)
    if r is None or len(v.type.shape) != len(out) or not all(dims_equal(a, b) for a, b in zip(v.type.shape, out)):
        return False
    x = r.inputs[0]
    if x.node is None or x.node.op.family not in (Family.MATMUL, *_POINTWISE) or x.type.rank == 0 \
            or not dims_equal(x.type.shape[-1], out[-1]):
        return False
    return x.type.dtype is v.type.dtype


def _is_one(d: Any) -> bool:
    return isinstance(d, int) and d == 1


def _rule(name: str, ops: Sequence[Op], fn: RuleFn) -> Rule:
    return Rule(name, frozenset(ops), fn)


# The table. Order matters only where two rules match one node: the first that returns a
# replacement wins. The algebra of each rule is the comment at the top of its function.
RULES: tuple[Rule, ...] = (
    _rule("add_zero", [Op.ADD], _add_zero_right),        # x + 0 -> x
    _rule("zero_add", [Op.ADD], _add_zero_left),         # 0 + x -> x
    _rule("sub_zero", [Op.SUB], _sub_zero),              # x - 0 -> x
    _rule("mul_one", [Op.MUL], _mul_one_right),          # x * 1 -> x
    _rule("one_mul", [Op.MUL], _mul_one_left),           # 1 * x -> x
    _rule("div_one", [Op.DIV], _div_one),                # x / 1 -> x
    _rule("neg_neg", [Op.NEG], _neg_neg),                # neg(neg(x)) -> x
    _rule("cast_same", [Op.CAST], _cast_same),           # cast(x, dtype(x)) -> x
    _rule("cast_cast", [Op.CAST], _cast_cast),           # cast(cast(x, a), b) -> cast(x, b) or x
    # permute(x, [0, 1, ..., n-1]) -> x
    _rule("permute_identity", [Op.PERMUTE], _permute_identity),
    # permute(permute(x, p), q) -> permute(x, p∘q), or x when p∘q is the identity
    _rule("permute_permute", [Op.PERMUTE], _permute_permute),
    # reshape(reshape(x, s1), s2) -> reshape(x, s2)
    _rule("reshape_reshape", [Op.RESHAPE], _reshape_reshape),
    # reshape / expand / slice / cat([x]) giving x's own type -> x
    _rule("layout_noop", [Op.RESHAPE, Op.EXPAND, Op.SLICE, Op.CAT], _layout_noop),
    # squeeze(unsqueeze(x, d), [d]) -> x
    _rule("squeeze_unsqueeze", [Op.SQUEEZE], _squeeze_unsqueeze),
    # unsqueeze(squeeze(x, [d]), d) -> x
    _rule("unsqueeze_squeeze", [Op.UNSQUEEZE], _unsqueeze_squeeze),
    # matmul(x, w) + b -> addmm(b, x, w)
    _rule("matmul_bias", [Op.ADD], _matmul_bias),
    # pow(x, 2 | 3 | 0.5) -> x*x | x*x*x | sqrt(x)
    _rule("pow_scalar", [Op.POW], _pow_scalar),
    # f(reshape(matmul), ...) -> reshape(f(matmul, ...))   for point-wise f
    _rule("sink_reshape", [op for op in Op if op.family in _POINTWISE], _sink_reshape),
)
_BY_OP: dict[Op, tuple[Rule, ...]] = {
    op: tuple(r for r in RULES if op in r.ops) for op in set().union(*(r.ops for r in RULES))}


# -- the engine ------------------------------------------------------------------------------

def _sweep(graph: Graph, notes: list[str], rejected: dict[str, None]) -> Graph | None:
    """One pass over the nodes; the new graph, or None when no rule fired."""
    rw = Rewriter(graph)
    changed = False
    uses: dict[Any, Any] = {v: len(ns) for v, ns in graph.users().items()}
    uses["outputs"] = frozenset(graph.outputs)
    for node in graph.nodes:
        rules = _BY_OP.get(node.op, ()) if len(node.outputs) == 1 else ()
        site = Site(node, tuple(rw.map(node.inputs)), rw.b, uses)
        for rule in rules:
            found = rule.fn(site)
            if found is None:
                continue
            where = f"{rule.name} at {node.op} : {site.out}"
            if isinstance(found, str):
                rejected[f"{where}: {found}"] = None
                continue
            if not found.type.same_as(site.out):  # a rule bug; never let it change a type
                rejected[f"{where}: replacement has type {found.type}"] = None
                continue
            rw.replace(node.output, found)
            notes.append(where)
            changed = True
            break
        else:
            rw.copy(node, site.ins)
    return rw.finish_pruned() if changed else None


def run(graph: Graph, options: Options) -> PassResult:
    notes: list[str] = []
    rejected: dict[str, None] = {}  # ordered set: a near miss is seen again on every sweep
    current = graph
    for _ in range(MAX_SWEEPS):
        new = _sweep(current, notes, rejected)
        if new is None:
            break
        current = new
    return PassResult(current, current is not graph, tuple(notes), tuple(rejected))
