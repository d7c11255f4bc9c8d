"""What the Triton templates (triton_gemm.py, triton_conv.py) print beyond the shared ABI
(triton_abi.py) and scalar table (triton_scalar.py): index expressions over tile-shaped axis
values, the decomposition of a flat tile index into axes, the epilogue run on a whole tile,
and the module text around the jit function.

    %t0 = load a2[i1] : f32                     e0 = tl.load(in2 + (ax1))
    %t1 = add(%acc, %t0) : f32           ->     e1 = (acc + e0)
    %t2 = relu(%t1) : f32                       e2 = tl.where(e1 < 0, 0.0, e1)
    store out0[40*i0 + i1] = %t2                tl.store(out0 + (ax0*40 + ax1), e2.to(tl.float32), mask=...)

with ``ax0`` a ``[BLOCK_M, 1]`` tile of row indices and ``ax1`` a ``[1, BLOCK_N]`` one.

[Note: Triton template epilogue]
An epilogue runs on a whole tile at once: every domain axis is a Triton value whose shape
says which tile dimension it varies along (``[BM, 1]`` for an M axis, ``[1, BN]`` for an N
axis, a scalar for a batch axis), so an index expression printed with those names is the
tile of offsets it stands for, broadcast as far as it needs. Loads in the epilogue are not
masked: the templates wrap out-of-range rows and columns back into range (``rm % M``), so
every address is valid, and only stores are masked. Ops are the point-wise generator's
(triton_scalar.SCALAR) and follow [Note: Triton kernel ABI]: f16/bf16 temporaries are held
in float32 and rounded only by a cast or the store; float64 stays float64. The accumulator
enters the epilogue unrounded (float32 for f16/bf16 operands): one rounding fewer than eager,
which the tolerance policy allows (it is closer to the float64 reference). Ops the table
lacks raise LoweringError, and the kernel then runs another way. No name from the model
reaches the source: buffers print by position (``in0``, ``out0``), sizes ``sz0..`` in
``size_symbols`` order, axes ``ax0..``, temporaries ``e0..``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import sympy

from effc.ir import DType
from effc.ir.kernel import (Compute, Const, IndexValue, Kernel, Load, Loop, LoweringError, Reduce, Stmt,
                            Store)

from .triton_abi import IndexPrinter, literal, size_symbols, temp_dtype, tl_dtype
from .triton_math import CONSTANTS, helper_source
from .triton_scalar import SCALAR, cast_expr, known_integer, power_product, scalar_expr, small_integer

HEADER = "import os\n\nimport torch\nimport triton\nimport triton.language as tl\n\n"


class TilePrinter(IndexPrinter):
    """An ``IndexPrinter`` that puts a product's tile-valued factors (``wide``: axes, whose
    values may be int64 once the program index is) before its sizes, so a product of int32
    sizes is never formed before it meets a 64-bit factor."""

    def __init__(self, names: dict[sympy.Symbol, str], wide: set[sympy.Symbol] | frozenset[sympy.Symbol]) -> None:
        super().__init__(names)
        self.wide = set(wide)

    def print(self, e: sympy.Basic, top: bool = False) -> str:
        if isinstance(e, sympy.Mul):
            c, rest = e.as_coeff_Mul()
            if c != -1:
                factors = sorted(rest.args if isinstance(rest, sympy.Mul) else (rest,),
                                 key=lambda f: (not (f.free_symbols & self.wide), sympy.default_sort_key(f)))
                return "*".join([self.print(f) for f in factors] + ([] if c == 1 else [self.print(c)]))
        return super().print(e, top)


def sizes(kernel: Kernel) -> dict[sympy.Symbol, str]:
    """Every size symbol's argument name, by position (``sz0``, ``sz1``..)."""
    return {s: f"sz{k}" for k, s in enumerate(size_symbols(kernel))}


def params(kernel: Kernel) -> dict[str, str]:
    """Every buffer's pointer argument, by position (``in0``.., ``out0``..)."""
    out = {b.name: f"in{k}" for k, b in enumerate(kernel.inputs)}
    out.update({b.name: f"out{k}" for k, b in enumerate(kernel.outputs)})
    return out


def decompose(flat: str, axes: Sequence[tuple[str, sympy.Expr]], printer: IndexPrinter) -> list[tuple[str, str]]:
    """(variable, source) for each axis (name, extent) of a row-major flattening, outer to
    inner, from the flat index ``flat`` (non-negative, in range):

        decompose("bn", [("ax0", 2), ("ax1", 4), ("ax2", 6)])
            -> [("ax0", "(bn // 24)"), ("ax1", "((bn // 6) % 4)"), ("ax2", "(bn % 6)")]
    """
    out: list[tuple[str, str]] = []
    inner: sympy.Expr = sympy.Integer(1)
    for i, (var, n) in reversed(list(enumerate(axes))):
        e = flat if inner == 1 else f"({flat} // {printer.print(inner)})"
        if i > 0:
            e = f"({e} % {printer.print(sympy.sympify(n))})"
        out.insert(0, (var, e))
        inner = inner * n
    return out


class Epilogue:
    """Triton lines for a template's epilogue [Note: Triton template epilogue]. ``printer``
    prints every symbol (domain axes after ``subst``, sizes); ``dims`` gives the tile
    dimensions each symbol varies along; ``full`` the accumulator's dimensions and ``shape``
    its shape's source; ``params`` each buffer's pointer argument; ``store_mask`` guards
    stores. Helpers the ops call collect in ``printer.helpers``."""

    def __init__(self, kernel: Kernel, printer: IndexPrinter, dims: Mapping[sympy.Symbol, frozenset[str]],
                 full: tuple[str, ...], shape: str, params: Mapping[str, str], store_mask: str | None,
                 subst: Mapping[sympy.Symbol, sympy.Expr] | None = None) -> None:
        self.kernel, self.printer, self.sym_dims = kernel, printer, dims
        self.full, self.shape, self.params, self.mask = frozenset(full), shape, params, store_mask
        self.subst = dict(subst or {})
        t = kernel.template
        assert t is not None
        self.types: dict[str, DType] = {t.acc: t.dtype}
        self.dims: dict[str, frozenset[str]] = {t.acc: self.full}
        self.var: dict[str, str] = {t.acc: "acc"}
        self.integers: dict[str, int] = {}   # temporaries known to hold a small integer

    def _index(self, e: sympy.Basic) -> tuple[str, frozenset[str]]:
        e = sympy.sympify(e).xreplace(self.subst)
        d = frozenset().union(*(self.sym_dims.get(s, frozenset()) for s in e.free_symbols))
        return self.printer(e), d

    def lines(self) -> list[str]:
        out: list[str] = []
        for s in self.kernel.body:
            if isinstance(s, (Loop, Reduce)):
                raise LoweringError("a template epilogue holds top-level statements only")
            out.extend(self.statement(s))
        return out

    def statement(self, s: Stmt) -> list[str]:
        if isinstance(s, Store):
            buf = self.kernel.buffer(s.buffer)
            idx, d = self._index(s.index)
            if d != self.full:
                idx = f"({idx}) + tl.zeros({self.shape}, dtype=tl.int32)"
            val = self.var[s.value]
            if self.dims[s.value] != self.full:
                val = f"tl.broadcast_to({val}, {self.shape})"
            mask = f", mask={self.mask}" if self.mask else ""
            return [f"tl.store({self.params[buf.name]} + ({idx}), {val}.to({tl_dtype(buf.dtype)}){mask})"]
        dst = f"e{len(self.var) - 1}"
        self.var[s.dst], self.types[s.dst] = dst, s.dtype
        if isinstance(s, Load):
            buf = self.kernel.buffer(s.buffer)
            idx, d = self._index(s.index)
            self.dims[s.dst] = d
            conv = ".to(tl.float32)" if buf.dtype in (DType.F16, DType.BF16) else ""
            return [f"{dst} = tl.load({self.params[buf.name]} + ({idx})){conv}"]
        if isinstance(s, Const):
            self.dims[s.dst] = frozenset()
            if (n := small_integer(s.value)) is not None:
                self.integers[s.dst] = n
            return [f"{dst} = tl.full([], {literal(s.value, s.dtype)}, {tl_dtype(temp_dtype(s.dtype))})"]
        if isinstance(s, IndexValue):
            e = sympy.sympify(s.expr).xreplace(self.subst)
            idx, d = self._index(e)
            self.dims[s.dst] = d
            src = DType.F64 if any(a.is_Rational and not a.is_Integer or a.is_Float
                                   for a in sympy.preorder_traversal(e)) else DType.I64
            val = f"(tl.zeros([], dtype=tl.int64) + ({idx})).to({tl_dtype(src)})"
            return [f"{dst} = {cast_expr(val, src, s.dtype)}"]
        if isinstance(s, Compute):
            if s.op not in SCALAR:
                raise LoweringError(f"op {s.op} has no Triton epilogue form")
            self.dims[s.dst] = frozenset().union(*(self.dims[a] for a in s.args))
            if (n := known_integer(s.op, s.args, s.dtype, self.integers)) is not None:
                self.integers[s.dst] = n
            product = power_product(s.op, s.args, [self.var[a] for a in s.args], s.dtype, self.integers)
            if product is not None:
                return [f"{dst} = {product}"]
            expr = scalar_expr(s.op, [self.var[a] for a in s.args], [self.types[a] for a in s.args], s.dtype,
                               dict(s.attrs), self.printer.helpers)
            return [f"{dst} = {expr}"]
        raise LoweringError(f"statement {s} has no Triton epilogue form")


def module_text(jit_name: str, signature: Sequence[str], body: Sequence[str], entry: Sequence[str],
                helpers: set[str]) -> str:
    """A template's module: imports, the constants and helpers its expressions use, the jit
    function and ``entry(inputs, outputs, sizes)`` ([Note: Triton kernel ABI])."""
    h = helper_source(helpers)
    return (HEADER + CONSTANTS + "\n\n" + (h + "\n\n\n" if h else "") + "@triton.jit\n" +
            f"def {jit_name}({', '.join(signature)}):\n" + "".join(f"    {x}\n" for x in body) + "\n\n" +
            "def entry(inputs, outputs, sizes):\n" + "".join(f"    {x}\n" for x in entry))


def unpack_sizes(kernel: Kernel) -> list[str]:
    """The launcher's first line: ``sz0, sz1, = sizes`` (nothing without size symbols)."""
    names = list(sizes(kernel).values())
    return [f"{', '.join(names)}, = sizes"] if names else []
