"""The graph builder behind ``tests.strategies.graphs`` and its elementwise generators.

A generator adds one small, well-typed piece to the graph being built: it draws an op whose
rule accepts the operands at hand, builds it with ``GraphBuilder``, and records the result in
the pool that later generators draw their operands from. A generator that finds nothing it can
apply raises ``Skip``; the builder then rolls the graph back to where it was and draws another.

[Note: safe values] Every value in the pool carries an upper bound on its magnitude. Inputs
lie in [-2, 2]; each generator propagates the bound and is skipped when the result could grow
past ``LIMIT`` (``F16_LIMIT`` in half precision), so that no output overflows. Ops with a
restricted domain get an input that lies in it by construction: ``log(abs(x) + 1)``,
``exp(clamp(x, -4, 4))``, ``asin(tanh(x) * 0.5)``. Sizes are bounded through the symbols'
range [MIN_SIZE, MAX_SIZE]: every size expression we build grows with each symbol, so its
smallest and largest values are those at the ends of that range.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from hypothesis import strategies as st

from effc.ir import DType, GraphBuilder, Op, ShapeError, TensorType, Value, broadcast_shapes, size_symbol
from effc.ir.types import Dim

MIN_SIZE, MAX_SIZE = 2, 5      # the values a size symbol takes when a graph is run
LIMIT, F16_LIMIT = 1e4, 1e3    # largest magnitude a value may reach [Note: safe values]
MAX_NUMEL = 4096
MAX_RANK = 4
END = 2**63 - 1                # what torch passes for an open-ended slice (sys.maxsize)
SYMBOLS = (size_symbol("s0"), size_symbol("s1"))
HEAVY = (DType.F32, DType.F64)  # what matmul, convolution, norms and reductions get on CPU
HALF = (DType.F16, DType.BF16)


class Skip(Exception):
    """The generator does not apply to what it drew."""


def hi(d: Dim) -> int:
    return d if isinstance(d, int) else int(d.subs({s: MAX_SIZE for s in d.free_symbols}))


def lo(d: Dim) -> int:
    return d if isinstance(d, int) else int(d.subs({s: MIN_SIZE for s in d.free_symbols}))


def numel_hi(shape: Sequence[Dim]) -> int:
    return math.prod(hi(d) for d in shape)


def broadcasts(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    try:
        broadcast_shapes(tuple(a), tuple(b))
    except ShapeError:
        return False
    return True


class Builder:
    """A GraphBuilder plus the pool of values built so far, their bounds, and the draw."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any], symbolic: bool,
                 dtypes: Sequence[DType], seed: int, max_nodes: int) -> None:
        self.draw, self.symbolic, self.dtypes, self.max_nodes = draw, symbolic, tuple(dtypes), max_nodes
        self.b = GraphBuilder()
        self.gen = torch.Generator().manual_seed(seed)
        self.pool: list[Value] = []
        self.bound: dict[Value, float] = {}

    # -- drawing -----------------------------------------------------------------------------
    def choice(self, seq: Sequence[Any]) -> Any:
        if not seq:
            raise Skip("nothing to choose from")
        return self.draw(st.sampled_from(list(seq)))

    def int(self, a: int, b: int) -> int:
        if b < a:
            raise Skip(f"empty range [{a}, {b}]")
        return self.draw(st.integers(a, b))

    def flip(self) -> bool:
        return self.draw(st.booleans())

    def dim(self, symbolic: bool | None = None) -> Dim:
        if (self.symbolic if symbolic is None else symbolic) and self.int(0, 2) == 0:
            return self.choice(SYMBOLS)
        return self.int(1, 4)

    # -- the pool ----------------------------------------------------------------------------
    def add(self, v: Value, bound: float) -> Value:
        limit = F16_LIMIT if v.type.dtype in HALF else LIMIT
        if v.type.dtype.is_float and not bound <= limit:
            raise Skip(f"{v.type} could reach {bound:.3g}")
        if numel_hi(v.type.shape) > MAX_NUMEL or v.type.rank > MAX_RANK:
            raise Skip(f"{v.type} is too big")
        self.pool.append(v)
        self.bound[v] = bound
        return v

    def emit(self, op: Op, inputs: Sequence[Value], bound: float, **attrs: Any) -> Value:
        return self.add(self.b.op(op, list(inputs), **attrs), bound)

    def values(self, dtypes: Sequence[DType] | None = None, min_rank: int = 0,
               max_rank: int = MAX_RANK, pred: Callable[[TensorType], bool] | None = None) -> list[Value]:
        return [v for v in self.pool
                if (dtypes is None or v.type.dtype in dtypes) and min_rank <= v.type.rank <= max_rank
                and (pred is None or pred(v.type))]

    def floats(self, heavy: bool = False, **kw: Any) -> list[Value]:
        return self.values(HEAVY if heavy else (DType.F64, DType.F32, DType.F16, DType.BF16), **kw)

    def pick(self, heavy: bool = False, **kw: Any) -> Value:
        return self.choice(self.floats(heavy, **kw))

    # -- leaves ------------------------------------------------------------------------------
    def input(self, shape: Sequence[Dim], dtype: DType | None = None) -> Value:
        dt = dtype or self.choice(self.dtypes)
        return self.add(self.b.input("x", TensorType(dt, tuple(shape))), 2.0)

    def const(self, shape: Sequence[int], low: float = -1.0, high: float = 1.0,
              dtype: DType = DType.F32, name: str = "w") -> Value:
        if not all(isinstance(d, int) for d in shape):
            raise Skip("constants are static")
        t = torch.rand(tuple(shape), generator=self.gen, dtype=torch.float64) * (high - low) + low
        t = t.to(dtype.to_torch())
        return self.add(self.b.constant(t, name), float(t.abs().max()) if t.numel() else 0.0)

    def indices(self, shape: Sequence[int], high: int) -> Value:
        t = torch.randint(0, high, tuple(shape), generator=self.gen, dtype=torch.int64)
        return self.add(self.b.constant(t, "idx"), float(high))

    def scalar(self, value: float, dtype: DType = DType.F32) -> Value:
        return self.add(self.b.scalar(value, dtype), abs(value))

    # -- running generators --------------------------------------------------------------------
    def attempt(self, gen: Callable[["Builder"], Any]) -> bool:
        """Run one generator; on Skip (or a ShapeError it did not foresee) undo all it added."""
        mark = (len(self.b.nodes), len(self.b.inputs), set(self.b.constants), len(self.pool))
        try:
            gen(self)
            if len(self.b.nodes) > self.max_nodes:
                raise Skip("over the node budget")
            return True
        except (Skip, ShapeError):
            del self.b.nodes[mark[0]:]
            del self.b.inputs[mark[1]:]
            for k in set(self.b.constants) - mark[2]:
                del self.b.constants[k]
            for v in self.pool[mark[3]:]:
                del self.bound[v]
            del self.pool[mark[3]:]
            return False


# -- operands --------------------------------------------------------------------------------

def partner_shape(s: Builder, shape: Sequence[Dim]) -> tuple[Dim, ...]:
    """A shape that broadcasts with ``shape``: leading axes dropped, axes set to 1, size-1 axes
    widened, or a new leading axis."""
    out = list(shape[s.int(0, len(shape)):])
    for i, d in enumerate(out):
        c = s.int(0, 3)
        if c == 0:
            out[i] = 1
        elif c == 1 and isinstance(d, int) and d == 1:
            out[i] = s.choice((2, 3))
    if len(out) == len(shape) < MAX_RANK and s.int(0, 3) == 0:
        out.insert(0, s.choice((2, 3)))
    return tuple(out)


def partner(s: Builder, x: Value) -> Value:
    """A float operand that broadcasts with ``x``."""
    kind = s.choice(("scalar", "const", "input", "pool", "same"))
    if kind == "scalar":
        return s.scalar(s.choice((0.5, -1.5, 2.0)), s.choice((DType.F32, DType.F64)))
    if kind == "same":
        return x
    if kind == "pool":
        return s.choice([v for v in s.floats() if v is not x and broadcasts(v.type.shape, x.type.shape)])
    shape = partner_shape(s, x.type.shape)
    if kind == "const":
        return s.const([d if isinstance(d, int) else 1 for d in shape], dtype=x.type.dtype)
    return s.input(shape, x.type.dtype)


def positive(s: Builder, x: Value, offset: float = 1.0) -> Value:
    """abs(x) + offset: an operand for ops defined on [offset, inf)."""
    a = s.emit(Op.ABS, [x], s.bound[x])
    return s.emit(Op.ADD, [a, s.scalar(offset)], s.bound[x] + offset)


# -- elementwise generators ------------------------------------------------------------------

_BOUNDED = {Op.TANH: 1.0, Op.SIGMOID: 1.0, Op.SIN: 1.0, Op.COS: 1.0, Op.ATAN: 1.6, Op.ERF: 1.0,
            Op.HARDSIGMOID: 1.0}
_LINEAR = (Op.NEG, Op.ABS, Op.RELU, Op.SILU, Op.HARDSWISH, Op.FLOOR, Op.CEIL, Op.ROUND,
           Op.TRUNC, Op.SIGN)
_ATTRS: dict[Op, dict[str, Any]] = {
    Op.GELU: {"approximate": "none"}, Op.HARDTANH: {"min_val": -1.0, "max_val": 1.0},
    Op.LEAKY_RELU: {"negative_slope": 0.2}, Op.SOFTPLUS: {"beta": 1.0, "threshold": 20.0},
    Op.ELU: {"alpha": 1.0, "scale": 1.0, "input_scale": 1.0},
}
_POSITIVE = (Op.LOG, Op.LOG2, Op.LOG10, Op.LOG1P, Op.SQRT, Op.RSQRT, Op.RECIPROCAL, Op.ACOSH)
_GROWING = (Op.EXP, Op.EXP2, Op.EXPM1, Op.SINH, Op.COSH)
_UNIT = (Op.ASIN, Op.ACOS, Op.ATANH, Op.ERFINV)


def unary(s: Builder) -> None:
    x = s.pick()
    b = s.bound[x]
    op = s.choice((*_LINEAR, *_BOUNDED, *_ATTRS, *_POSITIVE, *_GROWING, *_UNIT))
    if op in _BOUNDED:
        s.emit(op, [x], _BOUNDED[op])
    elif op in _ATTRS:
        attrs = dict(_ATTRS[op])
        if op is Op.GELU:
            attrs["approximate"] = s.choice(("none", "tanh"))
        s.emit(op, [x], b + 1.0, **attrs)
    elif op in _POSITIVE:  # acosh is steep at 1, so it starts at 2
        p = positive(s, x, 2.0 if op is Op.ACOSH else 1.0)
        s.emit(op, [p], 1.0 if op in (Op.RSQRT, Op.RECIPROCAL) else b + 2.0)
    elif op in _GROWING:
        c = s.emit(Op.CLAMP, [x], 4.0, min=-4.0, max=4.0)
        s.emit(op, [c], 60.0)
    elif op in _UNIT:
        t = s.emit(Op.MUL, [s.emit(Op.TANH, [x], 1.0), s.scalar(0.5)], 0.5)
        s.emit(op, [t], 3.2)
    else:
        s.emit(op, [x], b + 1.0)


_ARITH = (Op.ADD, Op.SUB, Op.MUL, Op.MAXIMUM, Op.MINIMUM, Op.DIV, Op.ATAN2, Op.POW)


def binary(s: Builder) -> None:
    x = s.pick()
    op = s.choice(_ARITH)
    y = partner(s, x)
    if s.flip():
        x, y = y, x
    bx, by = s.bound[x], s.bound[y]
    if op is Op.DIV:
        s.emit(op, [x, positive(s, y)], bx, rounding_mode=None)
    elif op is Op.POW:
        e = s.choice((0.5, 2.0, 3.0))
        s.emit(op, [positive(s, x), s.scalar(e)], (bx + 1.0) ** e)
    elif op is Op.ATAN2:
        s.emit(op, [x, y], 3.2)
    else:
        s.emit(op, [x, y], bx * by if op is Op.MUL else bx + by)


def compare(s: Builder) -> None:
    """A comparison, then where / a logical op / a cast of its bool result."""
    x = s.pick()
    y = partner(s, x)
    c = s.emit(s.choice((Op.LT, Op.LE, Op.GT, Op.GE, Op.NE, Op.EQ)), [x, y], 1.0)
    then = s.choice(("where", "where", "cast", "logic", "none"))
    if then == "where":
        z = s.choice((x, y, partner(s, x)))
        s.emit(Op.WHERE, [c, x, z] if s.flip() else [c, z, x], max(s.bound[x], s.bound[z]))
    elif then == "cast":
        s.emit(Op.CAST, [c], 1.0, dtype=s.choice((DType.F32, DType.F64)))
    elif then == "logic":
        others = [v for v in s.values((DType.BOOL,)) if broadcasts(v.type.shape, c.type.shape)]
        d = s.choice(others)
        op = s.choice((Op.LOGICAL_AND, Op.LOGICAL_OR, Op.LOGICAL_XOR, Op.LOGICAL_NOT))
        s.emit(op, [c] if op is Op.LOGICAL_NOT else [c, d], 1.0)


def cast(s: Builder) -> None:
    x = s.choice(s.values())
    dt, b = x.type.dtype, s.bound[x]
    targets = [DType.F32, DType.F64] + ([DType.F16] if b <= F16_LIMIT else [])
    s.emit(Op.CAST, [x], b, dtype=s.choice([t for t in targets if t is not dt]))


def clamp(s: Builder) -> None:
    x = s.pick()
    lo_, hi_ = s.choice(((-1.0, 1.0), (None, 0.5), (-0.5, None), (0.0, 2.0)))
    s.emit(Op.CLAMP, [x], s.bound[x], min=lo_, max=hi_)


def scalars(s: Builder) -> None:
    """Arithmetic on rank-0 ``full`` scalars only: a constant subgraph for fold_constants."""
    a = s.scalar(s.choice((1.5, -2.0, 0.25)))
    b = s.scalar(s.choice((3.0, 0.5)), s.choice((DType.F32, DType.F64)))
    c = s.emit(s.choice((Op.ADD, Op.MUL, Op.SUB)), [a, b], 6.0)
    x = s.pick()
    s.emit(s.choice((Op.ADD, Op.MUL)), [x, c], 6.0 * s.bound[x] + 6.0)


ELEMENTWISE = (unary, unary, binary, binary, compare, cast, clamp, scalars)
