"""torch dialect (torch-mlir's backend contract) into effc IR, through the shared op table.

torch-mlir lowers an ONNX graph to a ``func.func`` of ``torch.aten.*`` ops on value tensors,
plus ``torch.constant.*`` scalars, ``torch.prim.ListConstruct`` lists, ``torch.vtensor.literal``
weights and integer arithmetic on sizes (``torch.aten.size.int``, ``torch.aten.mul.int``...).
Scalars and lists become python values, size arithmetic becomes sympy over the inputs' size
symbols, and every ``torch.aten`` op is bound to its schema and handed to the same table entry
the FX frontend uses. What the table cannot express becomes an ``extern`` node calling the
torch op; what cannot run at all is collected, and reported together with the node names.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import sympy
import torch

from effc.ir import DType, GraphBuilder, Op, ShapeError, TensorType, Value

from .aten_table import ATEN_TABLE
from .fx import FallBack, extern_template
from .lowering import NOT_COMPUTED, Lowering, Unsupported
from .onnx_calls import AtenCalls, onnx_attributes
from .onnx_ops import OWN_ONNX_OPS
from .torch_mlir_quirks import explicit_quirk, fix_arguments, fix_result_types
from .torch_scalars import SCALAR_OPS

_MLIR_DTYPES = {
    "f64": DType.F64, "f32": DType.F32, "f16": DType.F16, "bf16": DType.BF16, "si64": DType.I64,
    "si32": DType.I32, "si16": DType.I16, "si8": DType.I8, "ui8": DType.U8, "i1": DType.BOOL,
}
_VTENSOR = re.compile(r"^!torch\.vtensor<\[([^\]]*)\],([a-z0-9]+)>$")
_LOC = re.compile(r'loc\("([^"]*)"')


@dataclass
class Failure:
    op: str        # what could not be converted, e.g. "onnx.Unique" or "aten.nonzero"
    node: str      # the ONNX node it came from
    reason: str
    needs: tuple[int, ...] = ()   # for a read of tensor data: the graph inputs it comes from


class DataDependent(Unsupported):
    """A size or op argument read from tensor data that is only known at run time."""

    def __init__(self, message: str, inputs: tuple[int, ...]) -> None:
        super().__init__(message)
        self.inputs = inputs


@dataclass
class Converted:
    graph: Any
    externs: Counter = field(default_factory=Counter)
    extern_reasons: dict[str, str] = field(default_factory=dict)


class ConversionFailed(Exception):
    def __init__(self, failures: list[Failure]) -> None:
        super().__init__(f"{len(failures)} ops cannot be compiled")
        self.failures = failures


def parse_type(text: str) -> tuple[DType, list[int | None]]:
    """``!torch.vtensor<[?,8],f32>`` -> (f32, [None, 8])."""
    m = _VTENSOR.match(text)
    if not m:
        raise Unsupported(f"type {text} is not a ranked value tensor")
    dtype = _MLIR_DTYPES.get(m.group(2))
    if dtype is None:
        raise Unsupported(f"element type {m.group(2)}")
    dims = [None if d == "?" else int(d) for d in m.group(1).split(",")] if m.group(1) else []
    return dtype, dims


def node_name(op: Any) -> str:
    m = _LOC.search(str(op.location))
    return m.group(1) if m else "?"


_EXTRACT = ("aten.Int.Tensor", "aten.Float.Tensor", "aten.Bool.Tensor", "aten.item", "aten.FloatImplicit", "aten.IntImplicit",
            "aten.ScalarImplicit")


def literal_tensor(attr: Any, blobs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The tensor a ``torch.vtensor.literal`` holds: an ONNX initializer kept as a resource
    blob, or an inline dense attribute."""
    text = str(attr)
    if text.startswith("dense_resource<"):
        key = text[len("dense_resource<"):text.index(">")]
        if key not in blobs:
            raise Unsupported(f"literal refers to unknown data {key!r}")
        return blobs[key]
    dtype, dims = parse_type("!torch.vtensor<[" + ",".join(str(d) for d in attr.type.shape) + "],"
                             + _builtin_dtype(str(attr.type.element_type)) + ">")
    if attr.is_splat:
        value = attr.get_splat_value()
        v = value.value if hasattr(value, "value") else value
        return torch.full(tuple(dims), v if dtype is not DType.BOOL else bool(v), dtype=dtype.to_torch())
    try:
        arr = np.array(attr)
    except Exception:  # noqa: BLE001 - bool (i1) buffers and odd layouts: read one by one
        arr = np.array([attr[i] for i in range(len(attr))]).reshape(dims)
    return torch.from_numpy(np.ascontiguousarray(arr)).to(dtype.to_torch()).reshape(tuple(dims))


def _builtin_dtype(name: str) -> str:
    """Builtin MLIR element types (``i64``, ``i1``, ``ui8``) as torch dialect names."""
    if name in ("i1", "ui8") or name.startswith("f") or name.startswith("bf") or name.startswith("si"):
        return name
    if name.startswith("i"):
        return "s" + name
    return name


class TorchDialectImporter:
    def __init__(self, func: Any, inputs: Sequence[tuple[str, TensorType]],
                 blobs: Mapping[str, torch.Tensor]) -> None:
        self.func = func
        self.blobs = blobs
        self.b = GraphBuilder()
        self.cx = Lowering(self.b, torch.device("cpu"))
        self.env: dict[Any, Any] = {}
        self.known: dict[Value, Any] = {}   # rank-0 tensors whose value is a known size/number
        self.const: dict[Value, torch.Tensor] = {}  # values whose contents are known now
        self.externs: Counter = Counter()
        self.reasons: dict[str, str] = {}
        self.failures: list[Failure] = []
        self.inputs = inputs
        self.used: set[Any] = set()

    def run(self) -> Converted:
        block = self.func.regions[0].blocks[0]
        args = list(block.arguments)
        if len(args) != len(self.inputs):
            raise Unsupported(f"the function takes {len(args)} inputs, the model declares {len(self.inputs)}")
        for arg, (name, t) in zip(args, self.inputs):
            self.env[arg] = self.b.input(name, t)
        self._collect_uses(block)
        outputs: list[Value] = []
        for op in block.operations:
            name = op.operation.name
            if name == "func.return":
                for v in op.operands:
                    x = self.env.get(v)
                    if isinstance(x, Value):
                        outputs.append(x)
                    elif not isinstance(x, _Failed):  # a failed producer is reported already
                        self.failures.append(Failure("func.return", "output", "a model output is not a tensor"))
                continue
            try:
                self._convert(op)
            except (Unsupported, ShapeError) as e:
                needs = e.inputs if isinstance(e, DataDependent) else ()
                self.failures.append(Failure(_short(name, op), node_name(op), str(e), needs))
                for r in op.results:
                    self.env[r] = _Failed()
            except _Propagated:
                for r in op.results:
                    self.env[r] = _Failed()
        if self.failures:
            raise ConversionFailed(self.failures)
        return Converted(self.b.build(outputs), self.externs, self.reasons)

    def _collect_uses(self, block: Any) -> None:
        for op in block.operations:
            for v in op.operands:
                self.used.add(v)
            for region in op.regions:
                for b in region.blocks:
                    self._collect_uses(b)

    def _loop(self, op: Any) -> None:
        """``prim.Loop`` with a trip count and conditions known now: unrolled."""
        trip, cond, *carried = (self._get(v) for v in op.operands)
        if not isinstance(trip, int) or not isinstance(cond, bool):
            raise Unsupported("a loop whose trip count or condition is only known at run time")
        if trip > MAX_UNROLL:
            raise Unsupported(f"a loop of {trip} iterations (effc unrolls at most {MAX_UNROLL})")
        body = op.regions[0].blocks[0]
        i = 0
        while cond and i < trip:
            args = list(body.arguments)
            self.env[args[0]] = i
            for a, v in zip(args[1:], carried):
                self.env[a] = v
            cond, carried = self._block(body, "torch.prim.Loop.condition")
            if not isinstance(cond, bool):
                raise Unsupported("a loop whose condition is only known at run time")
            i += 1
        for r, v in zip(op.results, carried):
            self.env[r] = v

    def _if(self, op: Any) -> None:
        """``prim.If`` on a condition known now: the branch taken, inlined."""
        cond = self._get(op.operands[0])
        if not isinstance(cond, bool):
            raise Unsupported("a branch on a condition only known at run time")
        _, values = self._block(op.regions[0 if cond else 1].blocks[0], "torch.prim.If.yield", first=False)
        for r, v in zip(op.results, values):
            self.env[r] = v

    def _block(self, block: Any, terminator: str, first: bool = True) -> tuple[Any, list[Any]]:
        """Convert a nested block's ops; its terminator's operands (the first apart when
        ``first``) are returned."""
        for inner in block.operations:
            if inner.operation.name == terminator:
                vals = [self._get(v) for v in inner.operands]
                return (vals[0], vals[1:]) if first else (None, vals)
            self._convert(inner)
        raise Unsupported(f"block without {terminator}")

    def input_sources(self, x: Value) -> tuple[int, ...]:
        """Positions of the graph inputs ``x`` is computed from (none: it is not data of the
        inputs, e.g. a random draw)."""
        position = {v: i for i, v in enumerate(self.b.inputs)}
        seen: set[Value] = set()
        found: set[int] = set()
        stack = [x]
        while stack:
            v = stack.pop()
            if v in seen:
                continue
            seen.add(v)
            if v in position:
                found.add(position[v])
            elif v.node is not None:
                stack.extend(v.node.inputs)
        return tuple(sorted(found))

    def _get(self, v: Any) -> Any:
        x = self.env[v]
        if isinstance(x, _Failed):
            raise _Propagated()
        if isinstance(x, list) and any(isinstance(e, _Failed) for e in x):
            raise _Propagated()
        return x

    def _convert(self, op: Any) -> None:
        name = op.operation.name
        attrs = op.attributes
        if name.startswith("torch.constant."):
            kind = name[len("torch.constant."):]
            if kind == "none":
                val: Any = None
            elif kind == "int":
                val = int(attrs["value"].value)
            elif kind == "float":
                val = float(attrs["value"].value)
            elif kind == "bool":
                val = bool(attrs["value"].value)
            elif kind in ("str", "device"):
                val = str(attrs["value"].value)
            elif kind == "number":
                a = attrs["value"]
                val = float(a.value) if "f" in str(a.type) else int(a.value)
            else:
                raise Unsupported(f"constant kind {kind}")
            self.env[op.result] = val
            return
        if name == "torch.vtensor.literal":
            t = literal_tensor(attrs["value"], self.blobs)
            v = self.b.constant(t, node_name(op))
            self.const[v] = t
            self.env[op.result] = v
            return
        if name in ("torch.prim.ListConstruct", "torch.prim.TupleConstruct"):
            self.env[op.result] = [self._get(v) for v in op.operands]
            return
        if name == "torch.prim.Loop":
            self._loop(op)
            return
        if name == "torch.prim.If":
            self._if(op)
            return
        if name == "torch.tensor_static_info_cast":
            self.env[op.result] = self._get(op.operands[0])
            return
        if name == "torch.runtime.assert":
            cond = self._get(op.operands[0])
            if cond is False:  # a size-dependent condition stays unchecked until shapes bind
                raise Unsupported(f"model assertion fails: {attrs['message']}")
            return
        if name == "torch.operator":
            onnx_op = str(attrs["name"]).strip('"')
            handler = OWN_ONNX_OPS.get(onnx_op[len("onnx."):])
            if handler is None:
                raise Unsupported(f"torch-mlir has no lowering for {onnx_op}")
            outs = [parse_type(str(r.type)) for r in op.results]
            items = handler(AtenCalls(self), [self._get(v) for v in op.operands], onnx_attributes(attrs), outs)
            self._check([True] * len(outs), items, outs)
            for r, v in zip(op.results, items):
                self.env[r] = v
            return
        short = name[len("torch."):] if name.startswith("torch.") else name
        if short == "aten.size.int":
            x, dim = self._get(op.operands[0]), self._get(op.operands[1])
            self.env[op.result] = self.cx.tensor(x).type.shape[dim]
            return
        if short == "aten.dim":
            self.env[op.result] = self.cx.tensor(self._get(op.operands[0])).type.rank
            return
        if short == "prim.NumToTensor.Scalar":
            v = self._get(op.operands[0])
            dtype, _ = parse_type(str(op.result.type))
            t = self.b.scalar(v, dtype)
            self.known[t] = v
            self.env[op.result] = t
            return
        if short in _EXTRACT:
            x = self._get(op.operands[0])
            if x in self.known:
                self.env[op.result] = self.known[x]
                return
            if x in self.const and self.const[x].numel() == 1:
                item = self.const[x].reshape(()).item()
                self.env[op.result] = float(item) if short in ("aten.Float.Tensor", "aten.FloatImplicit") else item
                return
            raise DataDependent("reads a tensor's value to size or configure another op (data-dependent)",
                                self.input_sources(x))
        if short in ("aten.tensor", "aten.tensor.float", "aten.tensor.int", "aten.tensor.bool"):
            data = self._get(op.operands[0])
            dtype, dims = parse_type(str(op.result.type))
            if _has_symbol(data):
                raise Unsupported("a tensor literal of run-time sizes")
            t = torch.tensor(data, dtype=dtype.to_torch()).reshape([d for d in dims if d is not None] if None not in dims else -1)
            v = self.b.constant(t, "literal")
            self.const[v] = t
            self.env[op.result] = v
            return
        if short in SCALAR_OPS:
            self.env[op.result] = SCALAR_OPS[short]([self._get(v) for v in op.operands])
            return
        if short == "prims.collapse":  # flatten dims start..end (inclusive) into one
            x, start, end = (self._get(v) for v in op.operands)
            shape = list(self.cx.tensor(x).type.shape)
            merged = sympy.Mul(*shape[start:end + 1]) if shape[start:end + 1] else 1
            new = shape[:start] + [merged] + shape[end + 1:]
            self.env[op.result] = self.cx.op(Op.RESHAPE, [x], shape=tuple(new))
            return
        if short.startswith("aten."):
            self._aten(op, short)
            return
        raise Unsupported(f"op {name} is not supported")

    def _aten(self, op: Any, short: str) -> None:
        overload = _overload(short)
        schema = overload._schema
        operands = [self._get(v) for v in op.operands]
        if len(operands) != len(schema.arguments):
            raise Unsupported(f"{short} has {len(operands)} operands, its schema {len(schema.arguments)}")
        bound = {arg.name: _torch_arg(arg, x) for arg, x in zip(schema.arguments, operands)}
        fix_arguments(short, bound)
        outs = fix_result_types(short, bound, [parse_type(str(r.type)) for r in op.results])
        items = self.apply(short, bound, outs, [r in self.used for r in op.results])
        for r, v in zip(op.results, items):
            self.env[r] = v

    def apply(self, short: str, bound: Mapping[str, Any], outs: Sequence[tuple[DType, list[int | None]]],
              used: Sequence[bool]) -> tuple:
        """aten op ``short`` on arguments bound to its schema, with the output types torch-mlir
        gives: folded when its operands are known, else through the op table, else an extern."""
        overload = _overload(short)
        schema = overload._schema
        name = str(overload)
        folded = self._fold(overload, schema, bound, outs)
        if folded is not None:
            consts = []
            for t in folded:
                v = self.b.constant(t, "folded")
                self.const[v] = t
                consts.append(v)
            return tuple(consts)
        out_types = [self._out_type(short, bound, o) for o in outs]
        try:
            res = explicit_quirk(self.cx, short, bound, [d for d, _ in outs])
            if res is None:
                conv = ATEN_TABLE.get(name)
                if conv is None:
                    raise Unsupported("not in effc's op table")
                res = conv(self.cx, bound, out_types)
            items = (res,) if isinstance(res, Value) else tuple(res)
            self._check(used, items, outs)
        except (Unsupported, ShapeError) as e:
            items = self._extern(name, schema, bound, outs, str(e))
        return items

    def _fold(self, overload: Any, schema: Any, bound: Mapping[str, Any],
              outs: Sequence[tuple[DType, list[int | None]]]) -> list[torch.Tensor] | None:
        """Evaluate now an op whose tensor operands are all known (ONNX shape arithmetic
        computed from initializers), when its outputs are small; else None."""
        values = [x for x in bound.values() if isinstance(x, Value)] + [
            e for x in bound.values() if isinstance(x, list) for e in x if isinstance(e, Value)]
        if not values or any(v not in self.const for v in values) or schema.is_mutable:
            return None
        if any(d is None for _, dims in outs for d in dims) or overload._overloadpacket.__name__ in _NONDETERMINISTIC:
            return None
        if sum(int(np.prod(dims)) for _, dims in outs) > _FOLD_LIMIT:
            return None

        def real(x: Any) -> Any:
            if isinstance(x, Value):
                return self.const[x]
            if isinstance(x, list):
                return [real(e) for e in x]
            if isinstance(x, sympy.Basic):
                raise Unsupported("symbolic")
            return x
        args, kwargs = [], {}
        try:
            for arg in schema.arguments:
                (kwargs.__setitem__(arg.name, real(bound[arg.name])) if arg.kwarg_only
                 else args.append(real(bound[arg.name])))
            res = overload(*args, **kwargs)
        except Exception:  # noqa: BLE001 - left to the op table, which reports properly
            return None
        items = [res] if isinstance(res, torch.Tensor) else list(res)
        if not all(isinstance(t, torch.Tensor) for t in items) or len(items) != len(outs):
            return None
        for t, (dtype, dims) in zip(items, outs):
            if t.dtype != dtype.to_torch() or list(t.shape) != dims:
                return None
        return [t.contiguous() for t in items]

    def _out_type(self, short: str, a: Mapping[str, Any], out: tuple[DType, list[int | None]]) -> TensorType:
        dtype, dims = out
        if all(d is not None for d in dims):
            return TensorType(dtype, tuple(dims))
        like = a.get("self")
        if short.endswith("_like") and isinstance(like, Value):
            return TensorType(dtype, like.type.shape)
        # unknown sizes: entries that read them (creation ops) must not build a graph from them
        return TensorType(dtype, tuple(d if d is not None else _UNKNOWN for d in dims))

    def _check(self, used: Sequence[bool], items: Sequence[Any], outs: Sequence[tuple[DType, list[int | None]]]) -> None:
        if len(items) != len(outs):
            raise Unsupported(f"converter made {len(items)} outputs, torch-mlir has {len(outs)}")
        for i, (v, (dtype, dims), u) in enumerate(zip(items, outs, used)):
            if v is NOT_COMPUTED:
                if u:
                    raise Unsupported(f"output {i} is used but effc does not compute it")
                continue
            t = v.type
            if _UNKNOWN in t.symbols:
                raise Unsupported("output size is not known")
            if t.dtype is not dtype or t.rank != len(dims) or any(
                    d is not None and isinstance(e, int) and e != d for d, e in zip(dims, t.shape)):
                raise Unsupported(f"type rule disagreement: effc {t}, torch-mlir {dtype}{dims}")

    def _extern(self, name: str, schema: Any, bound: Mapping[str, Any],
                outs: Sequence[tuple[DType, list[int | None]]], reason: str) -> tuple:
        if any(d is None for _, dims in outs for d in dims):
            raise Unsupported(f"{reason}; and its output sizes are dynamic, so it cannot run as an extern")
        inputs: list[Value] = []
        args, kwargs = [], {}
        for arg in schema.arguments:
            try:
                t = extern_template(bound[arg.name], inputs)
            except FallBack as e:
                raise Unsupported(str(e)) from None
            if arg.kwarg_only:
                kwargs[arg.name] = t
            else:
                args.append(t)
        want = [TensorType(dtype, tuple(dims)) for dtype, dims in outs]  # type: ignore[arg-type]
        # the types torch's op really returns (torch-mlir's can differ: it types by ONNX's rules)
        got = _meta_types(name, args, kwargs, inputs) or want
        if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
            raise Unsupported(f"{reason}; and torch's {name} returns other shapes than the model declares")
        n = self.b.node(Op.EXTERN, inputs, {"target": name, "args": tuple(args), "kwargs": kwargs}, got)
        self.externs[name] += 1
        self.reasons.setdefault(name, reason)
        return tuple(self.cx.cast(v, w.dtype) for v, w in zip(n.outputs, want))


def _has_symbol(x: Any) -> bool:
    if isinstance(x, (list, tuple)):
        return any(_has_symbol(e) for e in x)
    return isinstance(x, sympy.Basic) and not x.is_number


def _meta_types(name: str, args: list[Any], kwargs: dict[str, Any], inputs: list[Value]) -> list[TensorType] | None:
    """The output types of torch op ``name`` called on meta tensors of the inputs' types; None
    when it cannot be run that way (it will still run on real tensors)."""
    from effc.backends.reference.kernels import fill_template, resolve_target
    try:
        metas = [torch.empty(v.type.shape, dtype=v.type.dtype.to_torch(), device="meta") for v in inputs]
        res = resolve_target(name)(*[fill_template(a, metas) for a in args],
                                   **{k: fill_template(v, metas) for k, v in kwargs.items()})
        items = [res] if isinstance(res, torch.Tensor) else list(res)
        return [TensorType(DType.from_torch(t.dtype), tuple(t.shape)) for t in items]
    except Exception:  # noqa: BLE001 - no meta kernel, or symbolic shapes
        return None


class _Failed:
    """The result of an op that failed to convert; its users are not reported again."""


class _Propagated(Exception):
    pass


_FOLD_LIMIT = 1 << 16
MAX_UNROLL = 4096
_NONDETERMINISTIC = {"rand", "rand_like", "randn", "randn_like", "randint", "randint_like",
                     "bernoulli", "normal", "uniform", "multinomial", "dropout", "native_dropout",
                     "empty", "empty_like", "new_empty", "empty_strided"}
_UNKNOWN = sympy.Symbol("_unknown_size", integer=True, positive=True)


def _short(name: str, op: Any) -> str:
    if name == "torch.operator":
        return str(op.attributes["name"]).strip('"')
    return name[len("torch."):] if name.startswith("torch.") else name


def _overload(short: str) -> Any:
    parts = short.split(".")
    if len(parts) < 2 or parts[0] != "aten":
        raise Unsupported(f"{short} is not an aten op")
    try:
        packet = getattr(torch.ops.aten, parts[1])
        return getattr(packet, parts[2] if len(parts) > 2 else "default")
    except (AttributeError, RuntimeError):
        raise Unsupported(f"torch has no op {short}") from None


_TORCH_DTYPES = {  # torch's ScalarType numbering, which torch-mlir passes as plain ints
    0: torch.uint8, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.int64, 5: torch.float16,
    6: torch.float32, 7: torch.float64, 11: torch.bool, 15: torch.bfloat16,
}


def _torch_arg(arg: Any, x: Any) -> Any:
    """A torch-mlir operand in the form the schema argument takes in python: ScalarType codes
    become torch dtypes; layouts and memory formats (ints in torch-mlir) keep their defaults."""
    kind = str(arg.type)
    if "ScalarType" in kind:
        return dtype_from_int(x)
    if "Layout" in kind or "MemoryFormat" in kind:
        return None
    return x


def dtype_from_int(code: Any) -> Any:
    if code is None:
        return None
    if code not in _TORCH_DTYPES:
        raise Unsupported(f"dtype code {code}")
    return _TORCH_DTYPES[code]
