"""Kernel IR -> C: one function per pointwise or reduction kernel, per [Note: C kernel ABI].

    kernel k0 pointwise(a0: f32[s0, 64], a1: f32[64]) -> (out0: f32[s0, 64])
      domain i0 < s0, i1 < 64
      %t0 = load a0[64*i0 + i1] : f32
      %t1 = load a1[i1] : f32
      %t2 = add(%t0, %t1) : f32
      store out0[64*i0 + i1] = %t2
becomes
    void effc_k0(const float *EFFC_RESTRICT a0, const float *EFFC_RESTRICT a1,
                 float *EFFC_RESTRICT out0, const int64_t *EFFC_RESTRICT sizes,
                 unsigned char *EFFC_RESTRICT scratch) {
        (void)scratch;
        const int64_t sz_s0 = sizes[0];
        #pragma omp parallel for if(parallel: (64*sz_s0) >= 32768)
        for (int64_t i0 = 0; i0 < sz_s0; i0++) {
            #pragma omp simd
            for (int64_t i1 = 0; i1 < 64; i1++) {
                const float t0 = a0[(i1 + (64*i0))];
                ...

The domain's outer axes run in parallel (collapsed, and only above ``PARALLEL_MIN`` points of
work so tiny kernels pay no thread start-up), the innermost axis is a ``#pragma omp simd``
loop. A reduction kernel runs its top-level statements and its loops ([Note: kernel loops])
per outer point; how a loop reduces is [Note: C reductions] in c_loops.py. Scalar math is the
table in c_scalar.py. View kernels have no function (the host aliases them); opaque
``Template(op="node")`` kernels get a library routine where one exists (pooling: c_pool.py;
attention: c_attention.py) and are otherwise run by the host's callback; matmul and conv
kernels are written by c_templates.py around an epilogue from ``emit_statements``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import sympy

from effc.ir import DType
from effc.ir.kernel import (Compute, Const, IndexValue, Kernel, Load, Loop, LoweringError, Reduce, Stmt,
                            Store)

from .c_abi import buffer_params, c_expr, kernel_signature, size_locals, size_name, temp_type
from .c_loops import PARALLEL_MIN, kernel_body
from .c_scalar import SCALAR, literal, scalar_expr

KINDS = ("pointwise", "reduction")

__all__ = ["generate", "unsupported", "emit_statements", "PARALLEL_MIN"]


def unsupported(kernel: Kernel) -> str | None:
    """Why the C generators cannot produce ``kernel``'s function, or None when they can."""
    t = kernel.template
    if kernel.kind == "view":
        return "a view kernel has no function: the host aliases its output"
    if t is not None and t.op == "node":
        op = t.node.op if t.node is not None else "?"
        return f"{kernel.kind} kernel {kernel.name} calls {op}, which has no C implementation"
    if kernel.kind not in KINDS + ("matmul", "conv"):
        return f"kernels of kind {kernel.kind!r} have no C generator"
    for b in kernel.buffers:
        if b.dtype is DType.I4:
            return f"buffer {b.name} is {b.dtype}, which has no C type"
    dtypes = [t.dtype] if t is not None else []
    for s in kernel.statements():
        if isinstance(s, Compute) and s.op not in SCALAR:
            return f"op {s.op} is missing from the C scalar table"
        if isinstance(s, Reduce) and s.op not in ("sum", "prod", "max", "min", "any", "all", "argmax", "argmin"):
            return f"reduction {s.op} has no C form"
        if not isinstance(s, Store):
            dtypes.append(s.dtype)
    for d in dtypes:
        if d is DType.I4:
            return f"a temporary is {d}, which has no C type"
    return None


def generate(kernel: Kernel, symbols: Iterable[sympy.Symbol], inplace: Iterable[str] = (),
             constant_inputs: Iterable[int] = frozenset()) -> str | None:
    """The C function of ``kernel`` (without ``PRELUDE``); ``symbols`` are the program's size
    symbols (the ``sizes`` array, [Note: C kernel ABI]); ``inplace`` names buffers that share
    memory with another (they lose ``restrict``); ``constant_inputs`` are positions in
    ``kernel.inputs`` holding compile-time constants: a template kernel may then expect some
    of them prepacked (``c_templates.prepack`` says which and packs them). None for a view
    kernel; LoweringError with ``unsupported``'s reason for what no generator covers (the caller
    runs that kernel another way)."""
    if kernel.kind == "view":
        return None
    symbols = list(symbols)
    t = kernel.template
    if t is not None and t.op == "node":   # a library routine for the node, where one exists
        from .c_attention import attention_function
        from .c_pool import pool_function
        src = pool_function(kernel, symbols) or attention_function(kernel, symbols)
        if src is not None:
            return src
    why = unsupported(kernel)
    if why is not None:
        raise LoweringError(why)
    if t is not None:
        from .c_templates import template_function  # type: ignore[import-not-found]
        return template_function(kernel, symbols, lambda axes, indent: emit_statements(kernel, kernel.body, axes, indent),
                                 constant_inputs=frozenset(constant_inputs))
    em = Emitter(kernel, {a.symbol: a.name for a in kernel.domain + kernel.reduce})
    body = kernel_body(kernel, em)
    return (kernel_signature(kernel, inplace) + " {\n    (void)scratch;\n" + size_locals(symbols, _size_symbols(kernel))
            + body + "}\n")


def emit_statements(kernel: Kernel, stmts: Sequence[Stmt | Loop], axis_exprs: dict[str, str], indent: str) -> str:
    """Loads, computations and stores of top-level ``stmts`` of ``kernel`` at the domain point
    whose axes are the C expressions ``axis_exprs`` (by axis name): a template's epilogue. The
    caller declares the template's accumulator (``Template.acc``) and the size locals
    (``c_abi.size_locals``); buffers are ``c_abi.buffer_params``' names."""
    names: dict[sympy.Symbol, str] = {a.symbol: f"({axis_exprs[a.name]})" for a in kernel.domain
                                      if a.name in axis_exprs}
    em = Emitter(kernel, names)
    lines: list[str] = []
    for s in stmts:
        if isinstance(s, (Loop, Reduce)):
            raise ValueError("emit_statements takes top-level statements only")
        lines.extend(em.statement(s))
    return "".join(f"{indent}{line}\n" for line in lines)


def _size_symbols(kernel: Kernel) -> set[sympy.Symbol]:
    axes = {a.symbol for a in kernel.domain + kernel.reduce}
    exprs: list[sympy.Basic] = [sympy.sympify(a.size) for a in kernel.domain + kernel.reduce]
    for s in kernel.statements():
        if isinstance(s, (Load, Store)):
            exprs.append(s.index)
        elif isinstance(s, IndexValue):
            exprs.append(s.expr)
    if kernel.template is not None:
        for o in kernel.template.operands:
            exprs.append(o.index)
            if o.mask is not None:
                exprs.append(o.mask)
    return {x for e in exprs for x in e.free_symbols if isinstance(x, sympy.Symbol)} - axes


class Emitter:
    """C lines for single statements of one kernel, with symbols printed through ``names``
    (axes) and the size locals; knows every temporary's dtype."""

    def __init__(self, kernel: Kernel, axes: dict[sympy.Symbol, str]) -> None:
        self.kernel = kernel
        self.params = buffer_params(kernel)
        self.names = dict(axes)
        self.types: dict[str, DType] = {}
        if kernel.template is not None:
            self.types[kernel.template.acc] = kernel.template.dtype
        for s in kernel.statements():
            if not isinstance(s, Store):
                self.types[s.dst] = s.dtype

    def expr(self, e: sympy.Basic) -> str:
        for x in e.free_symbols:
            if x not in self.names and isinstance(x, sympy.Symbol):
                self.names[x] = size_name(x)
        return c_expr(sympy.sympify(e), self.names)

    def statement(self, s: Stmt) -> list[str]:
        """A declaration (``const float t3 = ...;``) or a store; not a Reduce (c_loops)."""
        if isinstance(s, Store):
            buf = self.kernel.buffer(s.buffer)
            v = s.value
            if buf.dtype is DType.F16:
                v = f"effc_f32_to_f16({v})"
            elif buf.dtype is DType.BF16:
                v = f"effc_f32_to_bf16({v})"
            return [f"{self.params[buf.name]}[{self.expr(s.index)}] = {v};"]
        decl = f"const {temp_type(s.dtype)} {s.dst} = "
        if isinstance(s, Load):
            buf = self.kernel.buffer(s.buffer)
            x = f"{self.params[buf.name]}[{self.expr(s.index)}]"
            if buf.dtype is DType.F16:
                x = f"effc_f16_to_f32({x})"
            elif buf.dtype is DType.BF16:
                x = f"effc_bf16_to_f32({x})"
            return [decl + x + ";"]
        if isinstance(s, Const):
            return [decl + literal(s.value, s.dtype) + ";"]
        if isinstance(s, IndexValue):
            x = self.expr(s.expr)
            if s.dtype is DType.BOOL:
                return [decl + f"({x} != 0);"]
            if s.dtype in (DType.F16, DType.BF16):
                return [decl + f"effc_round_{s.dtype}((float){x});"]
            return [decl + f"({temp_type(s.dtype)}){x};"]
        if isinstance(s, Compute):
            arg_types = [self.types[a] for a in s.args]
            return [decl + scalar_expr(s.op, s.args, arg_types, s.dtype, dict(s.attrs)) + ";"]
        raise TypeError(f"not a plain statement: {s}")
