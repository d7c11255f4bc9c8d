"""One rule per op family: given input types and attributes, the output types.

A rule raises ShapeError for operands the op cannot take. Rules are the single source of
truth for types: the builder calls them when a node is made and the verifier calls them again
to check what a pass recorded.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import sympy

from .dtypes import DEFAULT_FLOAT, DType, result_type
from .ops import COMPARE, U_BOOL, U_FLOAT, Family, Op
from .types import Dim, ShapeError, TensorType, as_dim, broadcast_shapes, dims_equal, normalize_axis

Attrs = Mapping[str, Any]
Rule = Callable[[Op, Sequence[TensorType], Attrs], tuple[TensorType, ...]]

_BIG = 2**62  # slice ends at or past this mean "to the end" (torch passes sys.maxsize)


def infer(op: Op, inputs: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    """Output types of ``op`` applied to ``inputs``; raises ShapeError when ill-typed."""
    missing = [a for a in op.attr_names if a not in attrs]
    extra = [a for a in attrs if a not in op.attr_names]
    if missing or extra:
        raise ShapeError(f"{op}: missing attributes {missing}, unexpected {extra}")
    rule = _RULES.get(op) or _FAMILY_RULES.get(op.family)
    if rule is None:
        raise ShapeError(f"{op} has no shape rule")
    return rule(op, inputs, attrs)


def _arity(op: Op, inputs: Sequence[TensorType], *allowed: int) -> None:
    if len(inputs) not in allowed:
        raise ShapeError(f"{op} takes {' or '.join(map(str, allowed))} inputs, got {len(inputs)}")


def elementwise_dtype(inputs: Sequence[TensorType]) -> DType:
    dim = [t.dtype for t in inputs if t.rank > 0]
    zero = [t.dtype for t in inputs if t.rank == 0]
    return result_type(dim, zero)


def _unary(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 1)
    (x,) = ins
    if op in U_BOOL:
        return (x.with_dtype(DType.BOOL),)
    if op in U_FLOAT and not x.dtype.is_float:
        return (x.with_dtype(DEFAULT_FLOAT),)
    if op is Op.BITWISE_NOT and x.dtype.is_float:
        raise ShapeError("bitwise_not needs an integer or bool input")
    return (x,)


def _binary(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 2)
    shape = broadcast_shapes(*(t.shape for t in ins))
    if op in COMPARE:
        return (TensorType(DType.BOOL, shape),)
    dtype = elementwise_dtype(ins)
    if op in (Op.DIV, Op.ATAN2) and not dtype.is_float and not (
            op is Op.DIV and attrs.get("rounding_mode") is not None):
        dtype = DEFAULT_FLOAT
    if op is Op.SUB and any(t.dtype.is_bool for t in ins):
        raise ShapeError("sub does not take bool operands (torch refuses them)")
    if op in (Op.BITWISE_AND, Op.BITWISE_OR, Op.BITWISE_XOR) and dtype.is_float:
        raise ShapeError(f"{op} needs integer or bool inputs")
    if op is Op.DIV and attrs.get("rounding_mode") not in (None, "trunc", "floor"):
        raise ShapeError("div: rounding_mode must be none, 'trunc' or 'floor'")
    return (TensorType(dtype, shape),)


def _where(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 3)
    if ins[0].dtype is not DType.BOOL:
        raise ShapeError("where: the condition must be bool")
    shape = broadcast_shapes(*(t.shape for t in ins))
    return (TensorType(elementwise_dtype(ins[1:]), shape),)


def _cast(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 1)
    if not isinstance(attrs["dtype"], DType):
        raise ShapeError("cast: dtype attribute must be a dtype")
    return (ins[0].with_dtype(attrs["dtype"]),)


def _reduced_shape(x: TensorType, dims: Sequence[int] | None, keepdim: bool) -> tuple[Dim, ...]:
    axes = set(range(x.rank)) if not dims else {normalize_axis(d, x.rank) for d in dims}
    if dims and len(axes) != len(dims):
        raise ShapeError(f"repeated reduction axis in {list(dims)}")
    if x.rank == 0:
        return ()
    return tuple((1 if keepdim else None) if i in axes else d
                 for i, d in enumerate(x.shape) if keepdim or i not in axes)  # type: ignore[misc]


def _reduce(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 1)
    (x,) = ins
    if op in (Op.ARGMAX, Op.ARGMIN):
        dim = attrs["dim"]
        shape = _reduced_shape(x, None if dim is None else [dim], attrs["keepdim"])
        if dim is None and attrs["keepdim"]:
            shape = tuple(1 for _ in x.shape)
        return (TensorType(DType.I64, shape),)
    shape = _reduced_shape(x, attrs["dims"], attrs["keepdim"])
    if op in (Op.ANY, Op.ALL):
        return (TensorType(DType.BOOL, shape),)
    if op in (Op.SUM, Op.PROD):
        dtype = attrs.get("dtype") or (x.dtype if x.dtype.is_float else DType.I64)
        return (TensorType(dtype, shape),)
    if op in (Op.MEAN, Op.VAR, Op.STD) and not x.dtype.is_float:
        raise ShapeError(f"{op} needs a floating-point input, got {x.dtype}")
    return (TensorType(x.dtype, shape),)


def _cumsum(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 1)
    (x,) = ins
    normalize_axis(attrs["dim"], x.rank)
    dtype = attrs["dtype"] or (x.dtype if x.dtype.is_float else DType.I64)
    return (x.with_dtype(dtype),)


def _matmul_shape(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...]:
    if not a or not b:
        raise ShapeError("matmul operands must have rank >= 1")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if not dims_equal(a2[-1], b2[-2]):
        raise ShapeError(f"matmul contraction mismatch: {a2[-1]} vs {b2[-2]}")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = batch + ((a2[-2],) if len(a) > 1 else ()) + ((b2[-1],) if len(b) > 1 else ())
    return out


def _same_float(op: Op, ins: Sequence[TensorType]) -> DType:
    dts = {t.dtype for t in ins}
    if len(dts) != 1:
        raise ShapeError(f"{op} operands must share one dtype, got {sorted(map(str, dts))}")
    return ins[0].dtype


def _matmul(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    if op is Op.MATMUL:
        _arity(op, ins, 2)
        return (TensorType(_same_float(op, ins), _matmul_shape(ins[0].shape, ins[1].shape)),)
    if op is Op.ADDMM:
        _arity(op, ins, 3)
        bias, a, b = ins
        if a.rank != 2 or b.rank != 2:
            raise ShapeError("addmm needs 2-d matrices")
        shape = _matmul_shape(a.shape, b.shape)
        broadcast_shapes(bias.shape, shape)
        return (TensorType(_same_float(op, ins), shape),)
    _arity(op, ins, 2, 3)  # linear(x, w[, b]) = x @ w.T + b
    x, w = ins[0], ins[1]
    if w.rank != 2:
        raise ShapeError("linear weight must be 2-d")
    shape = _matmul_shape(x.shape, (w.shape[1], w.shape[0]))
    if len(ins) == 3:
        broadcast_shapes(ins[2].shape, shape)
    return (TensorType(_same_float(op, ins), shape),)


def _window_out(size: Dim, k: int, s: int, p: int, d: int, ceil_mode: bool) -> Dim:
    num = size + 2 * p - d * (k - 1) - 1
    if isinstance(num, int):
        out = -(-num // s) + 1 if ceil_mode else num // s + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1
        if out <= 0:
            raise ShapeError(f"window of {k} (stride {s}, padding {p}, dilation {d}) does not fit {size}")
        return out
    f = sympy.ceiling if ceil_mode else sympy.floor
    return as_dim(f(sympy.sympify(num) / s) + 1)


def _conv(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 2, 3)
    x, w = ins[0], ins[1]
    nsp = len(attrs["stride"])
    if x.rank != nsp + 2 or w.rank != nsp + 2:
        raise ShapeError(f"convolution over {nsp} spatial dims needs rank {nsp + 2} input and weight")
    g = attrs["groups"]
    if attrs["transposed"]:
        cout = w.shape[1] * g
        spatial = [(x.shape[2 + i] - 1) * attrs["stride"][i] - 2 * attrs["padding"][i]
                   + attrs["dilation"][i] * (w.shape[2 + i] - 1) + attrs["output_padding"][i] + 1
                   for i in range(nsp)]
        if not dims_equal(x.shape[1], w.shape[0]):
            raise ShapeError("transposed convolution channel mismatch")
    else:
        cout = w.shape[0]
        if not dims_equal(x.shape[1], w.shape[1] * g):
            raise ShapeError(f"convolution expects {w.shape[1] * g} input channels, got {x.shape[1]}")
        spatial = [_window_out(x.shape[2 + i], w.shape[2 + i], attrs["stride"][i], attrs["padding"][i],
                               attrs["dilation"][i], False) for i in range(nsp)]
    if len(ins) == 3 and (ins[2].rank != 1 or not dims_equal(ins[2].shape[0], cout)):
        raise ShapeError("convolution bias must be 1-d with one entry per output channel")
    return (TensorType(_same_float(op, ins), (x.shape[0], cout, *spatial)),)


def _pool(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 1)
    (x,) = ins
    if op in (Op.ADAPTIVE_AVG_POOL, Op.ADAPTIVE_MAX_POOL):
        n = len(attrs["output_size"])
        if x.rank < n + 1:
            raise ShapeError(f"{op} over {n} dims needs rank >= {n + 1}")
        return (x.with_shape(x.shape[:x.rank - n] + tuple(attrs["output_size"])),)
    k = attrs["kernel"]
    n = len(k)
    if x.rank < n + 1:
        raise ShapeError(f"{op} over {n} dims needs rank >= {n + 1}")
    dil = attrs.get("dilation", [1] * n)
    spatial = tuple(_window_out(x.shape[x.rank - n + i], k[i], attrs["stride"][i], attrs["padding"][i],
                                dil[i], attrs["ceil_mode"]) for i in range(n))
    return (x.with_shape(x.shape[:x.rank - n] + spatial),)


def _norm(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    x = ins[0]
    n_affine = int(attrs.get("has_weight", False)) + int(attrs.get("has_bias", False))
    base = 3 if op is Op.BATCH_NORM else 1
    _arity(op, ins, base + n_affine)
    if not x.dtype.is_float:
        raise ShapeError(f"{op} needs a floating-point input")
    for p in ins[base:]:  # weight and bias: the input's dtype, or float32 under a half input
        if p.dtype != x.dtype and not (p.dtype is DType.F32 and x.dtype in (DType.F16, DType.BF16)):
            raise ShapeError(f"{op}: weight and bias must be {x.dtype} like the input, got {p.dtype}")
    if op in (Op.LAYER_NORM, Op.RMS_NORM):
        ns = tuple(attrs["normalized_shape"])
        if len(ns) > x.rank or not all(dims_equal(a, b) for a, b in zip(x.shape[x.rank - len(ns):], ns)):
            raise ShapeError(f"{op}: normalized_shape {list(ns)} does not match input {x}")
    if op is Op.GROUP_NORM and isinstance(x.shape[1], int) and x.shape[1] % attrs["groups"]:
        raise ShapeError("group_norm: channels not divisible by groups")
    return (x,)


def _softmax(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 1)
    normalize_axis(attrs["dim"], ins[0].rank)
    if not ins[0].dtype.is_float:
        raise ShapeError(f"{op} needs a floating-point input")
    return (ins[0],)


def _numel(shape: Sequence[Dim]) -> Dim:
    return as_dim(sympy.Mul(*[sympy.sympify(d) for d in shape]))


def _reshape(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 1)
    (x,) = ins
    shape = list(attrs["shape"])
    if sum(1 for d in shape if isinstance(d, int) and d == -1) > 1:
        raise ShapeError("reshape: at most one -1")
    if -1 in shape:
        i = shape.index(-1)
        rest = _numel([d for d in shape if not (isinstance(d, int) and d == -1)])
        total = _numel(x.shape)
        q = sympy.simplify(sympy.sympify(total) / sympy.sympify(rest)) if rest != 0 else 0
        shape[i] = as_dim(q) if (sympy.sympify(q).is_integer or not sympy.sympify(q).is_number) else -2
        if shape[i] == -2:
            raise ShapeError(f"cannot reshape {x} to {list(attrs['shape'])}")
    if not dims_equal(_numel(shape), _numel(x.shape)):
        raise ShapeError(f"cannot reshape {x} to {list(attrs['shape'])}")
    return (x.with_shape(shape),)


def _layout(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    if op is Op.CAT:
        return _cat(op, ins, attrs)
    if op is Op.SPLIT:
        return _split(op, ins, attrs)
    _arity(op, ins, 1)
    (x,) = ins
    if op is Op.PERMUTE:
        dims = [normalize_axis(d, x.rank) for d in attrs["dims"]]
        if sorted(dims) != list(range(x.rank)):
            raise ShapeError(f"permute: {list(attrs['dims'])} is not a permutation of rank {x.rank}")
        return (x.with_shape([x.shape[d] for d in dims]),)
    if op is Op.EXPAND:
        shape = list(attrs["shape"])
        if len(shape) < x.rank:
            raise ShapeError("expand cannot lower the rank")
        off = len(shape) - x.rank
        out = []
        for i, d in enumerate(shape):
            src = x.shape[i - off] if i >= off else 1
            if isinstance(d, int) and d == -1:
                if i < off:
                    raise ShapeError("expand: -1 in a new leading dimension")
                d = src
            if not (dims_equal(src, d) or (isinstance(src, int) and src == 1)):
                raise ShapeError(f"cannot expand {x} to {shape}")
            out.append(d)
        return (x.with_shape(out),)
    if op is Op.SQUEEZE:
        dims = {normalize_axis(d, x.rank) for d in attrs["dims"]} if x.rank else set()
        return (x.with_shape([d for i, d in enumerate(x.shape)
                              if not (i in dims and isinstance(d, int) and d == 1)]),)
    if op is Op.UNSQUEEZE:
        dim = normalize_axis(attrs["dim"], x.rank + 1)
        return (x.with_shape(x.shape[:dim] + (1,) + x.shape[dim:]),)
    if op is Op.SELECT:
        dim = normalize_axis(attrs["dim"], x.rank)
        if x.rank == 0:
            raise ShapeError("select on a rank-0 tensor")
        return (x.with_shape(x.shape[:dim] + x.shape[dim + 1:]),)
    if op is Op.SLICE:
        return (x.with_shape(_slice_shape(x, attrs)),)
    if op is Op.PAD:
        pads = list(attrs["pads"])
        if len(pads) % 2 or len(pads) // 2 > x.rank:
            raise ShapeError(f"pad: bad padding list {pads}")
        shape = list(x.shape)
        for j in range(len(pads) // 2):  # torch order: last dim first, (before, after) pairs
            i = x.rank - 1 - j
            shape[i] = as_dim(shape[i] + pads[2 * j] + pads[2 * j + 1])
            if isinstance(shape[i], int) and shape[i] < 0:
                raise ShapeError(f"pad: negative size on axis {i}")
        if attrs["mode"] not in ("constant", "reflect", "replicate", "circular"):
            raise ShapeError(f"pad: unknown mode {attrs['mode']!r}")
        npad = len(pads) // 2
        if attrs["mode"] != "constant" and not (npad <= 3 and x.rank - npad in (1, 2)):
            raise ShapeError(f"pad: {attrs['mode']} padding of {npad} axes needs a rank {npad + 1} "
                             f"or {npad + 2} input, got rank {x.rank}")
        return (x.with_shape(shape),)
    if op is Op.RESHAPE:
        return _reshape(op, ins, attrs)
    raise ShapeError(f"no layout rule for {op}")


def _slice_shape(x: TensorType, attrs: Attrs) -> list[Dim]:
    dim = normalize_axis(attrs["dim"], x.rank)
    size = x.shape[dim]
    start, end, step = attrs["start"], attrs["end"], attrs["step"]
    if not isinstance(step, int) or step < 1:
        raise ShapeError("slice step must be a positive integer")

    def clip(v: Dim) -> Dim:
        if isinstance(v, int):
            if v >= _BIG:
                return size
            if v < 0:
                v = size + v
            if isinstance(size, int):
                return min(max(v, 0), size)
            if isinstance(v, int):  # a fixed bound on a symbolic axis stops at the axis's end
                return as_dim(sympy.Min(max(v, 0), size))
            return v
        return v

    s, e = clip(start), clip(end)
    n = sympy.sympify(e) - sympy.sympify(s)
    if n.is_number:
        length: Dim = max(0, -(-int(n) // step))
    else:
        length = as_dim(sympy.ceiling(n / step)) if step != 1 else as_dim(n)
    out = list(x.shape)
    out[dim] = length
    return out


def _cat(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    if not ins:
        raise ShapeError("cat needs at least one input")
    ref = max(ins, key=lambda t: t.rank)
    if ref.rank == 0:
        raise ShapeError("cat of rank-0 tensors")
    dim = normalize_axis(attrs["dim"], ref.rank)
    total: Dim = 0
    for t in ins:
        if t.rank != ref.rank:
            raise ShapeError("cat inputs must share a rank")
        for i, (a, b) in enumerate(zip(t.shape, ref.shape)):
            if i != dim and not dims_equal(a, b):
                raise ShapeError(f"cat: {t} and {ref} differ outside axis {dim}")
        total = as_dim(total + t.shape[dim])
    dtype = elementwise_dtype([TensorType(t.dtype, (1,)) for t in ins])
    shape = list(ref.shape)
    shape[dim] = total
    return (TensorType(dtype, shape),)


def _split(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 1)
    (x,) = ins
    dim = normalize_axis(attrs["dim"], x.rank)
    sizes = list(attrs["sizes"])
    if not dims_equal(_numel(sizes) if len(sizes) == 1 else as_dim(sympy.Add(*sizes)), x.shape[dim]):
        raise ShapeError(f"split sizes {sizes} do not add up to {x.shape[dim]}")
    outs = []
    for s in sizes:
        shape = list(x.shape)
        shape[dim] = s
        outs.append(x.with_shape(shape))
    return tuple(outs)


def _index(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 2)
    a, idx = ins
    if not idx.dtype.is_int:
        raise ShapeError(f"{op}: indices must be integers, got {idx.dtype}")
    if op is Op.EMBEDDING:  # embedding(weight, indices)
        if a.rank != 2:
            raise ShapeError("embedding weight must be 2-d")
        return (TensorType(a.dtype, idx.shape + (a.shape[1],)),)
    dim = normalize_axis(attrs["dim"], a.rank)
    if op is Op.INDEX_SELECT:
        if idx.rank > 1:
            raise ShapeError("index_select indices must be 0-d or 1-d")
        shape = list(a.shape)
        if a.rank:
            shape[dim] = idx.shape[0] if idx.rank else 1
        return (a.with_shape(shape),)
    if idx.rank != a.rank:
        raise ShapeError("gather: index and input must have the same rank")
    return (a.with_shape(idx.shape),)


def _create(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 0)
    if op is Op.FULL:
        return (TensorType(attrs["dtype"], tuple(attrs["shape"])),)
    start, end, step = (sympy.sympify(attrs[k]) for k in ("start", "end", "step"))
    if step == 0:
        raise ShapeError("arange step must not be zero")
    n = sympy.ceiling((end - start) / step)
    if n.is_number:
        n = max(0, int(n))
    return (TensorType(attrs["dtype"], (as_dim(n),)),)


def _sdpa(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 3, 4)
    q, k, v = ins[:3]
    if q.rank < 2 or k.rank != q.rank or v.rank != q.rank:
        raise ShapeError("attention q, k, v must share a rank >= 2")
    if not dims_equal(q.shape[-1], k.shape[-1]) or not dims_equal(k.shape[-2], v.shape[-2]):
        raise ShapeError("attention: q/k head size or k/v length mismatch")
    _same_float(op, ins[:3])
    return (TensorType(q.dtype, q.shape[:-1] + (v.shape[-1],)),)


def _extern(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    raise ShapeError("extern nodes carry their output types; they have no rule")


def _kernel(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    body = attrs["body"]
    if not hasattr(body, "nodes"):
        raise ShapeError(f"kernel body must be a graph, got {type(body).__name__}")
    if len(ins) != len(body.inputs):
        raise ShapeError(f"kernel takes {len(body.inputs)} inputs, given {len(ins)}")
    for i, (t, v) in enumerate(zip(ins, body.inputs)):
        if not t.same_as(v.type):
            raise ShapeError(f"kernel input {i} is {t}, its body expects {v.type}")
    return tuple(v.type for v in body.outputs)


def _constant(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    raise ShapeError("constant nodes take their type from the graph's constant table")


def _clamp(op: Op, ins: Sequence[TensorType], attrs: Attrs) -> tuple[TensorType, ...]:
    _arity(op, ins, 1)
    # min/max are python scalars, which promote like torch's wrapped numbers: a float bound
    # makes an integer tensor f32, an int bound makes a bool tensor i64.
    bounds = [attrs[k] for k in ("min", "max") if attrs[k] is not None]
    scalar = [DType.BOOL if isinstance(b, bool)
              else DType.I64 if isinstance(b, (int, sympy.Basic)) else DEFAULT_FLOAT for b in bounds]
    return (ins[0].with_dtype(result_type([ins[0].dtype], scalar)),)


_RULES: dict[Op, Rule] = {Op.CLAMP: _clamp, Op.WHERE: _where, Op.CUMSUM: _cumsum}
_FAMILY_RULES: dict[Family, Rule] = {
    Family.UNARY: _unary, Family.BINARY: _binary, Family.COMPARE: _binary,
    Family.TERNARY: _where, Family.CAST: _cast, Family.REDUCE: _reduce, Family.SCAN: _cumsum,
    Family.MATMUL: _matmul, Family.CONV: _conv, Family.POOL: _pool, Family.NORM: _norm,
    Family.SOFTMAX: _softmax, Family.LAYOUT: _layout, Family.INDEX: _index,
    Family.CREATE: _create, Family.ATTENTION: _sdpa, Family.EXTERN: _extern,
    Family.CONSTANT: _constant, Family.KERNEL: _kernel,
}
