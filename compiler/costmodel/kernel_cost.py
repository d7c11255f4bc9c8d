"""The roofline applied to a lowered kernel (kernel IR) rather than to one graph node.

A fused kernel moves each of its buffers once, whatever happens inside it: that is the point of
fusing. So bytes are counted per buffer at the buffer's own size (a bias broadcast over a
matrix costs its own bytes, not the matrix's), and FLOPs per statement executed: a top-level
``Compute`` once per domain point, one in a loop once per domain and reduce point, a matmul or
convolution template two per multiply-add. Casts are free. ``kernel_features`` returns these
counts explicitly so that a learned model can later be trained on the same features behind
``predict_kernel``'s signature.

Confidence is "medium" with calibrated ceilings and "low" otherwise; an opaque kernel (a
library call for one node, ``Template(op="node")``) is always "low", since the library's speed
is not what the ceilings describe.
"""

from __future__ import annotations

from typing import Any, Mapping

import sympy

from effc.ir.kernel import Compute, Kernel, Load, Loop, Reduce
from effc.ir.types import Dim

from .roofline import Prediction, Target, node_flops


def _size(d: Dim, env: Mapping[Any, int]) -> int:
    if isinstance(d, int):
        return d
    v = sympy.sympify(d).subs(env)
    if not v.is_number:
        raise ValueError(f"size {d} needs values for {sorted(map(str, v.free_symbols))}")
    return int(v)


def _numel(shape: tuple[Dim, ...], env: Mapping[Any, int]) -> int:
    n = 1
    for d in shape:
        n *= _size(d, env)
    return n


def kernel_features(kernel: Kernel, env: Mapping[Any, int]) -> dict[str, Any]:
    """The counts the cost model reads; raises ValueError when ``env`` leaves a size unbound."""
    domain = _numel(tuple(a.size for a in kernel.domain), env)
    reduce = _numel(tuple(a.size for a in kernel.reduce), env)
    t = kernel.template
    flops = 0
    if t is not None and t.op == "node":
        assert t.node is not None
        flops = node_flops(t.node, env) or 0
    elif t is not None:
        flops = 2 * domain * reduce
    for s in kernel.body:
        stmts, per = (s.body, domain * reduce) if isinstance(s, Loop) else ((s,), domain)
        flops += per * sum(1 for x in stmts if isinstance(x, Reduce)
                           or (isinstance(x, Compute) and x.op != "cast"))
    return {
        "kind": kernel.kind,
        "opaque": t is not None and t.op == "node",
        "bytes_read": sum(_numel(b.shape, env) * b.dtype.itemsize for b in kernel.inputs),
        "bytes_written": sum(_numel(b.shape, env) * b.dtype.itemsize for b in kernel.outputs),
        "flops": flops,
        "domain_size": domain,
        "reduce_size": reduce,
        "n_loops": sum(1 for s in kernel.body if isinstance(s, Loop)),
        "n_loads": sum(1 for s in kernel.statements() if isinstance(s, Load)),
        "itemsize": max((b.dtype.itemsize for b in kernel.buffers), default=0),
    }


def predict_kernel(kernel: Kernel, env: Mapping[Any, int], target: Target | None = None) -> Prediction | None:
    """Predicted seconds of one run of ``kernel`` on ``target`` (default: this machine's CPU,
    calibrated when ``effc calibrate`` has run); None where ``env`` leaves a size unknown."""
    if target is None:
        from .calibrate import current_target
        target = current_target()
    try:
        f = kernel_features(kernel, env)
    except ValueError:
        return None
    memory = (f["bytes_read"] + f["bytes_written"]) / target.bandwidth
    dense = kernel.template is not None and kernel.template.op in ("matmul", "conv")
    compute = f["flops"] / target.flops_for(f["itemsize"], dense)
    confidence = "medium" if target.calibrated and not f["opaque"] else "low"
    return Prediction(max(memory, compute) + target.overhead, confidence,
                      {**f, "bound": "memory" if memory >= compute else "compute", "target": target.name})
