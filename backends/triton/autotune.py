"""Launch configs of the Triton program's kernels: the cost model's pick, or with the
``autotune`` option on a CUDA device, the fastest of its top few as measured.

[Note: Triton autotuning]
``rank_configs`` (costmodel/triton_configs.py) orders the candidates by predicted time;
autotuning times the first ``TOP`` of them with ``triton.testing.do_bench`` on random inputs
at the size hints (a point-wise or reduction kernel reads memory by index arithmetic only,
so any values are safe) and keeps the fastest. The winner is written, atomically, to
``<triton cache>/tune/<key>.json``, ``key`` the sha256 of the kernel's text, the sizes, the
GPU's name and triton's version, so a later compile of the same kernel on the same GPU reads
it instead of measuring. Under TRITON_INTERPRET=1 timings mean nothing: the prediction is used.
Matmul and convolution kernels get ``None``: their template modules choose for themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Mapping

import torch

from effc.codegen.triton_abi import TritonConfig, size_symbols
from effc.ir.kernel import Kernel, format_kernel

TOP = 3


def pick_config(kernel: Kernel, env: Mapping[Any, int], target: Any, device: torch.device | None,
                autotune: bool) -> TritonConfig | None:
    from effc.costmodel.triton_configs import rank_configs
    if kernel.template is not None or kernel.kind not in ("pointwise", "reduction"):
        return None
    ranked = rank_configs(kernel, env, target)
    if not autotune or device is None or torch.device(device).type != "cuda" \
            or os.environ.get("TRITON_INTERPRET") == "1":
        return ranked[0][1]
    return _tuned(kernel, env, torch.device(device), [c for _, c in ranked[:TOP]])


def _key(kernel: Kernel, env: Mapping[Any, int], device: torch.device) -> str:
    from .build import triton_version
    sizes = ",".join(f"{s}={int(env.get(s, 0))}" for s in size_symbols(kernel))
    h = hashlib.sha256()
    for part in (format_kernel(kernel), sizes, torch.cuda.get_device_name(device), triton_version()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _tuned(kernel: Kernel, env: Mapping[Any, int], device: torch.device, top: list[TritonConfig]) -> TritonConfig:
    from .build import cache_root
    path = cache_root() / "tune" / f"{_key(kernel, env, device)}.json"
    try:
        return TritonConfig(**json.loads(path.read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    times = [(_measure(kernel, env, device, c), k, c) for k, c in enumerate(top)]
    best = min(times, key=lambda t: (t[0], t[1]))[2]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"config": best.to_json(), "measured_ms": {str(c): t for t, _, c in times}}, f, indent=1)
    os.replace(tmp, path)
    return best


def _measure(kernel: Kernel, env: Mapping[Any, int], device: torch.device, config: TritonConfig) -> float:
    """Median milliseconds of one launch of ``kernel`` under ``config``."""
    import triton.testing

    from effc.codegen.triton import generate

    from .build import load
    entry = load(generate(kernel, kernel.name, config)).entry
    sizes = [int(env.get(s, 1)) for s in size_symbols(kernel)]

    def tensor(b: Any) -> torch.Tensor:
        shape = [d if isinstance(d, int) else int(d.subs(env)) for d in b.shape]
        dt = b.dtype.to_torch()
        if dt.is_floating_point:
            return torch.randn(shape, device=device).to(dt)
        return torch.randint(0, 2, shape, device=device).to(dt)
    ins = [tensor(b) for b in kernel.inputs]
    outs = [tensor(b) for b in kernel.outputs]
    return float(triton.testing.do_bench(lambda: entry(ins, outs, sizes)))
