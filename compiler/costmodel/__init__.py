"""The cost model: predicted seconds for a piece of work on a target.

One interface for every decision that trades implementations: ``predict_node(node, env,
target)`` gives a ``Prediction``: seconds, and the features it was computed from, so that a
learned model can later replace the formula behind the same call. A fused kernel node is priced
from its lowered kernel IR (``predict_kernel``); a candidate group the fusion pass weighs, before
it is a kernel, by ``predict_group`` on the same features (bytes moved, FLOPs). The first model is an
analytical roofline: the larger of bytes moved over memory bandwidth and FLOPs over peak
compute, plus a fixed per-kernel overhead. Ceilings are defaults for the target until a
calibration run (``effc calibrate``, ``calibrate.py``) measures them and caches them.
"""

from __future__ import annotations

from .calibrate import current_target
from .group_cost import predict_group
from .kernel_cost import kernel_features, predict_kernel
from .roofline import CPU_DEFAULT, Prediction, Target, node_bytes, node_flops, predict_node

__all__ = ["CPU_DEFAULT", "Prediction", "Target", "current_target", "kernel_features", "node_bytes",
           "node_flops", "predict_group", "predict_kernel", "predict_node"]
