"""Matmul and convolution templates: operand index maps over the domain and reduce axes.

    %0 = linear(%a0, %a1, %a2) : f32[32, 16]          (a1: f32[16, 64] is read transposed)
lowers to
    domain i0 < 32, i1 < 16
    reduce r0 < 64
    %acc = matmul sum(a0[64*i0 + r0] * a1[64*i1 + r0]) {batch=0, trans_a=false, trans_b=true} : f32
    %t0 = load a2[i1] : f32
    %t1 = add(%acc, %t0) : f32

The domain is the node's output; the reduce axes are what one output element sums over (k for
a matmul; input channels of the group and the kernel window for a convolution). Operands are
read through views (a transposed or reshaped weight), never computed. What a node adds to the
sum (linear's bias, addmm's alpha and beta, the convolution bias) is emitted as the first
epilogue statements, so the result of the node is a temporary like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sympy

from .kernel import Axis, LoweringError, Operand, Template
from .kernel_views import Index, broadcast_index, simplify_index
from .ops import Op

if TYPE_CHECKING:
    from .graph import Node
    from .kernel_lower import _Lowerer

TEMPLATE_OPS = frozenset({Op.MATMUL, Op.ADDMM, Op.LINEAR, Op.CONVOLUTION})


def stride(index: sympy.Expr, axis: sympy.Basic) -> sympy.Expr | None:
    """How far ``index`` moves per step of ``axis``, or None where it is not affine in it."""
    if not isinstance(axis, sympy.Symbol) or axis not in index.free_symbols:
        return sympy.Integer(0)
    if any(axis in f.free_symbols for f in index.atoms(sympy.floor, sympy.Mod, sympy.Min, sympy.Max)):
        return None
    d = sympy.diff(index, axis)
    return None if axis in d.free_symbols else d


def matmul_template(lw: "_Lowerer", node: "Node", idx: Index) -> tuple[Template, tuple[Axis, ...], str]:
    a, b = (node.inputs[1], node.inputs[2]) if node.op is Op.ADDMM else node.inputs[:2]
    a_shape = a.type.shape
    b_shape = b.type.shape if node.op is not Op.LINEAR else (b.type.shape[1], b.type.shape[0])
    reduce, (k,) = lw.axes("r", [a_shape[-1]])
    ra, rb = len(a_shape), len(b_shape)
    nb = len(idx) - (ra > 1) - (rb > 1)
    batch = idx[:nb]
    a_idx = broadcast_index(batch, a_shape[:-2]) + (idx[nb], k) if ra > 1 else (k,)
    b_idx = broadcast_index(batch, b_shape[:-2]) + (k, idx[-1]) if rb > 1 else (k,)
    if node.op is Op.LINEAR:
        b_idx = (b_idx[1], b_idx[0])  # the weight is [n, k]
    (abuf, aix), (bbuf, bix) = lw.source(a, a_idx, node), lw.source(b, b_idx, node)
    dtype = node.output.type.dtype
    attrs = (("batch", nb), ("trans_a", stride(aix, k) != 1),
             ("trans_b", rb > 1 and stride(bix, idx[-1]) != 1))
    t = Template("matmul", (Operand(abuf.name, aix), Operand(bbuf.name, bix)), attrs, dtype)
    acc = t.acc
    if node.op is Op.LINEAR and len(node.inputs) == 3:
        bias = node.inputs[2]
        acc = lw.compute("add", (acc, lw.value(bias, broadcast_index(idx, bias.type.shape))), dtype, idx)
    if node.op is Op.ADDMM:  # beta * bias + alpha * (a @ b)
        alpha, beta = node.attrs["alpha"], node.attrs["beta"]
        if alpha != 1:
            acc = lw.compute("mul", (acc, lw.const(alpha, dtype)), dtype, idx)
        if beta != 0:
            bias = lw.value(node.inputs[0], broadcast_index(idx, node.inputs[0].type.shape))
            if beta != 1:
                bias = lw.compute("mul", (bias, lw.const(beta, dtype)), dtype, idx)
            acc = lw.compute("add", (acc, bias), dtype, idx)
    return t, reduce, acc


def conv_template(lw: "_Lowerer", node: "Node", idx: Index) -> tuple[Template, tuple[Axis, ...], str]:
    a = node.attrs
    if a["transposed"]:
        raise LoweringError("transposed convolution has no template; it runs as an op kernel")
    x, w = node.inputs[0], node.inputs[1]
    groups = a["groups"]
    cout, cin_g = w.type.shape[0], w.type.shape[1]
    reduce, r = lw.axes("r", w.type.shape[1:])
    oc = idx[1]
    ch = r[0]
    if groups != 1:
        cout_g = cout // groups if isinstance(cout, int) else cout / groups
        ch = sympy.floor(oc / cout_g) * cin_g + r[0]
    pos = [idx[2 + j] * a["stride"][j] - a["padding"][j] + r[1 + j] * a["dilation"][j]
           for j in range(len(a["stride"]))]
    inside = [c for j, p in enumerate(pos) if a["padding"][j]
              for c in (p >= 0, p < x.type.shape[2 + j])]
    mask = sympy.And(*inside) if inside else None
    (xbuf, xix), (wbuf, wix) = lw.source(x, (idx[0], simplify_index(ch, lw.sizes), *pos), node), \
        lw.source(w, (oc, *r), node)
    dtype = node.output.type.dtype
    attrs = tuple((k, a[k]) for k in ("stride", "padding", "dilation", "groups"))
    t = Template("conv", (Operand(xbuf.name, xix, mask), Operand(wbuf.name, wix)), attrs, dtype)
    acc = t.acc
    if len(node.inputs) == 3:
        acc = lw.compute("add", (acc, lw.value(node.inputs[2], (oc,))), dtype, idx)
    return t, reduce, acc
