"""C for template kernels (matmul, linear, batched matmul, convolution): which routine a
``Template`` gets, and the direct loop every other template falls back to.

    template_function(kernel, symbols, epilogue, constant_inputs=frozenset())
        -> "void effc_k0(const float *restrict a0, ...) {...}"
    prepack(kernel, constant_inputs) -> {input position: fn(constant tensor) -> packed tensor}

- float32 templates whose operands are affine and unmasked (matmul, addmm, linear with its
  transposed weight, batched matmul with broadcast batches, 1x1 stride-1 convolutions, a
  linear layer over a 3-D input as one GEMM) run the packed, register-blocked GEMM
  [Note: C GEMM template] in c_gemm.py; so do unmasked float32 matmuls with an operand
  whose views fold into a non-affine (floor/Mod) index, as BERT's head merge: that operand
  is first gathered into a contiguous scratch panel [Note: GEMM gathered operands];
- float32 depthwise convolutions (one input channel per group) run a direct kernel
  vectorised over the output width; other float32 2-D convolutions run implicit GEMM, the
  GEMM template with B packed straight from the input window (c_conv.py);
- everything else (float64, f16/bf16, masked matmul operands, convolutions none of these
  recognise) runs one direct loop nest per output point: correct for every template, fast
  for none.

``constant_inputs`` are positions in ``kernel.inputs`` whose buffers are compile-time
constants (weights). A GEMM whose B (or A) operand is one of them, with a static layout,
reads that input already packed into the panels its loops walk and packs nothing at run time
[Note: GEMM prepacked operands]; ``prepack(kernel, constant_inputs)`` gives, for each input
the function expects packed, the torch function that packs the constant once. Whoever calls
``template_function`` (or ``codegen.c.generate``) with ``constant_inputs`` must pass the
packed tensors for exactly the positions ``prepack`` returns, and size scratch with
``scratch_bytes(kernel, constant_inputs)`` (smaller: no packed B). Both choose their tiles
from the kernel alone (``gemm_tiles`` on its static sizes), so they agree on one machine.

``epilogue(axis_exprs, indent)`` is the caller's: C statements that read the float ``acc``
this code declares and fills, and store the kernel's outputs for the output point whose
domain axes (``i0, i1, ..``) are the given C expressions. It is called once per kernel and
its statements run once per output point, right after the point's sum is complete.

[Note: C template scratch]
Template kernels allocate nothing. Their working memory (the GEMM's gathered operand panels,
packed B, packed A and C tile; the row convolution's row accumulator) is carved from the
``scratch`` argument of the ABI [Note: C kernel ABI], and ``scratch_bytes(kernel)`` is how
many bytes that needs, as a formula in the size symbols (0 for a kernel that needs none):

- every part starts at a 64-byte aligned offset (``scratch`` itself is 64-byte aligned), its
  length rounded up to 64, so vector loads of packed panels are aligned and threads never
  share a cache line;
- per-thread parts are counted ``EFFC_THREADS`` times, the thread count fixed when the source
  is generated (``c_gemm.effc_threads()``: ``os.cpu_count()`` of the generating machine). The
  kernel caps its OpenMP team at that number (``num_threads(effc_team(EFFC_THREADS))``) and
  thread ``t`` takes the ``t``-th slice, so the formula bounds what any run uses whatever
  ``OMP_NUM_THREADS`` says; a machine with more cores than the generating one runs on at most
  EFFC_THREADS of them;
- the bound takes each template's run-time tile sizes at their largest (the GEMM shrinks MC
  and NC to spread work over threads, never grows them).
The host program runs one kernel at a time, so one scratch region, sized by the largest
need among its kernels, serves them all (c_host.py puts it at the arena's tail).
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterable, Mapping

import sympy

from effc.ir.kernel import Kernel

from .c_abi import buffer_params, kernel_signature
from .c_attention import attention_scratch
from .c_conv import conv_function, conv_scratch
from .c_im2col import im2col_conv_function, im2col_prepack, im2col_scratch_bytes
from .c_gemm import (Epilogue, c_index, gemm_function, gemm_plan, gemm_scratch, pack_layouts, packed_operands,
                     size_decls)

__all__ = ["template_function", "direct_function", "store_acc_epilogue", "scratch_bytes",
           "program_scratch", "prepack", "Epilogue"]


def prepack(kernel: Kernel, constant_inputs: Collection[int] = frozenset()
            ) -> dict[int, Callable[[Any], Any]]:
    """For each input position whose buffer ``template_function(kernel, ..,
    constant_inputs=constant_inputs)`` expects packed [Note: GEMM prepacked operands], the
    function from the original constant tensor (the buffer's contents, any shape, read flat
    in row-major order) to the packed one: a contiguous 1-D float32 torch tensor. Empty for
    kernels that pack nothing (no template, not GEMM-form, no constant operand, dynamic
    shapes)."""
    t = kernel.template
    if t is None or t.op not in ("matmul", "conv") or not constant_inputs:
        return {}
    plan = gemm_plan(kernel)
    if plan is None:
        return dict(im2col_prepack(kernel, constant_inputs)) if t.op == "conv" else {}
    return dict(pack_layouts(kernel, plan, frozenset(constant_inputs)))


def scratch_bytes(kernel: Kernel, constant_inputs: Collection[int] = frozenset()) -> sympy.Expr:
    """Bytes of ``scratch`` the C function of ``kernel`` (generated with ``constant_inputs``)
    needs [Note: C template scratch]: a formula in the size symbols, 0 for kernels that are
    not templates or need none."""
    t = kernel.template
    if t is not None and t.op == "node":   # library routines: attention's per-thread blocks
        return attention_scratch(kernel)
    if t is None or t.op not in ("matmul", "conv"):
        return sympy.Integer(0)
    plan = gemm_plan(kernel)
    if plan is not None:
        return gemm_scratch(plan, prepacked=packed_operands(kernel, plan, frozenset(constant_inputs)).values())
    if t.op == "conv":
        need = im2col_scratch_bytes(kernel, constant_inputs) or conv_scratch(kernel)
        if need is not None:
            return need
    return sympy.Integer(0)


def program_scratch(kernels: Iterable[Kernel], constant_inputs: Mapping[str, Collection[int]] | None = None
                    ) -> sympy.Expr:
    """The scratch one program needs: the largest of its kernels' (they run one at a time);
    ``constant_inputs`` maps a kernel's name to the constant input positions it was generated
    with."""
    ci = constant_inputs or {}
    needs = list(dict.fromkeys(scratch_bytes(k, ci.get(k.name, frozenset())) for k in kernels))
    numbers = [int(n) for n in needs if n.is_number]
    rest = [n for n in needs if not n.is_number]
    if numbers:
        rest.append(sympy.Integer(max(numbers)))
    if not rest:
        return sympy.Integer(0)
    return rest[0] if len(rest) == 1 else sympy.Max(*rest, evaluate=False)


def template_function(kernel: Kernel, symbols: Any, epilogue: Epilogue,
                      constant_inputs: Collection[int] = frozenset()) -> str:
    """The C source (helpers, then the ABI function) of a matmul or conv template kernel; the
    inputs ``prepack(kernel, constant_inputs)`` names are read packed."""
    t = kernel.template
    if t is None or t.op not in ("matmul", "conv"):
        raise ValueError(f"kernel {kernel.name} has no matmul or conv template")
    plan = gemm_plan(kernel)
    if plan is not None:
        return gemm_function(kernel, plan, symbols, epilogue, constant_inputs=frozenset(constant_inputs))
    if t.op == "conv":   # im2col panels on the GEMM micro-kernel; else the row convolution
        src = (im2col_conv_function(kernel, symbols, epilogue, constant_inputs)
               or conv_function(kernel, symbols, epilogue))
        if src is not None:
            return src
    return direct_function(kernel, symbols, epilogue)


def _to_acc(dtype: Any, buf: str, index: str) -> str:
    """A load of one operand element as the accumulator's type (f16/bf16 travel as raw bits)."""
    from effc.ir import DType
    if dtype is DType.BF16:
        return f"({{ union {{ uint32_t u; float f; }} v_ = {{ (uint32_t){buf}[{index}] << 16 }}; v_.f; }})"
    if dtype is DType.F16:
        return f"(float)(*(const _Float16 *)&{buf}[{index}])"
    return f"{buf}[{index}]"


def direct_function(kernel: Kernel, symbols: Any, epilogue: Epilogue) -> str:
    """One loop nest over the domain, an inner nest over the reduce axes: any template."""
    from effc.ir import DType
    t = kernel.template
    assert t is not None
    acc_t = "double" if t.dtype is DType.F64 else "float"
    dom, red = kernel.domain, kernel.reduce
    names = buffer_params(kernel)
    L = [f"{kernel_signature(kernel)} {{", "    (void)scratch;", *size_decls(kernel, symbols)]
    ind = "    "
    if dom:
        L.append(f"{ind}#pragma omp parallel for collapse({len(dom)}) schedule(static)")
    for a in dom:
        L.append(f"{ind}for (int64_t {a.name} = 0; {a.name} < {c_index(a.size)}; {a.name}++)")
    L.append(f"{ind}{{")
    inner = ind + "    "
    L.append(f"{inner}{acc_t} acc = 0;")
    ri = inner
    for a in red:
        L.append(f"{ri}for (int64_t {a.name} = 0; {a.name} < {c_index(a.size)}; {a.name}++)")
    L.append(f"{ri}{{")
    body = ri + "    "
    terms = []
    for o in t.operands:
        load = _to_acc(kernel.buffer(o.buffer).dtype, names[o.buffer], c_index(o.index))
        terms.append(f"({acc_t}){load}")
    prod = " * ".join(terms)
    masks = [o.mask for o in t.operands if o.mask is not None and o.mask is not sympy.true]
    if masks:
        cond = " && ".join(f"({c_index(m)})" for m in masks)
        L.append(f"{body}if ({cond}) acc += {prod};")
    else:
        L.append(f"{body}acc += {prod};")
    L.append(f"{ri}}}")
    L.append(epilogue({a.name: a.name for a in dom}, inner).rstrip("\n"))
    L.append(f"{ind}}}")
    L.append("}")
    return "\n".join(L) + "\n"


def store_acc_epilogue(kernel: Kernel) -> Epilogue:
    """The plainest epilogue: store ``acc`` at the index of every Store of the kernel (whatever
    value it stores). For tests and benchmarks of the templates alone; the real epilogue is
    the kernel body, emitted by codegen/c.py."""
    from effc.ir.kernel import Store
    stores = [s for s in kernel.statements() if isinstance(s, Store)]
    names = buffer_params(kernel)

    def epilogue(axes: dict[str, str], indent: str) -> str:
        return "".join(f"{indent}{names[s.buffer]}[{c_index(s.index, {k: f'({v})' for k, v in axes.items()})}] = acc;\n"
                       for s in stores)
    return epilogue
