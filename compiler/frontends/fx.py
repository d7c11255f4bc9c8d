"""FX frontend: an AOT-traced, core-ATen FX graph into effc IR.

Placeholders become graph inputs, or graph constants when the caller says which ones hold
parameters. Nodes computing sizes (``sym_size``, arithmetic on SymInts) are not converted:
their symbolic value, recorded by the tracer, is used wherever they are consumed. Every aten
call goes through the one op table; what it cannot express becomes an ``extern`` node, and a
converted node whose type disagrees with what torch recorded becomes an extern too, so a rule
bug can cost speed but never correctness. A graph that cannot be expressed at all (a Python
callable in the graph, a data-dependent size) raises ``FallBack``; the caller then runs it
with PyTorch.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import sympy
import torch
import torch.fx as fx

from effc.ir import DType, GraphBuilder, Op, ShapeError, TensorType, Value
from effc.ir.attrs import InputRef, TorchObj, symbols_in

from .aten_table import ATEN_TABLE
from .lowering import NOT_COMPUTED, Lowering, Unsupported, bind_schema
from .symbolic import dim_of, shape_of


class FallBack(Exception):
    """The whole graph cannot be compiled; the message says why."""


@dataclass
class OutSpec:
    kind: str              # "ir": output k of the IR graph; "sym": a size expression; "const"
    index: int = 0
    value: Any = None


@dataclass
class Imported:
    graph: Any
    input_map: list[int]                      # IR input i is FX argument input_map[i]
    outputs: list[OutSpec]
    externs: Counter = field(default_factory=Counter)
    extern_reasons: dict[str, str] = field(default_factory=dict)
    hints: dict = field(default_factory=dict)  # example value of each size symbol


def _tensor_type(val: Any) -> TensorType:
    if not isinstance(val, torch.Tensor):
        raise Unsupported(f"non-tensor value {type(val).__name__}")
    try:
        return TensorType(DType.from_torch(val.dtype), shape_of(val))
    except TypeError as e:
        raise FallBack(str(e)) from None


def _out_types(val: Any) -> list[TensorType | None]:
    """Types of an op's outputs; None for a non-tensor entry (an RNG seed, an absent mask)."""
    if isinstance(val, torch.Tensor):
        return [_tensor_type(val)]
    if isinstance(val, (tuple, list)):
        return [_tensor_type(v) if isinstance(v, torch.Tensor) else None for v in val]
    raise FallBack(f"an op returns {type(val).__name__}")


def op_name(target: Any) -> str:
    return str(target)  # OpOverload prints as "aten.add.Tensor"


class _Importer:
    def __init__(self, gm: fx.GraphModule, constants: Mapping[int, torch.Tensor]) -> None:
        self.gm = gm
        self.constants = constants
        self.b = GraphBuilder()
        self.env: dict[fx.Node, Any] = {}
        self.input_map: list[int] = []
        self.externs: Counter = Counter()
        self.reasons: dict[str, str] = {}
        self.hints: dict[sympy.Symbol, int] = {}
        device = None
        for n in gm.graph.nodes:
            v = n.meta.get("val")
            if isinstance(v, torch.Tensor):
                device = v.device
                break
        self.cx = Lowering(self.b, device)

    def run(self) -> Imported:
        outputs: list[OutSpec] = []
        ir_outs: list[Value] = []
        pos = 0
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self._placeholder(node, pos)
                pos += 1
            elif node.op == "call_function":
                self.env[node] = self._call(node)
            elif node.op == "get_attr":
                t = getattr(self.gm, node.target)
                if not isinstance(t, torch.Tensor):
                    raise FallBack(f"attribute {node.target} is not a tensor")
                self.env[node] = self.b.constant(t.detach(), str(node.target))
            elif node.op == "output":
                for o in _flat(node.args[0]):
                    outputs.append(self._output(o, ir_outs))
            else:
                raise FallBack(f"FX node kind {node.op} ({node.target})")
        graph = self.b.build(ir_outs)
        bound = graph.symbols()
        used: set[sympy.Symbol] = set()
        for n in graph.nodes:
            used |= symbols_in(n.attrs)
            for v in n.outputs:
                used |= v.type.symbols
        for o in outputs:
            if o.kind == "sym":
                used |= symbols_in(o.value)
        if used - bound:
            raise FallBack(f"sizes {sorted(map(str, used - bound))} are not sizes of any input tensor")
        return Imported(graph, self.input_map, outputs, self.externs, self.reasons, self.hints)

    def _placeholder(self, node: fx.Node, pos: int) -> None:
        val = node.meta.get("val")
        if pos in self.constants:
            self.env[node] = self.b.constant(self.constants[pos], _param_name(node))
        elif isinstance(val, torch.Tensor):
            self.env[node] = self.b.input(node.name, _tensor_type(val))
            self.input_map.append(pos)
            for d in val.shape:
                if isinstance(d, torch.SymInt) and isinstance(d.node.expr, sympy.Symbol) and d.node.hint is not None:
                    self.hints[dim_of(d)] = int(d.node.hint)
        elif isinstance(val, (torch.SymInt, torch.SymFloat)):
            try:
                self.env[node] = dim_of(val)
            except Unsupported as e:
                raise FallBack(str(e)) from None
        else:
            raise FallBack(f"input {node.name} is a {type(val).__name__}, not a tensor or a size")

    def _output(self, o: Any, ir_outs: list[Value]) -> OutSpec:
        if o is None:
            return OutSpec("const", value=None)
        v = self.env[o] if isinstance(o, fx.Node) else o
        if isinstance(v, Value):
            ir_outs.append(v)
            return OutSpec("ir", len(ir_outs) - 1)
        if isinstance(v, (int, float, bool)) or isinstance(v, sympy.Basic):
            return OutSpec("sym", value=v)
        raise FallBack(f"graph output of type {type(v).__name__}")

    def _lookup(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._lookup(x) for x in a)
        if isinstance(a, dict):
            return {k: self._lookup(v) for k, v in a.items()}
        return a

    def _call(self, node: fx.Node) -> Any:
        val = node.meta.get("val")
        if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool, int, float)) and not isinstance(val, bool) \
                and node.target is not operator.getitem:
            try:
                return dim_of(val)
            except Unsupported as e:
                raise FallBack(str(e)) from None
        if node.target is operator.getitem:
            base = self.env[node.args[0]]
            item = base[node.args[1]]
            if item is NOT_COMPUTED:
                raise AssertionError("an uncomputed output escaped the frontend")
            return item
        if not isinstance(node.target, torch._ops.OpOverload):
            raise FallBack(f"graph calls {getattr(node.target, '__name__', node.target)}, not a torch op")
        name = op_name(node.target)
        args = self._lookup(node.args)
        kwargs = self._lookup(node.kwargs)
        out = _out_types(val)
        try:
            conv = ATEN_TABLE.get(name)
            if conv is None:
                raise Unsupported("not in effc's op table")
            res = conv(self.cx, bind_schema(node.target, args, kwargs), out)
            return self._check(node, res, out)
        except (Unsupported, ShapeError) as e:
            # ShapeError: effc's rule refused operands torch accepted; the extern stays correct
            return self._extern(node, name, args, kwargs, out, str(e))

    def _check(self, node: fx.Node, res: Any, out: list[TensorType | None]) -> Any:
        single = isinstance(node.meta.get("val"), torch.Tensor)
        items = (res,) if isinstance(res, Value) else tuple(res)
        if len(items) != len(out):
            raise Unsupported(f"converter made {len(items)} outputs, torch has {len(out)}")
        used = _used_outputs(node, len(items))
        for i, (v, t) in enumerate(zip(items, out)):
            if v is NOT_COMPUTED or t is None:
                if v is not NOT_COMPUTED:
                    raise Unsupported(f"output {i} is not a tensor in torch")
                if i in used:
                    raise Unsupported(f"output {i} is used but effc does not compute it")
                continue
            if not v.type.same_as(t):
                raise Unsupported(f"type rule disagreement: effc {v.type}, torch {t}")
        return items[0] if single else items

    def _extern(self, node: fx.Node, name: str, args: Any, kwargs: Any, out: list[TensorType | None],
                reason: str) -> Any:
        if any(t is None for t in out):
            raise FallBack(f"{name} ({reason}) returns non-tensor outputs, which extern nodes cannot")
        inputs: list[Value] = []
        targs = tuple(extern_template(a, inputs) for a in args)
        tkw = {k: extern_template(v, inputs) for k, v in kwargs.items()}
        n = self.b.node(Op.EXTERN, inputs, {"target": name, "args": targs, "kwargs": tkw}, out)
        self.externs[name] += 1
        self.reasons.setdefault(name, reason)
        return n.outputs[0] if isinstance(node.meta.get("val"), torch.Tensor) else n.outputs


def extern_template(a: Any, inputs: list[Value]) -> Any:
    """An extern call's argument with tensors replaced by references to the node's inputs
    (appended to ``inputs``); FallBack for an argument extern nodes cannot carry."""
    if isinstance(a, Value):
        inputs.append(a)
        return InputRef(len(inputs) - 1)
    if a is None or isinstance(a, (bool, int, float, str)) or isinstance(a, sympy.Basic):
        return a
    if isinstance(a, (list, tuple)):
        return tuple(extern_template(x, inputs) for x in a)
    if isinstance(a, torch.dtype):
        try:
            return DType.from_torch(a)
        except TypeError as e:
            raise FallBack(str(e)) from None
    if isinstance(a, torch.device):
        return str(a)
    if isinstance(a, (torch.layout, torch.memory_format)):
        return TorchObj(str(a))
    raise FallBack(f"cannot pass a {type(a).__name__} to an extern op")


def _used_outputs(node: fx.Node, n: int) -> set[int]:
    used: set[int] = set()
    for u in node.users:
        if u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int):
            used.add(u.args[1] % n)
        else:
            return set(range(n))
    return used


def _flat(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [y for e in x for y in _flat(e)]
    return [x]


def _param_name(node: fx.Node) -> str:
    return node.meta.get("effc_name") or node.name


def import_fx(gm: fx.GraphModule, constants: Mapping[int, torch.Tensor] | None = None) -> Imported:
    """Convert ``gm``; ``constants`` maps placeholder positions to the tensors they always hold."""
    try:
        return _Importer(gm, constants or {}).run()
    except (Unsupported, ShapeError) as e:  # outside any one op's conversion: the graph as a whole
        raise FallBack(str(e)) from e
