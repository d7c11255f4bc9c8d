"""The embedding lookup as a Triton kernel: ``Template(op="node")`` over an ``embedding`` node
(the token and position tables of every transformer), per [Note: Triton kernel ABI].

    kernel k0 op(w: f16[50257, 768], ids: i64[8, 512]) -> (out0: f16[8, 512, 768])
      call embedding {padding_idx=-1}
becomes one program per looked-up row, copying it in blocks of ``BLOCK_D`` columns:
    row = tl.program_id(0).to(tl.int64)
    i = tl.load(ids + row).to(tl.int64) + tl.zeros([BLOCK_D], tl.int64)    (ok: 0 <= i < V)
    for off in range(0, D, BLOCK_D):
        d = off + tl.arange(0, BLOCK_D)
        tl.store(out0 + row * D + d, tl.load(w + i * D + d, mask=(d < D) & ok, other=0), mask=d < D)
An index outside the table (eager raises) reads zeros instead of faulting the device, which
would end the process. ``padding_idx`` only matters to gradients.
"""

from __future__ import annotations

import sympy

from effc.ir import Op
from effc.ir.kernel import Kernel, LoweringError

from .triton_abi import TritonSource, kernel_name, py_ident, size_symbols
from .triton_index import PythonPrinter

HEADER = "import torch\nimport triton\nimport triton.language as tl\n\n"
MAX_BLOCK = 1024


def generate_embedding(kernel: Kernel, name: str) -> TritonSource:
    t = kernel.template
    if t is None or t.node is None or t.node.op is not Op.EMBEDDING:
        raise LoweringError(f"kernel {kernel.name} is not an embedding lookup")
    names = [b.name for b in kernel.inputs]
    weight, ids = t.node.inputs
    if names.count(weight.name) != 1 or names.count(ids.name) != 1 or weight.name == ids.name:
        raise LoweringError(f"kernel {kernel.name}: the embedding's operands are not distinct inputs")
    wpos, ipos = names.index(weight.name), names.index(ids.name)
    if len(kernel.outputs) != 1:
        raise LoweringError(f"kernel {kernel.name}: an embedding has one output")
    symbols = size_symbols(kernel)
    sizes = {s: f"sz{k}" for k, s in enumerate(symbols)}
    pr = PythonPrinter(dict(sizes))
    wshape = kernel.inputs[wpos].shape
    rows = sympy.Mul(*(sympy.sympify(d) for d in kernel.inputs[ipos].shape))
    fn = kernel_name(name)
    body = f"""@triton.jit
def {fn}(w, ids, out, V, D, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    i = tl.load(ids + row).to(tl.int64) + tl.zeros([BLOCK_D], tl.int64)
    ok = (i >= 0) & (i < V)
    i = tl.where(ok, i, 0)
    for off in range(0, D, BLOCK_D):
        d = off + tl.arange(0, BLOCK_D)
        m = d < D
        v = tl.load(w + i * D + d, mask=m & ok, other=0)
        tl.store(out + row * D + d, v, mask=m)
"""
    lines = [f"{v} = sizes[{k}]" for k, v in enumerate(sizes.values())]
    lines += [f"rows = {pr(rows)}", f"vocab = {pr(sympy.sympify(wshape[0]))}", f"width = {pr(sympy.sympify(wshape[1]))}",
              "if rows <= 0 or width <= 0:", "    return",
              f"block = min({MAX_BLOCK}, triton.next_power_of_2(width))",
              f"{fn}[(rows,)](inputs[{wpos}], inputs[{ipos}], outputs[0], vocab, width, BLOCK_D=block, "
              "num_warps=4 if block >= 512 else 1)"]
    entry = "def entry(inputs, outputs, sizes):\n" + "".join(f"    {ln}\n" for ln in lines)
    return TritonSource(py_ident(name, "effc_"), HEADER + body + "\n\n" + entry, "entry")
