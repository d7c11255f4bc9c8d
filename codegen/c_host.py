"""The host program of a compiled graph, in C: one entry point that runs every kernel over the
planned arena, so a call crosses from Python into C once.

    int effc_run(const void *const *inputs, const void *const *weights, unsigned char *arena,
                 void *const *outputs, const int64_t *sizes, effc_callback callback, void *ctx);

- ``inputs``: the graph's inputs in order; ``weights``: its constants in ``weight_names``
  order; ``arena``: at least ``HostProgram.arena_bytes`` bytes (evaluated at ``sizes``),
  64-byte aligned; ``sizes``: the size symbols' values in ``c_abi.symbol_order`` order.
- The arena is the memory plan's ``plan.arena`` bytes, rounded up to 64, then the kernels'
  scratch ([Note: C template scratch] in c_templates.py): the largest need of any kernel,
  since kernels run one at a time. Every kernel call gets that tail as its ``scratch``.
- Every arena buffer's offset is the memory plan's formula, printed as integer C and
  evaluated once at the top of the call ([Note: symbolic offsets] in passes/arena.py). Views
  (reshape, squeeze, unsqueeze, ``view`` kernels) are the same pointer as their input.
- A step with no C function (an op or extern kernel, a patched stage, a node the generators
  do not cover) is run by ``callback(ctx, step)``, which writes its outputs into their arena
  slots and returns 0; the program then resumes. A non-zero return stops the run and is
  returned. ``step`` is the node's index in ``graph.nodes``.
- ``outputs``: the caller's buffers for the graph outputs. An arena buffer that holds an
  output is placed there instead (``direct_outputs``): its kernel writes the result where the
  caller wants it. Outputs that are inputs, weights, views of them or share a buffer are
  copied there at the end.

No name from the model reaches the source: values are ``p<n>``, sizes ``sizes[k]``, and kernel
functions ``c_abi.c_name`` of the kernel names the fusion pass chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import sympy
from sympy.printing.c import C99CodePrinter

from effc.ir import Graph, Op, Value
from effc.ir.kernel import Kernel

from .c_abi import c_name, c_type

HOST_PRELUDE = """\
#define EFFC_MAX(a, b) ((a) > (b) ? (a) : (b))
#define EFFC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define EFFC_CEILDIV(a, b) (((a) + (b) - 1) / (b))
typedef int (*effc_callback)(void *ctx, int step);
"""
VIEW_OPS = (Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE)


class SizePrinter(C99CodePrinter):
    """Integer C for size formulas over non-negative integers: symbols become ``sizes[k]``,
    Max/Min and floor/ceiling of a quotient stay in int64 arithmetic (never through double)."""

    def __init__(self, symbols: Sequence[sympy.Symbol]) -> None:
        super().__init__()
        self.index = {s: k for k, s in enumerate(symbols)}

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        if expr not in self.index:
            raise ValueError(f"size {expr} is not among the program's symbols")
        return f"sizes[{self.index[expr]}]"

    def _print_Integer(self, expr: sympy.Integer) -> str:
        return f"INT64_C({int(expr)})"

    def _print_Max(self, expr: sympy.Max) -> str:
        return self._fold("EFFC_MAX", expr.args)

    def _print_Min(self, expr: sympy.Min) -> str:
        return self._fold("EFFC_MIN", expr.args)

    def _fold(self, macro: str, args: Sequence[sympy.Expr]) -> str:
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{macro}({out}, {self._print(a)})"
        return out

    def _quotient(self, arg: sympy.Expr) -> tuple[str, str]:
        num, den = sympy.fraction(sympy.together(arg))
        if not den.is_Integer:
            raise ValueError(f"cannot print {arg} in integer arithmetic")
        return self._print(sympy.expand(num)), self._print(den)

    def _print_ceiling(self, expr: sympy.ceiling) -> str:
        num, den = self._quotient(expr.args[0])
        return f"EFFC_CEILDIV({num}, {den})"

    def _print_floor(self, expr: sympy.floor) -> str:
        num, den = self._quotient(expr.args[0])
        return f"(({num}) / ({den}))"

    def _print_Pow(self, expr: sympy.Pow) -> str:
        base, exp = expr.args
        if not (exp.is_Integer and int(exp) > 0):
            raise ValueError(f"cannot print {expr} in integer arithmetic")
        return "(" + "*".join([self.parenthesize(base, 50)] * int(exp)) + ")"

    def _print_Rational(self, expr: sympy.Rational) -> str:
        raise ValueError(f"a size formula has a fraction {expr} outside floor/ceiling")

    def _print_Mul(self, expr: sympy.Mul) -> str:
        if any(isinstance(a, sympy.Rational) and not a.is_Integer for a in expr.args):
            raise ValueError(f"a size formula has a fraction in {expr} outside floor/ceiling")
        return super()._print_Mul(expr)


def value_bytes(v: Value) -> sympy.Expr:
    return sympy.sympify(v.type.numel()) * v.type.dtype.itemsize


def align64(e: sympy.Expr) -> sympy.Expr:
    return sympy.ceiling(sympy.sympify(e) / 64) * 64


@dataclass(frozen=True)
class HostProgram:
    source: str                      # the host function (after the kernels' source)
    weight_names: tuple[str, ...]    # the order of the ``weights`` array
    callback_steps: tuple[int, ...]  # node indices the host hands back to the caller
    scratch_offset: sympy.Expr       # where the kernels' scratch starts: plan.arena rounded up to 64
    scratch_bytes: sympy.Expr        # the kernels' scratch
    arena_bytes: sympy.Expr          # the whole arena: scratch_offset + scratch_bytes


def direct_outputs(graph: Graph, plan: Any) -> dict[int, int]:
    """Arena buffers (by index) that the host places in the caller's output buffer instead
    (buffer -> output number): those holding a graph output at its full size, one output per
    buffer. The kernel that makes such an output writes it where the caller wants it, and no
    copy is needed."""
    direct: dict[int, int] = {}
    for k, v in enumerate(graph.outputs):
        b = plan.buffer_of(v)
        if b is not None and b.index not in direct and sympy.simplify(value_bytes(v) - value_bytes(b.value)) == 0:
            direct[b.index] = k
    return direct


def host_source(graph: Graph, plan: Any, kernels: Mapping[int, Kernel],
                symbols: Sequence[sympy.Symbol], scratch: sympy.Expr,
                packed: Mapping[tuple[int, int], str] | None = None) -> HostProgram:
    """The ``effc_run`` function for ``graph`` laid out by ``plan``; ``kernels`` maps a node's
    index to the kernel IR whose C function (``c_name(kernel.name)``) runs it; every other
    non-constant node that is not a view becomes a callback. ``scratch``: the bytes the
    kernels need as working memory (``c_templates.program_scratch``), placed after the plan's
    buffers. ``packed``: (node index, input position) -> the name of a weight to pass there
    instead (a constant repacked at compile time for its kernel); these names follow the
    graph's constants in ``weight_names``."""
    pr = SizePrinter(symbols)
    scratch = sympy.sympify(scratch)
    at = align64(plan.arena)
    ptr: dict[Value, str] = {}
    weights: list[str] = []
    direct = direct_outputs(graph, plan)
    extra = list(dict.fromkeys((packed or {}).values()))
    lines = ["int effc_run(const void *const *inputs, const void *const *weights, unsigned char *arena,",
             "             void *const *outputs, const int64_t *sizes, effc_callback callback, void *ctx) {",
             "    (void)sizes; (void)callback; (void)ctx; (void)weights; (void)inputs; (void)arena;"]
    for k, v in enumerate(graph.inputs):
        ptr[v] = f"((void *)inputs[{k}])"
    for b in plan.buffers:
        lines.append(f"    const int64_t off{b.index} = {pr.doprint(b.offset)};")
    if scratch != 0:
        lines.append(f"    unsigned char *scratch = arena + {pr.doprint(at)};")
    else:
        lines.append("    unsigned char *scratch = 0;")
    lines.append("    (void)scratch;")
    body: list[str] = []
    callbacks: list[int] = []
    n_constants = sum(1 for n in graph.nodes if n.op is Op.CONSTANT)
    for i, node in enumerate(graph.nodes):
        if node.op is Op.CONSTANT:
            ptr[node.output] = f"((void *)weights[{len(weights)}])"
            weights.append(node.attrs["name"])
            continue
        view = node.op in VIEW_OPS or (node.op is Op.KERNEL and node.attrs["kind"] == "view")
        for v in node.outputs:
            buf = plan.buffer_of(v)
            if buf is not None and buf.index in direct:
                ptr[v] = f"((void *)outputs[{direct[buf.index]}])"
            elif buf is not None:
                ptr[v] = f"((void *)(arena + off{buf.index}))"
            elif view:
                ptr[v] = ptr[node.inputs[0]]
            else:
                raise ValueError(f"node {i} ({node.op}) writes a value the memory plan does not place")
        if view:
            continue
        kernel = kernels.get(i)
        if kernel is None:
            callbacks.append(i)
            body.append(f"    {{ int rc = callback(ctx, {i}); if (rc) return rc; }}")
            continue
        given = [ptr[v] if (i, j) not in (packed or {}) else
                 f"((void *)weights[{n_constants + extra.index(packed[(i, j)])}])"   # type: ignore[index]
                 for j, v in enumerate(node.inputs)]
        args = [f"(const {c_type(b.dtype)} *){p}" for b, p in zip(kernel.inputs, given)]
        args += [f"({c_type(b.dtype)} *){ptr[v]}" for b, v in zip(kernel.outputs, node.outputs)]
        body.append(f"    {c_name(kernel.name)}({', '.join(args + ['sizes', 'scratch'])});")
    placed = set(direct.values())
    for k, v in enumerate(graph.outputs):   # outputs that are inputs, weights or shared storage
        if k not in placed:
            body.append(f"    memmove(outputs[{k}], {ptr[v]}, (size_t)({pr.doprint(value_bytes(v))}));")
    lines += body + ["    return 0;", "}"]
    return HostProgram(HOST_PRELUDE + "\n" + "\n".join(lines) + "\n", tuple(weights + extra),
                       tuple(callbacks), at, scratch, at + scratch)
