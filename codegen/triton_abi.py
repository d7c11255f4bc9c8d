"""The Triton calling convention shared by the point-wise and reduction generator (triton.py),
the matmul and convolution templates (triton_gemm.py, triton_conv.py) and the host program
(backends/triton/program.py); and the helpers they all print with.

[Note: Triton kernel ABI]
- A generator turns one kernel of the kernel IR (ir/kernel.py) into a ``TritonSource``:
  ``source`` is the text of a Python module that imports torch, triton and
  ``triton.language as tl``, defines its ``@triton.jit`` function(s) and a plain function
  named ``entry``:
      entry(inputs: list[torch.Tensor], outputs: list[torch.Tensor], sizes: list[int]) -> None
  ``inputs`` and ``outputs`` are contiguous tensors on one device, in ``kernel.inputs`` and
  ``kernel.outputs`` order; ``sizes`` holds the values of ``size_symbols(kernel)``, in that
  order (sorted by name, as c_abi.symbol_order). ``entry`` computes the grid and launches;
  it allocates nothing, never synchronises, and returns at once for an empty domain.
- No name from the model reaches the source: buffers are pointers named by position
  (``in0``, ``out0``), sizes ``sz0, sz1..`` in ``size_symbols`` order, temporaries ``v<k>``,
  and the jit function ``kernel_name(kernel.name)``, a sanitised identifier.
- Numerics follow [Note: C kernel ABI]: f16/bf16 are loaded into float32, computed there and
  rounded on a cast to f16/bf16 or a store; float64 stays float64; NaN propagates through
  max/min as in torch; integer division truncates toward zero and by zero gives 0. Division,
  square root and reciprocal of float32 are the IEEE-rounded ``div_rn``/``sqrt_rn``, not the
  approximate defaults. Transcendentals are ``tl.exp/log/sin/cos/erf`` or formulas built
  on them (triton_math.py): libdevice cannot run under TRITON_INTERPRET=1.
- Indices are int32 unless some buffer may hold 2**31 elements or more: static sizes decide
  when the source is generated, symbolic ones at launch (the ``IDX64`` constexpr).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import sympy

from effc.ir import DType
from effc.ir.kernel import IndexValue, Load, LoweringError, Store

from .c_abi import symbol_order

if TYPE_CHECKING:
    from effc.ir.kernel import Kernel

INT32_LIMIT = 2**31


@dataclass(frozen=True)
class TritonSource:
    name: str      # the module's name (a Python identifier)
    source: str    # Python module text, see [Note: Triton kernel ABI]
    entry: str     # the name of its launcher function


@dataclass(frozen=True)
class TritonConfig:
    """Launch parameters of a point-wise or reduction kernel: ``xblock`` outer points per
    program, ``rblock`` reduce points per step (1 for point-wise kernels), ``looped``: the
    reduce points are walked in steps of ``rblock`` rather than held in one block."""
    xblock: int
    rblock: int = 1
    num_warps: int = 4
    num_stages: int = 1
    looped: bool = False

    def __post_init__(self) -> None:
        for n in (self.xblock, self.rblock):
            if n < 1 or n & (n - 1):
                raise ValueError(f"Triton block sizes are powers of two, not {n}")

    def to_json(self) -> dict:
        return {"xblock": self.xblock, "rblock": self.rblock, "num_warps": self.num_warps,
                "num_stages": self.num_stages, "looped": self.looped}


# -- names ---------------------------------------------------------------------------------------

_IDENT = re.compile(r"[^A-Za-z0-9_]")


def py_ident(name: str, prefix: str = "effc_") -> str:
    """A Python identifier made from ``name``: ``prefix`` + the name with anything but ASCII
    letters, digits and ``_`` replaced by ``_`` (so it is never a keyword or a builtin)."""
    return prefix + _IDENT.sub("_", name)


def kernel_name(name: str) -> str:
    """The jit function of the kernel called ``name``."""
    return py_ident(name, "effc_")


def size_symbols(kernel: "Kernel") -> list[sympy.Symbol]:
    """The size symbols ``kernel`` reads (extents, indices, index values, template operands),
    in the order of ``entry``'s ``sizes``: sorted by name."""
    axes = {a.symbol for a in kernel.domain + kernel.reduce}
    exprs: list[sympy.Basic] = [sympy.sympify(a.size) for a in kernel.domain + kernel.reduce]
    exprs += [sympy.sympify(d) for b in kernel.buffers for d in b.shape]
    for s in kernel.statements():
        if isinstance(s, (Load, Store)):
            exprs.append(s.index)
        elif isinstance(s, IndexValue):
            exprs.append(s.expr)
    if kernel.template is not None:
        for o in kernel.template.operands:
            exprs += [o.index] + ([o.mask] if o.mask is not None else [])
    found: Iterable[sympy.Symbol] = (x for e in exprs for x in e.free_symbols
                                     if isinstance(x, sympy.Symbol) and x not in axes)
    return symbol_order(found)


# -- dtypes --------------------------------------------------------------------------------------

_TL = {DType.F64: "tl.float64", DType.F32: "tl.float32", DType.F16: "tl.float16",
       DType.BF16: "tl.bfloat16", DType.I64: "tl.int64", DType.I32: "tl.int32",
       DType.I16: "tl.int16", DType.I8: "tl.int8", DType.U8: "tl.uint8", DType.BOOL: "tl.int1"}


def tl_dtype(dtype: DType) -> str:
    """The triton.language dtype of a buffer of ``dtype``."""
    try:
        return _TL[dtype]
    except KeyError:
        raise LoweringError(f"no Triton type for {dtype}") from None


def temp_dtype(dtype: DType) -> DType:
    """The dtype a temporary of ``dtype`` is held in: f16/bf16 compute in float32."""
    return DType.F32 if dtype in (DType.F16, DType.BF16) else dtype


def literal(value: bool | int | float, dtype: DType) -> str:
    """``value`` as a literal that Triton types as ``dtype`` wherever it meets a tensor of
    that dtype (Python scalars are weakly typed), rounded to ``dtype`` first."""
    if dtype is DType.BOOL:
        return "True" if value else "False"
    if dtype.is_int:
        return str(int(value))
    v = float(value)
    if dtype is not DType.F64:
        import torch
        v = float(torch.tensor(v, dtype=dtype.to_torch()).float())
    if math.isnan(v):
        return "EFFC_NAN"
    if math.isinf(v):
        return "EFFC_INF" if v > 0 else "(-EFFC_INF)"
    return repr(v) if v >= 0 and not (v == 0 and math.copysign(1, v) < 0) else f"({v!r})"


# -- index expressions ---------------------------------------------------------------------------

class IndexPrinter:
    """Triton text for index, extent and mask expressions (sympy), with every symbol mapped
    through ``names``. ``floor(a/b)`` and ``Mod`` print as ``//`` and ``%`` where sympy proves
    the numerator non-negative (Triton's integer ``//`` and ``%`` truncate, as C's), else
    through the floored helpers, whose names collect in ``helpers``."""

    def __init__(self, names: dict[sympy.Symbol, str]) -> None:
        self.names = names
        self.helpers: set[str] = set()

    def __call__(self, e: sympy.Basic) -> str:
        return self.print(sympy.sympify(e), top=True)

    def print(self, e: sympy.Basic, top: bool = False) -> str:
        p = self.print
        if e.is_Integer:
            return str(int(e))
        if e is sympy.true or e is sympy.false:
            return "True" if e is sympy.true else "False"
        if e.is_Float:
            return repr(float(e))
        if e.is_Rational:
            return f"({e.p} / {e.q})"
        if isinstance(e, sympy.Symbol):
            if e not in self.names:
                raise LoweringError(f"no Triton name for symbol {e}")
            return self.names[e]
        if isinstance(e, sympy.Add):
            out = ""
            for t in e.as_ordered_terms():
                c, _ = t.as_coeff_Mul()
                if c.is_negative:
                    out += f" - {p(-t)}" if out else f"-{p(-t)}"
                else:
                    out += f" + {p(t)}" if out else p(t)
            return out if top else f"({out})"
        if isinstance(e, sympy.Mul):
            c, rest = e.as_coeff_Mul()
            if c == -1:
                return f"(-{p(rest)})"
            return "*".join(p(a) for a in e.args)
        if isinstance(e, sympy.Pow) and e.args[1].is_Integer and int(e.args[1]) > 0:
            return "(" + "*".join([p(e.args[0])] * int(e.args[1])) + ")"
        if isinstance(e, (sympy.floor, sympy.ceiling)):
            num, den = sympy.fraction(sympy.together(e.args[0]))
            num = sympy.expand(-num if isinstance(e, sympy.ceiling) else num)
            if num.is_nonnegative and den.is_positive:
                q = f"({p(num)} // {p(den)})"
            else:
                self.helpers.add("floordiv_i")
                q = f"effc_floordiv_i({p(num, True)}, {p(den, True)})"
            return f"(-{q})" if isinstance(e, sympy.ceiling) else q
        if isinstance(e, sympy.Mod):
            n, d = e.args
            if n.is_nonnegative and d.is_positive:
                return f"({p(n)} % {p(d)})"
            self.helpers.add("mod_i")
            return f"effc_mod_i({p(n, True)}, {p(d, True)})"
        if isinstance(e, (sympy.Min, sympy.Max)):
            out = p(e.args[0], True)
            for a in e.args[1:]:
                cmp = "<" if isinstance(e, sympy.Min) else ">"
                b = p(a, True)
                out = f"tl.where(({out}) {cmp} ({b}), {out}, {b})"
            return out
        if isinstance(e, sympy.And):
            return "(" + " & ".join(p(a) for a in e.args) + ")"
        if isinstance(e, sympy.Or):
            return "(" + " | ".join(p(a) for a in e.args) + ")"
        if isinstance(e, sympy.Not):
            return f"({p(e.args[0])} == 0)"
        if isinstance(e, sympy.core.relational.Relational):
            return f"({p(e.lhs)} {e.rel_op} {p(e.rhs)})"
        raise LoweringError(f"cannot print {e} ({type(e).__name__}) as Triton")
