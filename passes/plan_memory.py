"""Memory planning: liveness over the node sequence, buffer reuse in one arena, in-place updates.

The plan does not change the graph; it says where each intermediate lives:

    graph(%x: f32[s0, 64]) {
      %0 = exp(%x) : f32[s0, 64]          buffer 0, live over steps [0, 4], offset 0
      %1 = relu(%0) : f32[s0, 64]         in place in buffer 0 (%0 dies here)
      %2 = reshape(%1) {shape=[-1]} : f32[64*s0]    a view of buffer 0
      %3 = sin(%2) : f32[64*s0]           buffer 1, live [3, 5], offset 256*s0 (%2 lives on)
      %4 = add(%3, %2) : f32[64*s0]       in place in buffer 1
      return %4
    }
    arena = 512*s0 bytes (naive, one allocation per value: 1024*s0)

[Note: memory plan]
- *Buffers* are the outputs of the graph's top-level nodes, kernel nodes included, in node
  order. Graph inputs and constants are not in the arena: the caller and the weights own
  them, and a view of one is not in the arena either. Graph outputs are: they are written
  into the arena like any other buffer and stay live to the end of the call (step
  ``len(graph.nodes)``), so the caller copies them out before the arena is reused.
- *Views* (reshape, squeeze, unsqueeze; kernel nodes of kind "view") share their input's
  storage: buffers are contiguous, so no copy is made; the storage lives until its last view
  is last used.
- *In place*: a node of the pointwise families (or a kernel of kind "pointwise") with one
  output writes into the storage of an input of the same element count and item size whose
  last use (through every view) is this node, unless that storage also holds a graph output.
  For a kernel the input must reach the output only through pointwise and view nodes, so
  element i of the result reads element i of the input and nothing else.
- *Liveness*: a storage is live from the step that defines it through the last use of any
  value stored in it (inclusive: a node reads its inputs while it writes its outputs).
- *Sizes* are sympy expressions, ``numel * itemsize`` rounded up to ``ALIGN`` bytes so that
  every offset suits vector loads; offsets are formulas too (passes/arena.py, [Note: symbolic
  offsets]) and one lambdified function evaluates them all once per call.

``plan(graph, hint)`` is pure; ``run`` only reports. Budget handling (patch scheduling) goes
between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import sympy

from effc.ir import Family, Graph, Node, Op, Value
from effc.ir.types import dims_equal
from effc.options import DEFAULT_HINT, Options

from . import arena as arena_mod
from .manager import PassResult

NAME = "plan_memory"
ALIGN = 64
VIEW_OPS = frozenset({Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE})
POINTWISE = frozenset({Family.UNARY, Family.BINARY, Family.COMPARE, Family.TERNARY, Family.CAST})


@dataclass(frozen=True)
class Buffer:
    """One storage in the arena: made by ``value``, shared by ``views`` and ``inplace``."""

    index: int
    value: Value
    size: sympy.Expr          # bytes, a multiple of ALIGN
    offset: sympy.Expr        # bytes from the arena's start
    start: int                # step (index in graph.nodes) that writes it first
    end: int                  # last step that reads it; len(graph.nodes) for graph outputs
    views: tuple[Value, ...] = ()
    inplace: tuple[Value, ...] = ()   # pointwise results written over it, in order

    @property
    def values(self) -> tuple[Value, ...]:
        return (self.value, *self.inplace, *self.views)

    def live_at(self, step: int) -> bool:
        return self.start <= step <= self.end

    def conflicts(self, other: "Buffer") -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass(frozen=True)
class MemoryPlan:
    graph: Graph
    buffers: tuple[Buffer, ...]
    arena: sympy.Expr
    strategy: str                      # the strategy kept
    candidates: Mapping[str, int]      # arena bytes at the hint, per strategy tried
    hint: Mapping[sympy.Symbol, int]
    symbols: tuple[sympy.Symbol, ...]
    allocations: tuple[sympy.Expr, ...]   # one per value a plan without reuse allocates
    storage: Mapping[Value, int] = field(repr=False)    # every arena value -> buffer index
    _evaluate: Callable[..., Any] = field(repr=False, compare=False)
    # the placement ``_evaluate`` was made from: a pickled plan makes it again from this
    layout: arena_mod.Layout | None = field(default=None, repr=False, compare=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # the lambdified evaluator cannot be pickled; it is rebuilt from the layout
        if self.layout is None:
            raise TypeError("a memory plan without its layout cannot be pickled")
        return (_unpickle_plan, (self.graph, self.buffers, self.arena, self.strategy, dict(self.candidates),
                                 dict(self.hint), self.symbols, self.allocations, dict(self.storage),
                                 self.layout))

    def buffer_of(self, value: Value) -> Buffer | None:
        i = self.storage.get(value)
        return None if i is None else self.buffers[i]

    def _args(self, env: Mapping[sympy.Symbol, int]) -> list[int]:
        missing = [s for s in self.symbols if s not in env]
        if missing:
            raise KeyError(f"memory plan needs a value for {', '.join(map(str, missing))}")
        return [int(env[s]) for s in self.symbols]

    def evaluate(self, env: Mapping[sympy.Symbol, int]) -> dict[str, Any]:
        """``{"offsets": [bytes per buffer], "arena": bytes}`` for these symbol values."""
        *offsets, arena = self._evaluate(*self._args(env))
        return {"offsets": [int(o) for o in offsets], "arena": int(arena)}

    def sizes(self, env: Mapping[sympy.Symbol, int]) -> list[int]:
        return [_at(b.size, env) for b in self.buffers]

    def naive_bytes(self, env: Mapping[sympy.Symbol, int]) -> int:
        """Bytes if every value got its own allocation (views excepted), with no reuse."""
        return sum(_at(a, env) for a in self.allocations)

    def lower_bound(self, env: Mapping[sympy.Symbol, int]) -> int:
        """Max over steps of the bytes live at that step: no placement does better."""
        sizes = self.sizes(env)
        steps = {b.start for b in self.buffers}
        return max((sum(s for b, s in zip(self.buffers, sizes) if b.live_at(t)) for t in steps),
                   default=0)

    def summary(self, env: Mapping[sympy.Symbol, int] | None = None,
                eager_bytes: int | None = None) -> str:
        """One line: peak against the naive plan, the lower bound and (if given) eager PyTorch."""
        env = dict(self.hint if env is None else env)
        peak = self.evaluate(env)["arena"]
        naive, bound = self.naive_bytes(env), self.lower_bound(env)
        others = ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(self.candidates.items())
                           if k != self.strategy)
        parts = [f"arena {_fmt(peak)} ({self.strategy}; {others} at the hint)",
                 f"naive {_fmt(naive)} ({_ratio(peak, naive)})",
                 f"lower bound {_fmt(bound)}"]
        if eager_bytes is not None:
            parts.append(f"eager PyTorch {_fmt(eager_bytes)} ({_ratio(peak, eager_bytes)})")
        nviews = sum(len(b.views) for b in self.buffers)
        ninplace = sum(len(b.inplace) for b in self.buffers)
        parts.append(f"{len(self.buffers)} buffers, {ninplace} in place, {nviews} views")
        if self.symbols:
            parts.append("at " + ", ".join(f"{s}={env[s]}" for s in self.symbols))
        return "; ".join(parts)


def _unpickle_plan(graph: Graph, buffers: tuple[Buffer, ...], arena: sympy.Expr, strategy: str,
                   candidates: dict[str, int], hint: dict[sympy.Symbol, int], symbols: tuple[sympy.Symbol, ...],
                   allocations: tuple[sympy.Expr, ...], storage: dict[Value, int],
                   layout: arena_mod.Layout) -> MemoryPlan:
    fn = arena_mod.evaluator(layout, [b.size for b in buffers], symbols)
    return MemoryPlan(graph, buffers, arena, strategy, candidates, hint, symbols, allocations, storage, fn, layout)


def _at(expr: sympy.Expr, env: Mapping[sympy.Symbol, int]) -> int:
    return int(expr) if expr.is_number else int(expr.subs(env))


def _fmt(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}x" if b else "-"


def aligned_bytes(value: Value) -> sympy.Expr:
    n = sympy.sympify(value.type.numel()) * value.type.dtype.itemsize
    return ALIGN * sympy.ceiling(n / ALIGN)


# -- liveness ---------------------------------------------------------------------------------

class _Storage:
    __slots__ = ("value", "start", "end", "views", "inplace")

    def __init__(self, value: Value, start: int, end: int) -> None:
        self.value, self.start, self.end = value, start, end
        self.views: list[Value] = []
        self.inplace: list[Value] = []


def _is_view(node: Node) -> bool:
    if node.op is Op.KERNEL:
        return node.attrs["kind"] == "view" and len(node.outputs) == 1 and bool(node.inputs)
    return node.op in VIEW_OPS


def _same_bytes(a: Value, b: Value) -> bool:
    return (a.type.dtype.itemsize == b.type.dtype.itemsize
            and dims_equal(a.type.numel(), b.type.numel()))


def _elementwise_from(body: Graph, arg: Value) -> bool:
    """Every node of ``body`` that depends on ``arg`` is pointwise or a view [Note: memory plan]."""
    reached = {arg}
    for n in body.nodes:
        if any(v in reached for v in n.inputs):
            if not (n.op.family in POINTWISE or n.op in VIEW_OPS):
                return False
            reached.update(n.outputs)
    return True


def _inplace_ok(node: Node, pos: int) -> bool:
    """May ``node`` write its one output over its input number ``pos``?"""
    if len(node.outputs) != 1:
        return False
    if node.op is Op.KERNEL:
        ok = (node.attrs["kind"] == "pointwise"
              and _elementwise_from(node.attrs["body"], node.attrs["body"].inputs[pos]))
    else:
        ok = node.op.family in POINTWISE
    return ok and _same_bytes(node.inputs[pos], node.output)


def _liveness(graph: Graph) -> tuple[list[_Storage], dict[Value, int]]:
    end_step = len(graph.nodes)
    use: dict[Value, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            use[v] = i
    for v in graph.outputs:
        use[v] = end_step
    storages: list[_Storage] = []
    home: dict[Value, int] = {}           # arena value -> storage index

    def join(s: int, v: Value, step: int) -> None:
        home[v] = s
        storages[s].end = max(storages[s].end, use.get(v, step))

    for i, node in enumerate(graph.nodes):
        if node.op is Op.CONSTANT:
            continue
        if _is_view(node):
            src = home.get(node.inputs[0])
            if src is not None:      # a view of an input or constant stays outside the arena
                storages[src].views.append(node.output)
                join(src, node.output, i)
            continue
        target = None
        for pos, v in enumerate(node.inputs):
            s = home.get(v)
            if s is not None and storages[s].end == i and _inplace_ok(node, pos):
                target = s
                break
        for v in node.outputs:
            if target is not None:
                storages[target].inplace.append(v)
                join(target, v, i)
            else:
                storages.append(_Storage(v, i, i))
                join(len(storages) - 1, v, i)
    return storages, home


def live_peak(graph: Graph, env: Mapping[sympy.Symbol, int]) -> int:
    """The liveness lower bound of ``graph``'s arena at ``env`` without placing anything: what
    a schedule search can afford to compute for every candidate."""
    storages, _ = _liveness(graph)
    sizes = [_at(aligned_bytes(s.value), env) for s in storages]
    events = sorted([(s.start, n) for s, n in zip(storages, sizes)] +
                    [(s.end + 1, -n) for s, n in zip(storages, sizes)], key=lambda e: (e[0], e[1]))
    live = peak = 0
    for _, n in events:
        live += n
        peak = max(peak, live)
    return peak


# -- the plan ---------------------------------------------------------------------------------

def plan(graph: Graph, hint: Mapping[sympy.Symbol, int]) -> MemoryPlan:
    """Plan ``graph``'s intermediates into one arena; strategies are compared at ``hint``."""
    storages, home = _liveness(graph)
    sizes = [aligned_bytes(s.value) for s in storages]
    symbols: set[sympy.Symbol] = set(graph.symbols())
    for e in sizes:
        symbols |= e.free_symbols  # type: ignore[arg-type]
    ordered = tuple(sorted(symbols, key=str))
    env = {s: int(hint.get(s, DEFAULT_HINT)) for s in ordered}
    items = [arena_mod.Item(s.start, s.end, _at(e, env)) for s, e in zip(storages, sizes)]

    best: tuple[int, str, arena_mod.Layout] | None = None
    candidates: dict[str, int] = {}
    for name, strategy in arena_mod.STRATEGIES.items():
        lay = arena_mod.layout(items, strategy(items))
        # the arena at the hint: compacted, so at most the strategy's own [Note: symbolic offsets]
        candidates[name] = int(arena_mod.formulas(lay, [sympy.Integer(it.size) for it in items])[1])
        if best is None or candidates[name] < best[0]:
            best = (candidates[name], name, lay)
    assert best is not None
    _, chosen, lay = best
    offsets, total = arena_mod.formulas(lay, sizes)

    buffers = tuple(Buffer(i, s.value, sizes[i], offsets[i], s.start, s.end, tuple(s.views),
                           tuple(s.inplace)) for i, s in enumerate(storages))
    allocations = tuple(aligned_bytes(v) for s in storages for v in (s.value, *s.inplace))
    fn = arena_mod.evaluator(lay, sizes, ordered)
    return MemoryPlan(graph, buffers, total, chosen, candidates, env, ordered, allocations,
                      home, fn, lay)


def run(graph: Graph, options: Options) -> PassResult:
    """Plan memory and report it. The graph is left as it is unless the plan exceeds
    ``options.memory_budget``: then its first CNN stage is scheduled patch by patch
    (passes/memory_budget.py) and planned again."""
    from .memory_budget import fit, scratch
    hint = options.hint_env(graph.symbols())
    p = plan(graph, hint)
    rescheduled: PassResult | None = None
    budget = options.memory_budget
    if budget is not None and p.evaluate(p.hint)["arena"] + scratch(graph, p.hint) > budget:
        rescheduled = fit(graph, options, p.evaluate(p.hint)["arena"])
        graph = rescheduled.graph
        p = plan(graph, hint)
    notes = [p.summary()]
    extra = scratch(graph, p.hint)
    if extra:
        notes.append(f"patched kernels need {_fmt(extra)} of tile scratch beside the arena")
    if p.symbols:
        notes.append(f"arena = {sympy.sstr(p.arena)} bytes")
    if rescheduled is None:
        return PassResult(graph, False, tuple(notes), data={"plan": p, "scratch": extra})
    return PassResult(graph, True, tuple(rescheduled.notes) + tuple(notes), rescheduled.rejected,
                      data={"plan": p, "scratch": extra})


def overlapping(p: MemoryPlan, env: Mapping[sympy.Symbol, int]) -> list[tuple[int, int]]:
    """Pairs of buffers live at the same time whose bytes overlap at ``env`` (none if valid)."""
    ev = p.evaluate(env)
    sizes = p.sizes(env)
    bad = []
    for i, a in enumerate(p.buffers):
        for j in range(i + 1, len(p.buffers)):
            b = p.buffers[j]
            if a.conflicts(b) and sizes[i] and sizes[j]:
                oa, ob = ev["offsets"][i], ev["offsets"][j]
                if oa < ob + sizes[j] and ob < oa + sizes[i]:
                    bad.append((i, j))
    return bad


__all__: Sequence[str] = ("ALIGN", "Buffer", "MemoryPlan", "NAME", "aligned_bytes", "overlapping",
                          "plan", "run")
