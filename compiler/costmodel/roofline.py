"""Analytical roofline: time = max(bytes / bandwidth, flops / peak) + overhead.

Bytes count every input read once and every output written once (what an unfused kernel
moves); FLOPs count multiply-adds as two for matmul and convolution, one per element and
operand for element-wise math, and one per input element for reductions, norms and softmax
(several passes over the data count in bytes, not here). Layout ops move bytes and do no math.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import sympy

from effc.ir import Family, Node, Op, TensorType


@dataclass(frozen=True)
class Target:
    name: str
    bandwidth: float        # bytes per second, read + write, from main memory
    peak_flops: float       # float32 FLOP/s
    overhead: float         # seconds per kernel launch / call
    calibrated: bool = False
    half_flops: float = 0.0  # float16/bfloat16 FLOP/s of matrix units (tensor cores); 0: as float32

    def flops_for(self, itemsize: int, dense: bool) -> float:
        """Peak FLOP/s for arithmetic on ``itemsize``-byte floats; ``dense``: a matmul or
        convolution, which half-precision matrix units run."""
        return self.half_flops if dense and itemsize == 2 and self.half_flops else self.peak_flops


# A 2-core x86-64 server slice: stream-copy bandwidth ~10 GB/s, two AVX2 FMA pipes per core
# at ~2.5 GHz (2 cores x 2 x 8 lanes x 2 x 2.5e9 ~ 160 GFLOP/s, of which ~60% reachable).
CPU_DEFAULT = Target("cpu 2 cores (uncalibrated defaults)", 10e9, 100e9, 2e-6)
# NVIDIA GPUs by compute capability, at about 70-80% of the data-sheet figures (what copies and
# large GEMMs reach): H100/H200 (sm90) 3.35-4.8 TB/s, 67 TFLOP/s float32, 989 dense float16;
# A100 (sm80) 2.0 TB/s, 19.5 float32, 312 float16; L4/4090 (sm89) 0.3-1.0 TB/s, 60-82, 242-330.
GPU_DEFAULTS = {
    "sm90": Target("sm90 (uncalibrated defaults)", 3.0e12, 50e12, 5e-6, half_flops=650e12),
    "sm80": Target("sm80 (uncalibrated defaults)", 1.5e12, 15e12, 5e-6, half_flops=230e12),
    "sm89": Target("sm89 (uncalibrated defaults)", 0.6e12, 50e12, 5e-6, half_flops=180e12),
}


def default_target(description: str) -> Target:
    """Uncalibrated ceilings for a target description ("sm90 NVIDIA H200", "cpu-avx2 2
    threads"); an unknown GPU gets the closest older architecture's."""
    m = re.match(r"sm(\d+)", description)
    if m:
        cap = int(m.group(1))
        known = sorted((int(k[2:]) for k in GPU_DEFAULTS if int(k[2:]) <= cap), reverse=True)
        return GPU_DEFAULTS[f"sm{known[0]}" if known else "sm80"]
    return CPU_DEFAULT


@dataclass(frozen=True)
class Prediction:
    seconds: float
    confidence: str          # "low": default ceilings or unknown sizes; "medium": calibrated
    features: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "confidence": self.confidence, "features": self.features}


def _numel(t: TensorType, env: Mapping[Any, int]) -> int | None:
    n = t.numel()
    if isinstance(n, int):
        return n
    try:
        v = sympy.sympify(n).subs(env)
        return int(v) if v.is_number else None
    except (TypeError, ValueError):
        return None


def node_bytes(node: Node, env: Mapping[Any, int]) -> int | None:
    total = 0
    for v in list(node.inputs) + list(node.outputs):
        n = _numel(v.type, env)
        if n is None:
            return None
        total += n * v.type.dtype.itemsize
    return total


def node_flops(node: Node, env: Mapping[Any, int]) -> int | None:
    fam = node.op.family
    out = _numel(node.outputs[0].type, env) if node.outputs else 0
    if out is None:
        return None
    if fam in (Family.LAYOUT, Family.INDEX, Family.CREATE, Family.CONSTANT, Family.CAST):
        return 0
    if fam is Family.MATMUL:
        a = node.inputs[1] if node.op is Op.ADDMM else node.inputs[0]
        k = a.type.shape[-1] if a.type.rank else 1
        k = int(sympy.sympify(k).subs(env)) if not isinstance(k, int) else k
        return 2 * out * k
    if fam is Family.CONV:
        w = node.inputs[1].type
        per_out = math.prod(int(d) for d in w.shape[1:]) if w.is_static else None
        if node.attrs.get("transposed"):
            x = _numel(node.inputs[0].type, env)
            return None if x is None or per_out is None else 2 * x * int(w.shape[0]) * math.prod(int(d) for d in w.shape[2:])
        return None if per_out is None else 2 * out * per_out
    if fam in (Family.REDUCE, Family.NORM, Family.SOFTMAX, Family.POOL, Family.SCAN, Family.ATTENTION):
        src = _numel(node.inputs[0].type, env)
        return None if src is None else src * (5 if fam in (Family.NORM, Family.SOFTMAX) else 1)
    return out * max(1, len(node.inputs) - 1)


def predict_node(node: Node, env: Mapping[Any, int], target: Target | None = None) -> Prediction | None:
    """Predicted time of ``node`` run as one kernel on ``target`` (default: this machine's
    CPU, with its calibrated ceilings when ``effc calibrate`` has run); None where sizes are
    unknown."""
    if node.op is Op.CONSTANT:
        return None
    if target is None:
        from .calibrate import current_target
        target = current_target()
    if node.op is Op.KERNEL:
        return _predict_fused(node, env, target)
    b, f = node_bytes(node, env), node_flops(node, env)
    if b is None or f is None:
        return None
    dense = node.op.family in (Family.MATMUL, Family.CONV)
    itemsize = node.outputs[0].type.dtype.itemsize if node.outputs else 4
    memory, compute = b / target.bandwidth, f / target.flops_for(itemsize, dense)
    seconds = max(memory, compute) + target.overhead
    return Prediction(seconds, "medium" if target.calibrated else "low",
                      {"bytes": b, "flops": f, "bound": "memory" if memory >= compute else "compute",
                       "target": target.name})


def _predict_fused(node: Node, env: Mapping[Any, int], target: Target) -> Prediction | None:
    """A kernel node is priced from its kernel IR; a kind with no lowering (a patched stage)
    from its body's nodes, as one kernel that reads its inputs and writes its outputs once."""
    from effc.ir.kernel import LoweringError
    from effc.ir.kernel_lower import lower

    from .group_cost import predict_group
    from .kernel_cost import predict_kernel
    try:
        kernel = lower(node)
    except LoweringError:
        body = node.attrs["body"]
        return predict_group(body.nodes, body.outputs, env, target)
    return predict_kernel(kernel, env, target)
