"""Hypothesis strategies for random well-typed effc graphs, their inputs, and broken variants.

    @given(case=graphs(max_nodes=12, symbolic=None))
    def test_something(case):
        note(str(case.graph))
        out = ReferenceProgram(case.graph)(*case.inputs({s0: 3}, seed=0))

``graphs`` builds each graph with ``GraphBuilder`` from generators in ``strategy_ops`` (the
builder, elementwise ops), ``strategy_shapes`` (reductions, matmul, convolution + batch norm,
norms, layout, indexing) and ``strategy_patterns`` (redundant computations, constant regions,
arange, extern). A ``GraphCase`` prints as its IR text, so a falsifying
example shows the minimal graph. ``broken_graphs`` applies one mutation that the verifier must
reject, building the ``Node``/``Graph`` objects directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import sympy
import torch
from hypothesis import settings
from hypothesis import strategies as st

from effc.ir import DType, Graph, Node, Op, TensorType, Value

from .strategy_ops import ELEMENTWISE, MAX_SIZE, MIN_SIZE, SYMBOLS, Builder
from .strategy_patterns import PATTERNS
from .strategy_shapes import STRUCTURED

GENERATORS = ELEMENTWISE + STRUCTURED + PATTERNS
Sizes = Mapping[sympy.Symbol, int]


@dataclass(frozen=True)
class GraphCase:
    """A generated graph; ``inputs(sizes, seed)`` makes matching input tensors."""

    graph: Graph
    symbolic: bool = False

    @property
    def symbols(self) -> list[sympy.Symbol]:
        return sorted(self.graph.symbols(), key=str)

    def shapes(self, sizes: Sizes | None = None) -> list[tuple[int, ...]]:
        env = dict(sizes or {})
        return [tuple(d if isinstance(d, int) else int(d.subs(env)) for d in v.type.shape)
                for v in self.graph.inputs]

    def inputs(self, sizes: Sizes | None = None, seed: int = 0) -> list[torch.Tensor]:
        """Uniform in [-2, 2] (every input is floating point) at the given symbol sizes."""
        gen = torch.Generator().manual_seed(seed)
        out = []
        for v, shape in zip(self.graph.inputs, self.shapes(sizes)):
            t = torch.rand(shape, generator=gen, dtype=torch.float64) * 4 - 2
            out.append(t.to(v.type.dtype.to_torch()))
        return out

    def __str__(self) -> str:
        return str(self.graph)

    def __repr__(self) -> str:
        return "\n" + str(self.graph)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # how hypothesis shows a failing case
        p.text(repr(self))


def _build(draw: Callable[[st.SearchStrategy[Any]], Any], max_nodes: int, symbolic: bool | None,
           dtypes: Sequence[DType]) -> GraphCase:
    sym = draw(st.booleans()) if symbolic is None else symbolic
    s = Builder(draw, sym, dtypes, draw(st.integers(0, 2**16)), max_nodes)
    for i in range(draw(st.integers(1, 2))):
        shape = [s.dim() for _ in range(draw(st.integers(0 if i else 1, 4)))]
        if sym and i == 0 and not any(not isinstance(d, int) for d in shape):
            shape[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from(SYMBOLS))
        s.input(shape)
    target = draw(st.integers(1, max_nodes))
    tries = 0
    while len(s.b.nodes) < target and tries < 4 * max_nodes:
        tries += 1
        s.attempt(draw(st.sampled_from(GENERATORS)))
    produced = [v for v in s.pool if v.node is not None]
    last = produced[-1] if produced else s.pool[-1]
    extra = draw(st.lists(st.sampled_from(s.pool), max_size=2))
    return GraphCase(s.b.build([last, *extra]), sym)


def graphs(max_nodes: int = 12, symbolic: bool | None = None,
           dtypes: Sequence[DType] = (DType.F32,)) -> st.SearchStrategy[GraphCase]:
    """Random well-typed graphs of at most ``max_nodes`` nodes over inputs of ``dtypes``.

    ``symbolic=True``: the first input has at least one size-symbol axis (s0, s1), and every op
    is valid for every size in [MIN_SIZE, MAX_SIZE]; False: static shapes only; None: either.
    """
    return st.composite(lambda draw: _build(draw, max_nodes, symbolic, tuple(dtypes)))()


def sizes(case: GraphCase, avoid: Sizes | None = None) -> st.SearchStrategy[dict[sympy.Symbol, int]]:
    """Concrete sizes for the case's symbols, different from ``avoid`` when there are any."""
    syms = case.symbols

    def fix(env: dict[sympy.Symbol, int]) -> dict[sympy.Symbol, int]:
        if syms and avoid is not None and all(env[k] == avoid.get(k) for k in syms):
            k = syms[0]
            env[k] = MIN_SIZE + (env[k] - MIN_SIZE + 1) % (MAX_SIZE - MIN_SIZE + 1)
        return env
    return st.fixed_dictionaries({k: st.integers(MIN_SIZE, MAX_SIZE) for k in syms}).map(fix)


def examples(n: int) -> settings:
    """``n`` examples under the bounded 'ci' profile (test files choose ``n`` to stay fast);
    exploratory profiles such as 'deep' keep their own, larger count."""
    return settings(max_examples=n) if settings.default.max_examples <= 40 else settings()


# -- broken graphs ---------------------------------------------------------------------------

MUTATIONS = ("swap_dependent", "wrong_dtype", "wrong_shape", "drop_attribute",
             "missing_constant", "undefined_value")


Edit = Callable[[Node], tuple[Any, ...]]


def _copy(graph: Graph, edit: Mapping[int, Edit]) -> tuple[list[Node], list[Value]]:
    """Fresh Node objects for ``graph``'s nodes; ``edit[i](node)`` gives (op, inputs, attrs, types)."""
    vmap: dict[Value, Value] = {}
    nodes = []
    for i, n in enumerate(graph.nodes):
        op, ins, attrs, types = (edit[i](n) if i in edit else
                                 (n.op, n.inputs, dict(n.attrs), [v.type for v in n.outputs]))
        new = Node(op, [vmap.get(v, v) for v in ins], attrs, types)
        vmap.update(zip(n.outputs, new.outputs))
        nodes.append(new)
    return nodes, [vmap.get(v, v) for v in graph.outputs]


def _wrong_type(draw: Callable[[st.SearchStrategy[Any]], Any], t: TensorType, dtype: bool) -> TensorType:
    if dtype:
        return t.with_dtype(draw(st.sampled_from([d for d in DType if d is not t.dtype])))
    if t.rank == 0 or draw(st.booleans()):
        return t.with_shape(t.shape + (draw(st.integers(1, 3)),))
    i = draw(st.integers(0, t.rank - 1))
    return t.with_shape(t.shape[:i] + (t.shape[i] + draw(st.integers(1, 3)),) + t.shape[i + 1:])


def _mutate(draw: Callable[[st.SearchStrategy[Any]], Any], g: Graph, kind: str) -> Graph:
    idx = range(len(g.nodes))
    if kind == "swap_dependent":  # a user moved before the node it uses
        pos = {n: i for i, n in enumerate(g.nodes)}
        pairs = [(pos[v.node], j) for j, n in enumerate(g.nodes) for v in n.inputs if v.node is not None]
        i, j = draw(st.sampled_from(pairs))
        nodes, outs = _copy(g, {})
        nodes[i], nodes[j] = nodes[j], nodes[i]
        return Graph(g.inputs, nodes, outs, g.constants)
    if kind in ("wrong_dtype", "wrong_shape"):  # a recorded type the rule does not infer
        i = draw(st.sampled_from([i for i in idx if g.nodes[i].op is not Op.EXTERN]))
        k = draw(st.integers(0, len(g.nodes[i].outputs) - 1))

        def retype(n: Node) -> tuple[Any, ...]:
            types = [v.type for v in n.outputs]
            types[k] = _wrong_type(draw, types[k], kind == "wrong_dtype")
            return n.op, n.inputs, dict(n.attrs), types
        return Graph(g.inputs, *_copy(g, {i: retype}), g.constants)
    if kind == "drop_attribute":
        i = draw(st.sampled_from([i for i in idx if g.nodes[i].attrs]))
        key = draw(st.sampled_from(sorted(g.nodes[i].attrs)))
        return Graph(g.inputs, *_copy(g, {i: lambda n: (n.op, n.inputs, {k: a for k, a in n.attrs.items()
                                                                          if k != key},
                                                          [v.type for v in n.outputs])}), g.constants)
    if kind == "missing_constant":
        consts = [i for i in idx if g.nodes[i].op is Op.CONSTANT]
        if consts and draw(st.booleans()):  # the table lost the tensor
            name = g.nodes[draw(st.sampled_from(consts))].attrs["name"]
            return Graph(g.inputs, *_copy(g, {}), {k: t for k, t in g.constants.items() if k != name})
        nodes, outs = _copy(g, {})
        stray = Node(Op.CONSTANT, (), {"name": "no_such_constant"}, [TensorType(DType.F32, (2,))])
        nodes.insert(draw(st.integers(0, len(nodes))), stray)
        return Graph(g.inputs, nodes, outs, g.constants)
    # undefined_value: an operand (or output) that nothing in the graph defines
    users = [i for i in idx if g.nodes[i].inputs]
    if users and draw(st.booleans()):
        i = draw(st.sampled_from(users))
        j = draw(st.integers(0, len(g.nodes[i].inputs) - 1))
        old = g.nodes[i].inputs[j]
        ghost = Value(old.type) if draw(st.booleans()) else Node(Op.NEG, [], {}, [old.type]).outputs[0]

        def rewire(n: Node) -> tuple[Any, ...]:
            ins = list(n.inputs)
            ins[j] = ghost
            return n.op, ins, dict(n.attrs), [v.type for v in n.outputs]
        return Graph(g.inputs, *_copy(g, {i: rewire}), g.constants)
    nodes, outs = _copy(g, {})
    outs[draw(st.integers(0, len(outs) - 1))] = Value(outs[0].type, name="ghost")
    return Graph(g.inputs, nodes, outs, g.constants)


def _applicable(g: Graph, kind: str) -> bool:
    if kind == "swap_dependent":
        return any(v.node is not None for n in g.nodes for v in n.inputs)
    if kind in ("wrong_dtype", "wrong_shape"):  # an extern's types are its own: nothing to check
        return any(n.op is not Op.EXTERN for n in g.nodes)
    if kind == "drop_attribute":
        return any(n.attrs for n in g.nodes)
    return True


def broken_graphs(max_nodes: int = 12) -> st.SearchStrategy[tuple[GraphCase, str, Graph]]:
    """(case, mutation name, mutated graph) where the mutation breaks an IR invariant."""
    @st.composite
    def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> tuple[GraphCase, str, Graph]:
        case = draw(graphs(max_nodes))
        kind = draw(st.sampled_from([k for k in MUTATIONS if _applicable(case.graph, k)]))
        return case, kind, _mutate(draw, case.graph, kind)
    return build()
