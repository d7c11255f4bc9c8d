"""Constant folding: evaluate nodes whose inputs are all known, and store the results.

    %0 = constant() {name="w"} : f32[8, 4]
    %1 = permute(%0) {dims=[1, 0]} : f32[4, 8]
    %2 = matmul(%x, %1) : f32[2, 8]
    return %2
  ->
    %0 = constant() {name="w.folded"} : f32[4, 8]
    %1 = matmul(%x, %0) : f32[2, 8]
    return %1

A value is known when it is a constant, a ``full``/``arange`` node with static attributes, or
a node computed from known values. Nodes are evaluated with the reference backend's kernels,
which define what each op means, so a folded constant holds exactly what the graph would have
computed at run time (in the same dtype, not widened).

[Note: what is not folded]
- ``extern`` nodes: their torch op may be random or stateful.
- nodes with a symbolic attribute or type: the value depends on the call's sizes.
- nodes whose result is much larger than their inputs, in elements (``expand`` of a scalar to
  a big shape) or in bytes (an int8 weight cast to f32, which would undo its quantization):
  storing it would cost memory the graph does not spend today. Such a node is kept,
  reported in ``rejected``, and still counts as known, so a reduction after it can fold.
- ``full`` and ``arange`` themselves: they are cheap to run, smaller than any constant, and
  later passes (simplify, fusion) read their scalar value from the attributes.
- a ``permute`` read only as a matmul operand (a linear layer's weight transpose): the
  matmul reads either layout (a view at run time, a transposed operand for a GEMM template),
  and a stored copy would change which layout the kernel sees and duplicate the weight while
  the original is still used elsewhere.
"""

from __future__ import annotations

from typing import Sequence

import torch

from effc.backends.reference.kernels import KERNELS
from effc.ir import Graph, Node, Op, Value
from effc.ir.attrs import symbols_in
from effc.ir.rewrite import Rewriter
from effc.ir.types import TensorType
from effc.options import Options

from .manager import PassResult

NAME = "fold_constants"

# A folded result may be this many elements (four times as many bytes) however small its
# inputs are (a small table is cheaper stored than recomputed) ...
MIN_GROWTH_LIMIT = 4096
# ... and otherwise no more than this many times the elements of its inputs.
GROWTH_FACTOR = 2
# Nothing is evaluated at compile time past this many elements in or out: a graph may build a
# huge temporary (full of a model-sized shape) that only run time should pay for.
MAX_EVAL_ELEMENTS = 1 << 26


def _static(types: Sequence[TensorType]) -> bool:
    return all(t.is_static for t in types)


def _numel(types: Sequence[TensorType]) -> int:
    return sum(int(t.numel()) for t in types)


def _nbytes(types: Sequence[TensorType]) -> int:
    return sum(int(t.numel()) * t.dtype.itemsize for t in types)


def _growth(sources: Sequence[TensorType], outs: Sequence[TensorType]) -> str | None:
    """Why storing ``outs`` costs too much next to the stored ``sources`` they come from."""
    for unit, size in (("elements", _numel), ("bytes", _nbytes)):
        n_in, n_out = size(sources), size(outs)
        limit = MIN_GROWTH_LIMIT * (1 if unit == "elements" else 4)
        if n_out > max(limit, GROWTH_FACTOR * n_in):
            return (f"result of {n_out} {unit} from constants of {n_in}; storing it would cost "
                    f"more memory than computing it")
    return None


_MATMULS = (Op.MATMUL, Op.ADDMM, Op.LINEAR)


def _feeds_only_matmuls(node: Node, users: dict[Value, list[Node]], graph: Graph) -> bool:
    us = users.get(node.output, [])
    return bool(us) and node.output not in graph.outputs and all(u.op in _MATMULS for u in us)


class _Known:
    """Tensors of known source values, evaluated on demand and kept once computed."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.tensors: dict[Value, torch.Tensor] = {}
        self.pending: dict[Value, Node] = {}  # known, but not evaluated yet

    def __contains__(self, v: Value) -> bool:
        return v in self.tensors or v in self.pending

    def add_constant(self, node: Node) -> None:
        self.tensors[node.output] = self.graph.constant(node)

    def add_lazy(self, node: Node) -> None:
        for v in node.outputs:
            self.pending[v] = node

    def __getitem__(self, v: Value) -> torch.Tensor:
        if v not in self.tensors:
            self.evaluate(self.pending[v])
        return self.tensors[v]

    def evaluate(self, node: Node) -> tuple[torch.Tensor, ...]:
        """Run ``node``'s kernel on its (known) inputs; raise ValueError on a type mismatch."""
        out = KERNELS[node.op]([self[v] for v in node.inputs], dict(node.attrs))
        outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        if len(outs) != len(node.outputs):
            raise ValueError(f"the kernel gave {len(outs)} results for {len(node.outputs)} outputs")
        for v, t in zip(node.outputs, outs):
            if t.dtype != v.type.dtype.to_torch() or tuple(t.shape) != v.type.shape:
                raise ValueError(f"the kernel gave {t.dtype}{list(t.shape)}, "
                                 f"the IR records {v.type}")
            self.tensors[v] = t
            self.pending.pop(v, None)
        return outs


def run(graph: Graph, options: Options) -> PassResult:
    rw = Rewriter(graph)
    known = _Known(graph)
    notes: list[str] = []
    rejected: list[str] = []
    # Folded values wait here until a node that stays (or the graph's return) uses them, so a
    # chain of folds stores one constant, named after the chain's first input.
    waiting: dict[Value, tuple[str, tuple[str, ...]]] = {}  # value -> (base name, ops folded)
    # The constant and creation nodes a known value is computed from. Growth is judged against
    # them, not against the intermediate values of a chain, which are never stored: otherwise
    # mul(cast(w_int8, f32), scale) would pass where cast(w_int8, f32) alone does not.
    sources: dict[Value, frozenset[Node]] = {}

    def emit(values: Sequence[Value]) -> None:
        for v in values:
            if v in waiting and v not in rw.vmap:
                base, ops = waiting[v]
                # A fresh, contiguous tensor: a view would alias the input graph's constants.
                t = known[v].clone(memory_format=torch.contiguous_format)
                new = rw.b.constant(t, f"{base}.folded")
                rw.replace(v, new)
                assert new.node is not None
                notes.append(f"folded {', '.join(ops)} : {v.type} into constant "
                             f"{new.node.attrs['name']}")

    def keep(node: Node) -> None:
        emit(node.inputs)
        rw.copy(node)

    def base_of(v: Value) -> tuple[str, tuple[str, ...]]:
        if v in waiting:
            return waiting[v]
        assert v.node is not None
        return (v.node.attrs["name"] if v.node.op is Op.CONSTANT else v.node.op.value), ()

    users = graph.users()
    for node in graph.nodes:
        out_types = [v.type for v in node.outputs]
        if node.op is Op.PERMUTE and _feeds_only_matmuls(node, users, graph):
            keep(node)
            if all(v in known for v in node.inputs):
                known.add_lazy(node)
                sources[node.output] = frozenset().union(*(sources[v] for v in node.inputs))
            continue
        if node.op is Op.CONSTANT:
            keep(node)
            known.add_constant(node)
            sources[node.output] = frozenset([node])
            continue
        evaluable = (node.op is not Op.EXTERN and all(v in known for v in node.inputs)
                     and not symbols_in(node.attrs) and _static(out_types))
        if not evaluable:
            keep(node)
            continue
        if not node.inputs:  # full / arange: known, left in place (see the note above)
            keep(node)
            known.add_lazy(node)
            sources[node.output] = frozenset([node])
            continue
        where = f"{node.op} : {', '.join(map(str, out_types))}"
        # Evaluating materialises every input and result, however little of it is stored.
        size_in, size_out = _numel([v.type for v in node.inputs]), _numel(out_types)
        if max(size_in, size_out) > MAX_EVAL_ELEMENTS:
            rejected.append(f"{where}: {max(size_in, size_out)} elements are too many to evaluate "
                            f"while compiling")
            keep(node)
            continue
        roots = frozenset().union(*(sources[v] for v in node.inputs))
        too_big = _growth([n.output.type for n in roots], out_types)
        if too_big:
            rejected.append(f"{where}: {too_big}")
            keep(node)
            known.add_lazy(node)
            for v in node.outputs:
                sources[v] = roots
            continue
        try:
            known.evaluate(node)
        except Exception as e:  # noqa: BLE001 - an op that fails on these values stays a node
            rejected.append(f"{where}: evaluating it failed: {e}")
            keep(node)
            continue
        base = base_of(node.inputs[0])[0]
        chain = [op for v in node.inputs for op in base_of(v)[1]] + [node.op.value]
        ops = tuple(dict.fromkeys(chain))
        for v in node.outputs:
            waiting[v] = (base, ops)
            sources[v] = roots
    emit(graph.outputs)
    if not notes:
        return PassResult(graph, False, (), tuple(rejected))
    return PassResult(rw.finish_pruned(), True, tuple(notes), tuple(rejected))
