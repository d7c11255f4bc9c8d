"""Lowering a kernel node (graph IR) to a loop-level ``Kernel`` (kernel IR).

    %4 = kernel(%x, %b) {kind="pointwise", name="k0"} : f32[8, 64]
        graph(%a0: f32[8, 64], %a1: f32[64]) {
          %0 = add(%a0, %a1) : f32[8, 64]
          %1 = relu(%0) : f32[8, 64]
          return %1
        }
lowers to
    kernel k0 pointwise(a0: f32[8, 64], a1: f32[64]) -> (out0: f32[8, 64])
      domain i0 < 8, i1 < 64
      %t0 = load a0[64*i0 + i1] : f32
      %t1 = load a1[i1] : f32
      %t2 = add(%t0, %t1) : f32
      %t3 = relu(%t2) : f32
      store out0[64*i0 + i1] = %t3

Which bodies each kind may hold is [Note: kernel groups] in kernel_node.py; how loops and
templates read is [Note: kernel loops] and [Note: kernel templates] in kernel.py.

Each value is computed at the index its consumer asks for (views and broadcasts map the index,
see kernel_views.py), once per distinct index: a value whose index does not involve the reduce
axes is computed at top level, once per outer point, even when a loop asks for it. Composite
reductions are first spelt out (kernel_decompose.py); each primitive reduction then becomes a
``Reduce`` in the loop of its depth (the number of reductions on its longest input path), so
softmax gets a max loop, a sum loop and a loop storing its F-shaped output.

Each output is stored at its own index: the domain's index mapped by ``align_index`` where
the output's shape is the domain's (or, in a reduction, its reduction's) up to size-1 dims.

Kinds ``op`` and ``extern`` lower to an opaque kernel whose template is
``Template(op="node")`` holding the body's one node, which code generators run as a library
call; ``view`` lowers to a kernel with no body whose output aliases its input.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import sympy

from .dtypes import DEFAULT_FLOAT, DType
from .graph import Graph, Node, Value
from .kernel import (Axis, Buffer, Compute, Const, IndexValue, Kernel, Load, Loop, LoweringError, Reduce, Stmt,
                     Store, Template)
from .kernel_decompose import PRIMITIVE_REDUCTIONS, decompose
from .kernel_templates import TEMPLATE_OPS, conv_template, matmul_template
from .kernel_views import (Index, align_index, broadcast_index, flat_index, same_up_to_ones, simplify_index,
                           view_index)
from .ops import U_BOOL, U_FLOAT, Family, Op
from .shape_rules import elementwise_dtype
from .types import Dim, dims_equal, normalize_axis

VIEWS = frozenset({Op.RESHAPE, Op.PERMUTE, Op.EXPAND, Op.SQUEEZE, Op.UNSQUEEZE, Op.SLICE, Op.SELECT})
POINTWISE = frozenset({Family.UNARY, Family.BINARY, Family.COMPARE, Family.TERNARY, Family.CAST})

__all__ = ["LoweringError", "lower"]


def lower(node: Node) -> Kernel:
    """The kernel IR of ``node``, a KERNEL node of kind pointwise, reduction, matmul, conv,
    view, op or extern; raises LoweringError for anything else or a body its kind forbids."""
    if node.op is not Op.KERNEL:
        raise LoweringError(f"{node.op} is not a kernel node")
    kind, body = node.attrs["kind"], node.attrs["body"]
    if kind in ("op", "extern", "view"):
        return _single(node.attrs["name"], kind, body)
    if kind not in ("pointwise", "reduction", "matmul", "conv"):
        raise LoweringError(f"kernels of kind {kind!r} have no loop-level form")
    return _Lowerer(node.attrs["name"], kind, body).run()


def _buffers(body: Graph) -> tuple[list[Buffer], list[Buffer]]:
    ins = [Buffer(v.name or f"in{i}", v.type.dtype, v.type.shape, "in") for i, v in enumerate(body.inputs)]
    taken = {b.name for b in ins}
    outs = []
    for i, v in enumerate(body.outputs):
        name = f"out{i}"
        while name in taken:
            name += "_"
        outs.append(Buffer(name, v.type.dtype, v.type.shape, "out"))
    return ins, outs


def _single(name: str, kind: str, body: Graph) -> Kernel:
    if len(body.nodes) != 1:
        raise LoweringError(f"a {kind} kernel holds one node, this one {len(body.nodes)}")
    node = body.nodes[0]
    ins, outs = _buffers(body)
    if kind == "view":
        if node.op not in (Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE):
            raise LoweringError(f"a view kernel aliases its input; {node.op} needs a copy")
        return Kernel(name, kind, tuple(ins + outs), (), (), ())
    t = Template("node", (), (), body.outputs[0].type.dtype, node=node)
    return Kernel(name, kind, tuple(ins + outs), (), (), (), t)


def _same_shape(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    return len(a) == len(b) and all(dims_equal(x, y) for x, y in zip(a, b))


class _Lowerer:
    def __init__(self, name: str, kind: str, body: Graph) -> None:
        self.name, self.kind = name, kind
        self.graph = decompose(body)
        ins, self.outs = _buffers(self.graph)
        self.ins = dict(zip(self.graph.inputs, ins))
        self.buffers = tuple(ins + self.outs)
        self.top: list[Stmt | Loop] = []
        self.loop: list[Stmt] | None = None
        # (value, index) or (temp, dtype) of a cast -> temp; loop entries live until the loop ends
        self.top_cache: dict[tuple[object, object], str] = {}
        self.loop_cache: dict[tuple[object, object], str] = {}
        self.sizes: dict[sympy.Symbol, Dim] = {}
        self.reduce_syms: set[sympy.Symbol] = set()
        self.results: dict[Node, tuple[Index, str]] = {}  # reductions, templates: own index, temp
        self.count = 0

    # -- axes and emission ------------------------------------------------------------------------

    def axes(self, prefix: str, dims: Sequence[Dim]) -> tuple[tuple[Axis, ...], list[sympy.Expr]]:
        """Axes named prefix0, prefix1..; an axis of extent 1 indexes as 0."""
        axes = tuple(Axis(f"{prefix}{k}", d) for k, d in enumerate(dims))
        exprs: list[sympy.Expr] = []
        for a in axes:
            self.sizes[a.symbol] = a.size
            if prefix == "r":
                self.reduce_syms.add(a.symbol)
            exprs.append(sympy.Integer(0) if isinstance(a.size, int) and a.size == 1 else a.symbol)
        return axes, exprs

    def inner(self, exprs: Sequence[sympy.Basic]) -> bool:
        return any(e.free_symbols & self.reduce_syms for e in exprs)

    def temp(self) -> str:
        self.count += 1
        return f"t{self.count - 1}"

    def emit(self, stmt: Stmt, idx: Sequence[sympy.Basic]) -> str:
        if isinstance(stmt, Reduce) or self.inner(idx):
            assert self.loop is not None, "a loop statement outside a loop"
            self.loop.append(stmt)
        else:
            self.top.append(stmt)
        return getattr(stmt, "dst", "")

    def cast(self, t: str, have: DType, want: DType, idx: Index) -> str:
        if have is want:
            return t
        cache = self.loop_cache if self.inner(idx) else self.top_cache
        if (t, want) not in cache:
            cache[(t, want)] = self.compute("cast", (t,), want, idx, (("dtype", want),))
        return cache[(t, want)]

    def compute(self, op: str, args: tuple[str, ...], dtype: DType, idx: Sequence[sympy.Basic],
                attrs: tuple = ()) -> str:
        return self.emit(Compute(self.temp(), op, args, attrs, dtype), idx)

    def const(self, value: bool | int | float, dtype: DType) -> str:
        key = ("const", (type(value), value, dtype))  # 1, 1.0 and True are equal as dict keys
        if key not in self.top_cache:
            self.top_cache[key] = self.emit(Const(self.temp(), value, dtype), ())
        return self.top_cache[key]

    def finish(self, domain: tuple[Axis, ...], reduce: tuple[Axis, ...],
               template: Template | None = None) -> Kernel:
        """The kernel, its temporaries renumbered t0, t1.. in the order they appear."""
        names: dict[str, str] = {}
        if template is not None:
            names[template.acc] = template.acc

        def rename(st: Stmt) -> Stmt:
            fields: dict[str, object] = {}
            if isinstance(st, Compute):
                fields["args"] = tuple(names[a] for a in st.args)
            elif isinstance(st, (Reduce, Store)):
                fields["value"] = names[st.value]
            if not isinstance(st, Store):
                fields["dst"] = names.setdefault(st.dst, f"t{len(names) - (template is not None)}")
            return dataclasses.replace(st, **fields)  # type: ignore[arg-type]
        body = tuple(Loop(tuple(rename(x) for x in s.body)) if isinstance(s, Loop) else rename(s)
                     for s in self.top)
        return Kernel(self.name, self.kind, self.buffers, domain, reduce, body, template)

    def source(self, v: Value, idx: Index, user: Node) -> tuple[Buffer, sympy.Expr]:
        """The buffer and flat index that ``v`` at ``idx`` reads through views only."""
        while v.node is not None:
            if v.node.op not in VIEWS:
                raise LoweringError(f"an operand of {user.op} is computed by {v.node.op} in the "
                                    "kernel; only views may lead to it")
            idx, v = view_index(v.node, idx, self.sizes), v.node.inputs[0]
        buf = self.ins[v]
        return buf, simplify_index(flat_index(idx, buf.shape), self.sizes)

    def store(self, buf: Buffer, v: Value, idx: Index, shape: Sequence[Dim]) -> None:
        """Store ``v`` at ``idx``, an index over ``shape``: the output's own shape or one equal
        to it up to size-1 dims, whose index is mapped to the output's own."""
        own = align_index(idx, shape, buf.shape)
        t = self.value(v, own)
        index = simplify_index(flat_index(own, buf.shape), self.sizes)
        self.emit(Store(buf.name, index, t), [index])

    def close_loop(self) -> None:
        assert self.loop is not None
        self.top.append(Loop(tuple(self.loop)))
        self.loop, self.loop_cache = None, {}

    # -- values -----------------------------------------------------------------------------------

    def value(self, v: Value, idx: Index) -> str:
        cache = self.loop_cache if self.inner(idx) else self.top_cache
        key = (v, idx)
        if key not in cache:
            cache[key] = self._compute(v, idx)
        return cache[key]

    def _compute(self, v: Value, idx: Index) -> str:
        if v.node is None:
            buf = self.ins[v]
            index = simplify_index(flat_index(idx, buf.shape), self.sizes)
            return self.emit(Load(self.temp(), buf.name, index, buf.dtype), [index])
        node = v.node
        if node.op in VIEWS:
            return self.value(node.inputs[0], view_index(node, idx, self.sizes))
        if node in self.results:
            own, t = self.results[node]
            if len(own) != len(idx) or any(sympy.expand(a - b) != 0 for a, b in zip(own, idx)):
                raise LoweringError(f"the result of {node.op} is read at {list(idx)}, not at its own "
                                    f"index {list(own)}")
            return t
        if node.op.family in POINTWISE:
            return self._pointwise(node, idx)
        if node.op is Op.FULL:
            value, dtype = node.attrs["value"], node.attrs["dtype"]
            if isinstance(value, sympy.Basic):
                return self.emit(IndexValue(self.temp(), value, dtype), ())
            return self.const(value, dtype)
        if node.op is Op.ARANGE:
            a = node.attrs
            expr = sympy.sympify(a["start"]) + sympy.sympify(a["step"]) * idx[0]
            return self.emit(IndexValue(self.temp(), expr, a["dtype"]), idx)
        raise LoweringError(f"{node.op} cannot be lowered in a {self.kind} kernel")

    def _pointwise(self, node: Node, idx: Index) -> str:
        op, out = node.op, node.output.type.dtype
        types = [x.type for x in node.inputs]
        if op.family is Family.COMPARE:
            work = elementwise_dtype(types)
        elif op in U_FLOAT and not types[0].dtype.is_float:
            work = DEFAULT_FLOAT
        elif op in U_BOOL:
            work = types[0].dtype
        else:
            work = out
        args = []
        for i, x in enumerate(node.inputs):
            xi = broadcast_index(idx, x.type.shape)
            keep = op is Op.CAST or (op is Op.WHERE and i == 0)
            args.append(self.cast(self.value(x, xi), x.type.dtype, x.type.dtype if keep else work, xi))
        return self.compute(op.value, tuple(args), out, idx, tuple(node.attrs.items()))

    # -- kernels ----------------------------------------------------------------------------------

    def run(self) -> Kernel:
        reds = [n for n in self.graph.nodes if n.op in PRIMITIVE_REDUCTIONS]
        tmpl = [n for n in self.graph.nodes if n.op in TEMPLATE_OPS]
        if self.kind in ("matmul", "conv"):
            return self._template(tmpl)
        if tmpl:
            raise LoweringError(f"a {self.kind} kernel cannot hold {tmpl[0].op}")
        if self.kind == "reduction" and reds:
            return self._reduction(reds)
        if reds:
            raise LoweringError(f"a pointwise kernel cannot hold {reds[0].op}")
        shape = self.outs[0].shape if self.outs else ()
        domain, idx = self.axes("i", shape)
        self._store_all(shape, tuple(idx), exact=True)
        return self.finish(domain, ())

    def _store_all(self, shape: Sequence[Dim], idx: Index, exact: bool) -> None:
        """Store every output over the domain ``shape``: of that shape when ``exact``
        (pointwise), else of that shape up to size-1 dims (matmul, conv)."""
        for v, buf in zip(self.graph.outputs, self.outs):
            if not (_same_shape if exact else same_up_to_ones)(buf.shape, shape):
                what = "" if exact else " up to size-1 dims"
                raise LoweringError(f"output {buf.name} is {list(buf.shape)}, not the domain "
                                    f"{list(shape)}{what}")
            self.store(buf, v, idx, shape)

    def _reduction(self, reds: list[Node]) -> Kernel:
        full = reds[0].inputs[0].type.shape
        rset = _reduced_axes(reds[0])
        for n in reds[1:]:
            if not _same_shape(n.inputs[0].type.shape, full) or _reduced_axes(n) != rset:
                raise LoweringError(f"{n.op} reduces another domain than {reds[0].op}")
        domain, didx = self.axes("i", [d for k, d in enumerate(full) if k not in rset])
        reduce, ridx = self.axes("r", [d for k, d in enumerate(full) if k in rset])
        outer, inner = iter(didx), iter(ridx)
        full_idx = tuple(next(inner) if k in rset else next(outer) for k in range(len(full)))
        keep_idx = tuple(sympy.Integer(0) if k in rset else e for k, e in enumerate(full_idx))
        depth: dict[Value, int] = {}
        for n in self.graph.nodes:
            d = max((depth.get(v, 0) for v in n.inputs), default=0) + (n in reds)
            depth.update((o, d) for o in n.outputs)
        for level in range(1, max(depth[n.output] for n in reds) + 1):
            self.loop = []
            for n in (n for n in reds if depth[n.output] == level):
                x, dtype = n.inputs[0], n.output.type.dtype
                t = self.value(x, full_idx)
                op = PRIMITIVE_REDUCTIONS[n.op]
                if op not in ("argmax", "argmin"):
                    t = self.cast(t, x.type.dtype, dtype, full_idx)
                dst = self.emit(Reduce(self.temp(), op, t, dtype), full_idx)
                own = keep_idx if n.output.type.rank == len(full) else tuple(didx)
                self.results[n] = (own, dst)
            self.close_loop()
        keep = [1 if k in rset else d for k, d in enumerate(full)]
        late = []
        for v, buf in zip(self.graph.outputs, self.outs):  # each up to size-1 dims
            if same_up_to_ones(buf.shape, full):
                late.append((v, buf))
            elif same_up_to_ones(buf.shape, keep):
                self.store(buf, v, keep_idx, keep)
            else:
                raise LoweringError(f"output {buf.name} is {list(buf.shape)}, neither the reduced "
                                    f"domain {list(full)} nor its reduction, up to size-1 dims")
        if late:
            self.loop = []
            for v, buf in late:
                self.store(buf, v, full_idx, full)
            self.close_loop()
        return self.finish(domain, reduce)

    def _template(self, tmpl: list[Node]) -> Kernel:
        want = Op.CONVOLUTION if self.kind == "conv" else None
        if len(tmpl) != 1 or (tmpl[0].op is Op.CONVOLUTION) != (want is not None):
            raise LoweringError(f"a {self.kind} kernel holds exactly one {self.kind} node")
        node = tmpl[0]
        shape = node.output.type.shape
        domain, didx = self.axes("i", shape)
        idx = tuple(didx)
        build = conv_template if self.kind == "conv" else matmul_template
        template, reduce, acc = build(self, node, idx)
        self.results[node] = (idx, acc)
        self._store_all(shape, idx, exact=False)
        return self.finish(domain, reduce, template)


def _reduced_axes(n: Node) -> frozenset[int]:
    rank = n.inputs[0].type.rank
    if n.op in (Op.ARGMAX, Op.ARGMIN):
        dims = None if n.attrs["dim"] is None else [n.attrs["dim"]]
    else:
        dims = n.attrs["dims"] or None
    if rank == 0:
        return frozenset()
    return frozenset(range(rank)) if dims is None else frozenset(normalize_axis(d, rank) for d in dims)
