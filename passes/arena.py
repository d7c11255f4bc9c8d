"""Arena placement for the memory planner: where each buffer sits, as a formula in the sizes.

A buffer to place is a live range ``[start, end]`` (inclusive steps) and a size. Two buffers
*conflict* when their live ranges overlap; conflicting buffers must occupy disjoint byte
ranges of the arena. Placement works in two stages:

1. A strategy places every buffer at the *hint* (sizes evaluated at typical symbol values),
   giving integer offsets: ``greedy_by_size`` (largest first, each into the smallest gap that
   fits among the conflicting buffers already placed: best fit) or ``first_fit`` (in
   definition order, each at the lowest gap that fits).
2. ``symbolic_offsets`` turns those integer offsets into formulas that are right for every
   value of the symbols [Note: symbolic offsets].

[Note: symbolic offsets]
Placing at the hint decides, for each pair of conflicting buffers, which one lies below the
other: order buffers by (hint offset, index); for conflicting b and c, c is *below* b when it
comes first. This is a strict total order restricted to conflicting pairs, so it is a DAG.
Then

    offset(b) = Max(offset(c) + size(c) for c below b)      (0 when nothing is below b)
    arena     = Max(offset(b) + size(b) for every b)

holds two conflicting buffers apart for every value of the symbols, not just the hint: the
one above starts at or after the end of the one below. Sizes are multiples of the alignment,
so every offset is too. At the hint each formula gives at most the strategy's offset (by
induction over the order, since the strategy's placement does not overlap), so the arena at
the hint is no larger than the strategy's. A predecessor ``c'`` of ``b`` that is also below
another predecessor ``c`` of ``b`` adds nothing (``offset(c) >= offset(c') + size(c')``), so
it is dropped to keep the formulas short; so are all but the topmost buffers from the arena.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import sympy


@dataclass(frozen=True)
class Item:
    """A buffer to place: live over steps [start, end], ``size`` bytes at the hint."""

    start: int
    end: int
    size: int


def conflicts(items: Sequence[Item]) -> list[set[int]]:
    """For each item, the indices of the items whose live ranges overlap its own (sweep)."""
    out: list[set[int]] = [set() for _ in items]
    active: list[int] = []
    for i in sorted(range(len(items)), key=lambda k: (items[k].start, k)):
        s = items[i].start
        active = [j for j in active if items[j].end >= s]
        for j in active:
            out[i].add(j)
            out[j].add(i)
        active.append(i)
    return out


def _gap(size: int, taken: list[tuple[int, int]], best_fit: bool) -> int:
    """Lowest (first fit) or tightest (best fit) offset where ``size`` bytes avoid ``taken``."""
    best: tuple[int, int] | None = None   # (gap length, offset)
    top = 0
    for lo, hi in sorted(taken):
        if lo - top >= size:
            if not best_fit:
                return top
            if best is None or lo - top < best[0]:
                best = (lo - top, top)
        top = max(top, hi)
    return best[1] if best is not None else top


def _place(items: Sequence[Item], order: Sequence[int], best_fit: bool) -> list[int]:
    near = conflicts(items)
    offsets: list[int | None] = [None] * len(items)
    for i in order:
        taken = [(offsets[j], offsets[j] + items[j].size) for j in near[i]  # type: ignore[operator]
                 if offsets[j] is not None and items[j].size > 0]
        offsets[i] = _gap(items[i].size, taken, best_fit)  # type: ignore[arg-type]
    return offsets  # type: ignore[return-value]


def greedy_by_size(items: Sequence[Item]) -> list[int]:
    """Largest first (ties: earlier start), each into the tightest gap that fits."""
    order = sorted(range(len(items)), key=lambda i: (-items[i].size, items[i].start, i))
    return _place(items, order, best_fit=True)


def first_fit(items: Sequence[Item]) -> list[int]:
    """In definition order (a linear scan over the steps), each at the lowest gap that fits."""
    order = sorted(range(len(items)), key=lambda i: (items[i].start, i))
    return _place(items, order, best_fit=False)


STRATEGIES: dict[str, Callable[[Sequence[Item]], list[int]]] = {
    "greedy_by_size": greedy_by_size,
    "first_fit": first_fit,
}


@dataclass(frozen=True)
class Layout:
    """The ordering DAG of [Note: symbolic offsets], reduced."""

    order: list[int]           # every buffer after the buffers below it
    below: list[list[int]]     # per buffer, those its offset must clear (redundant ones dropped)
    tops: list[int]            # the buffers nothing lies above: their ends size the arena


def layout(items: Sequence[Item], hint_offsets: Sequence[int]) -> Layout:
    near = conflicts(items)
    order = sorted(range(len(items)), key=lambda i: (hint_offsets[i], i))
    rank = {i: r for r, i in enumerate(order)}
    full = [{j for j in near[i] if rank[j] < rank[i]} for i in range(len(items))]
    below: list[list[int]] = [[] for _ in items]
    has_above: set[int] = set()
    for i in order:
        covered: set[int] = set()
        for j in full[i]:
            covered |= full[j]
        below[i] = sorted(full[i] - covered, key=rank.__getitem__)
        has_above |= full[i]
    return Layout(order, below, [i for i in order if i not in has_above])


def formulas(lay: Layout, sizes: Sequence[sympy.Expr],
             offsets: Sequence[sympy.Expr] | None = None) -> tuple[list[sympy.Expr], sympy.Expr]:
    """Each buffer's offset, and the arena size, as formulas in ``sizes``; with ``offsets``
    (symbols standing for each buffer's offset), formulas in those instead of nested ones."""
    out: list[sympy.Expr] = [sympy.Integer(0)] * len(sizes)
    ref = out if offsets is None else offsets
    for i in lay.order:
        if lay.below[i]:
            out[i] = _max([ref[j] + sizes[j] for j in lay.below[i]])
    arena = _max([ref[i] + sizes[i] for i in lay.tops]) if lay.tops else sympy.Integer(0)
    return out, arena


def symbolic_offsets(items: Sequence[Item], hint_offsets: Sequence[int],
                     sizes: Sequence[sympy.Expr]) -> tuple[list[sympy.Expr], sympy.Expr]:
    """Offsets and arena size as formulas in the symbols [Note: symbolic offsets]."""
    return formulas(layout(items, hint_offsets), sizes)


def evaluator(lay: Layout, sizes: Sequence[sympy.Expr],
              symbols: Sequence[sympy.Symbol]) -> Callable[..., list[int]]:
    """One lambdified function of ``symbols`` returning every offset, then the arena size.

    Its body computes each size once, then each offset from the offsets below it, in order
    (a hand-made common-subexpression list), so its length grows with the DAG's edges rather
    than with the size of the nested formulas.
    """
    if not symbols:   # static shapes: every size is a number, and so is every offset
        offs, arena = formulas(lay, sizes)
        values = (*(int(o) for o in offs), int(arena))
        return lambda: values
    zs = [sympy.Dummy(f"z{i}") for i in range(len(sizes))]
    os_ = [sympy.Dummy(f"o{i}") for i in range(len(sizes))]
    offs, arena = formulas(lay, zs, os_)
    steps = [*zip(zs, sizes), *((os_[i], offs[i]) for i in lay.order)]
    return sympy.lambdify(list(symbols), [*os_, arena], modules="math",
                          cse=lambda exprs: (steps, list(exprs)))


def _max(args: list[sympy.Expr]) -> sympy.Expr:
    """Max without sympy's simplification, which compares every pair of arguments under the
    symbols' assumptions and takes seconds on a CNN; numbers are folded into one."""
    numbers = [int(a) for a in args if a.is_number]
    rest = list(dict.fromkeys(a for a in args if not a.is_number))
    if numbers:
        rest.append(sympy.Integer(max(numbers)))
    return rest[0] if len(rest) == 1 else sympy.Max(*rest, evaluate=False)
