"""Triton convolution templates: implicit GEMM for general and grouped convolutions, a direct
kernel for depthwise ones, each with the kernel's epilogue fused.

    generate_template(kernel, "k0") -> TritonSource(name="effc_k0", source="import os ...",
                                                    entry="entry")

[Note: Triton convolution templates]
A convolution template ``acc = sum over (ci, kh, kw) of x[..window..] (masked by the padding)
* w[co, ci, kh, kw]`` is, by [Note: Triton GEMM form], a GEMM with no im2col buffer: M the
output channels of a group, N the output pixels (batch, height, width), K the window
(channels of the group x kh x kw), the group a batch axis. The matmul template
([Note: Triton GEMM template]) runs it as is: each K step recovers (ci, kh, kw) from k by
division, evaluates the input's window offsets and padding mask on the ``[BK, BN]`` tile and
feeds ``tl.dot``; where the input channels fill K blocks the loop walks (tap, channel
block) instead, with no per-element division ([Note: Triton convolution K loop]). 1x1,
strided, dilated and grouped convolutions all take this path.

Where the GEMM would be degenerate (fewer than 16 output channels per group or a window of
fewer than 16 elements: depthwise convolutions, whose group is one channel) the tensor cores
would mostly multiply padding, so such a kernel runs directly instead: one program per
point of the outer output axes (batch, channel) and ``BLOCK`` points of the inner ones (the
output pixels the weight does not vary along). The window is a loop over its (static, and
then unrolled) points; per point the weight is one scalar load and the input one strided
vector load under the padding mask, multiplied into a float32 accumulator (float64 for
float64). The epilogue then runs on the ``BLOCK`` outputs as on a GEMM tile. The direct
kernel takes any template whose operand indices it can print, so it is also the form a
``DirectConfig`` asks for.
"""

from __future__ import annotations

from typing import Mapping

import sympy

from effc.costmodel.triton_gemm_configs import (DirectConfig, GemmConfig, choose_direct_config, rank_direct_configs,
                                                rank_gemm_configs)
from effc.ir import DType
from effc.ir.kernel import Kernel, LoweringError

from .triton_abi import TritonSource, kernel_name, py_ident
from .triton_epilogue import Epilogue, TilePrinter, decompose, module_text, params, sizes, unpack_sizes
from .triton_gemm import size_hint, gemm_source, problem
from .triton_gemm_plan import GemmForm, gemm_form
from .triton_index import PythonPrinter

MIN_DOT = 16      # tl.dot's smallest block; smaller M or K extents take the direct kernel
UNROLL_MAX = 64   # windows up to this many points are unrolled (static_range)


def generate_template(kernel: Kernel, name: str, config: GemmConfig | DirectConfig | None = None, *,
                      allow_tf32: bool = False, target: str = "sm90",
                      size_hints: Mapping[sympy.Symbol, int] | None = None) -> TritonSource:
    """The Triton source of a convolution template kernel [Note: Triton convolution
    templates]: implicit GEMM, or the direct kernel where the GEMM would be degenerate or
    ``config`` is a ``DirectConfig``. Raises LoweringError for what neither expresses."""
    t = kernel.template
    if t is None or t.op != "conv":
        raise LoweringError(f"kernel {kernel.name} is not a convolution template")
    if config is not None and not isinstance(config, (GemmConfig, DirectConfig)):
        raise TypeError(f"a convolution template takes a GemmConfig or DirectConfig, not {type(config).__name__}")
    form = gemm_form(kernel)
    if isinstance(config, DirectConfig) or (config is None and degenerate(form)):
        return direct_source(kernel, name, config if isinstance(config, DirectConfig) else None, size_hints)
    return gemm_source(kernel, name, form, config, allow_tf32=allow_tf32, target=target, size_hints=size_hints)


def rank_template_configs(kernel: Kernel, size_hints: Mapping[sympy.Symbol, int] | None = None, *,
                          allow_tf32: bool = False, target: str = "sm90"
                          ) -> list[tuple[float, GemmConfig | DirectConfig]]:
    """The feasible configurations of a convolution template with their predicted seconds,
    fastest first: tile configurations of the implicit GEMM ([Note: Triton GEMM configs]),
    or block sizes of the direct kernel where the GEMM would be degenerate."""
    form = gemm_form(kernel)
    h = dict(size_hints or {})
    if degenerate(form):
        outer, inner = _inner_axes(kernel)
        n_outer = size_hint(sympy.Mul(*[n for _, n in outer]), h) if outer else 1
        n_inner = size_hint(sympy.Mul(*[n for _, n in inner]), h) if inner else 1
        k = size_hint(form.extent(form.k), h)
        itemsize = max(kernel.buffer(o.buffer).dtype.itemsize for o in kernel.template.operands)  # type: ignore[union-attr]
        return list(rank_direct_configs(n_outer, n_inner, k, itemsize, target))
    ranked = rank_gemm_configs(problem(kernel, form, allow_tf32, size_hints), target)
    return [(t, c) for c, t, _ in ranked if t is not None]


def degenerate(form: GemmForm) -> bool:
    """Whether tensor-core tiles would be mostly padding: M or K statically under 16."""
    m, k = form.extent(form.m), form.extent(form.k)
    return (m.is_Integer and int(m) < MIN_DOT) or (k.is_Integer and int(k) < MIN_DOT)


def _inner_axes(kernel: Kernel) -> tuple[list[tuple[sympy.Symbol, sympy.Expr]], list[tuple[sympy.Symbol, sympy.Expr]]]:
    """(outer, inner) domain axes: inner is the longest run of trailing axes some operand
    does not read (its loads are scalars per program), at least the last axis."""
    t = kernel.template
    assert t is not None
    dom = [(a.symbol, sympy.sympify(a.size)) for a in kernel.domain if sympy.sympify(a.size) != 1]
    best = 1
    for o in t.operands:
        reads = sympy.sympify(o.index).free_symbols | (sympy.sympify(o.mask).free_symbols if o.mask is not None else set())
        run = 0
        for s, _ in reversed(dom):
            if s in reads:
                break
            run += 1
        best = max(best, run)
    best = min(best, len(dom))
    return dom[:len(dom) - best], dom[len(dom) - best:]


def direct_source(kernel: Kernel, name: str, config: DirectConfig | None = None,
                  size_hints: Mapping[sympy.Symbol, int] | None = None) -> TritonSource:
    """The direct kernel of a template [Note: Triton convolution templates]."""
    t = kernel.template
    assert t is not None
    for o in t.operands:
        if not kernel.buffer(o.buffer).dtype.is_float:
            raise LoweringError(f"operand {o.buffer} is {kernel.buffer(o.buffer).dtype}; the direct kernel is float only")
    acc_t = "tl.float64" if any(kernel.buffer(o.buffer).dtype is DType.F64 for o in t.operands) else "tl.float32"
    names: dict[sympy.Symbol, str] = sizes(kernel)
    ptrs = params(kernel)
    outer, inner = _inner_axes(kernel)
    red = [(a.symbol, sympy.sympify(a.size)) for a in kernel.reduce if sympy.sympify(a.size) != 1]
    dims: dict[sympy.Symbol, frozenset[str]] = {}
    for k, (s, _) in enumerate(outer + inner):
        names[s] = f"ax{k}"
    for k, (s, _) in enumerate(red):
        names[s] = f"kk{k}"
    for s, _ in inner:
        dims[s] = frozenset({"p"})
    printer = TilePrinter(names, {s for s, _ in outer + inner + red})
    n_inner = sympy.Mul(*[n for _, n in inner]) if inner else sympy.Integer(1)
    n_outer = sympy.Mul(*[n for _, n in outer]) if outer else sympy.Integer(1)
    k = sympy.Mul(*[n for _, n in red]) if red else sympy.Integer(1)
    if config is None:
        config = choose_direct_config(size_hint(n_inner, size_hints or {}))
    even = bool(n_inner.is_Integer) and int(n_inner) % config.block == 0
    L = ["pid = tl.program_id(0)", "if INDEX_64:", "    pid = pid.to(tl.int64)",
         "nblk = tl.cdiv(INNER, BLOCK)", "ob = pid // nblk", "ri = (pid % nblk) * BLOCK + tl.arange(0, BLOCK)",
         f"pi = ri{'' if even else ' % INNER'}"]
    L += [f"{v} = {src}" for v, src in decompose("ob", [(names[s], n) for s, n in outer], printer)]
    L += [f"{v} = {src}" for v, src in decompose("pi", [(names[s], n) for s, n in inner], printer)]
    L.append(f"acc = tl.zeros((BLOCK,), dtype={acc_t})")
    unroll = k.is_Integer and int(k) <= UNROLL_MAX
    L.append(f"for kk in {'tl.static_range(' + str(int(k)) + ')' if unroll else 'range(0, K)'}:")
    L += [f"    {v} = {src}" for v, src in decompose("kk", [(names[s], n) for s, n in red], printer)]
    terms = []
    for i, o in enumerate(t.operands):
        ix = sympy.sympify(o.index)
        mask = None if o.mask is None or o.mask is sympy.true else o.mask
        reads = ix.free_symbols | (mask.free_symbols if mask is not None else set())
        off = printer(ix)
        if any(s in reads for s, _ in inner) and not any(s in ix.free_symbols for s, _ in inner):
            off = f"({off}) + tl.zeros((BLOCK,), dtype=tl.int32)"  # the mask varies, the address not
        m = f", mask={printer(mask)}, other=0.0" if mask is not None else ""
        L.append(f"    x{i} = tl.load({ptrs[o.buffer]} + ({off}){m}).to({acc_t})")
        terms.append(f"x{i}")
    L.append(f"    acc += {' * '.join(terms)}")
    epi = Epilogue(kernel, printer, dims, ("p",), "(BLOCK,)", ptrs, None if even else "ri < INNER")
    L += epi.lines()
    jit = kernel_name(name)
    sz = list(sizes(kernel).values())
    args = [ptrs[b.name] for b in kernel.inputs + kernel.outputs] + sz
    py = PythonPrinter(sizes(kernel))
    entry = unpack_sizes(kernel) + [
        f"INNER, OUTER, K = {py(n_inner)}, {py(n_outer)}, {py(k)}",
        "if INNER <= 0 or OUTER <= 0:",
        "    return",
        "index_64 = max([t.numel() for t in list(inputs) + list(outputs)] + [0]) >= 2 ** 31",
        f"grid = (OUTER * triton.cdiv(INNER, {config.block}),)",
        f"{jit}[grid](*inputs, *outputs, {''.join(s + ', ' for s in sz)}INNER, K,",
        f"    BLOCK={config.block}, INDEX_64=index_64, num_warps={config.num_warps})"]
    sig = args + ["INNER", "K", "BLOCK: tl.constexpr", "INDEX_64: tl.constexpr"]
    return TritonSource(py_ident(name), module_text(jit, sig, L, entry, printer.helpers), "entry")
