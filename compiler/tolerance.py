"""The tolerance policy: how close a compiled result must be to be called equivalent.

[Note: tolerance policy]
Outputs are judged against a float64 reference (the same graph evaluated with every float
widened to float64), not against eager float32: the compiled result may be no further from
float64 than eager is, by more than a small factor. Concretely, per output

    max|compiled - ref64| <= FACTOR * max|eager - ref64| + SLACK * eps(dtype) * (1 + max|ref64|)

where the slack term keeps a result that differs from eager only by reassociation within a
few ulps from failing when eager happens to be exact. NaN must appear exactly where the
reference has NaN (or where eager has it), and infinities must match in sign. Integer and bool
outputs must equal eager or the reference element by element (a comparison that flips on a
near-tie is as right as eager's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

FACTOR = 8.0
SLACK = 32.0


@dataclass(frozen=True)
class Comparison:
    index: int
    ok: bool
    max_abs: float
    max_rel: float
    allowed: float
    reason: str = ""

    def __str__(self) -> str:
        status = "ok" if self.ok else "MISMATCH"
        extra = f" ({self.reason})" if self.reason else ""
        return (f"output {self.index}: {status} max abs err {self.max_abs:.3g}, max rel err "
                f"{self.max_rel:.3g}, allowed {self.allowed:.3g}{extra}")


def compare_one(i: int, actual: torch.Tensor, eager: torch.Tensor, ref: torch.Tensor) -> Comparison:
    if actual.shape != eager.shape:
        return Comparison(i, False, float("inf"), float("inf"), 0.0,
                          f"shape {list(actual.shape)} != {list(eager.shape)}")
    if actual.dtype != eager.dtype:
        return Comparison(i, False, float("inf"), float("inf"), 0.0, f"dtype {actual.dtype} != {eager.dtype}")
    a, e, r = (t.detach().cpu() for t in (actual, eager, ref))
    if not a.is_floating_point() and not a.is_complex():
        r = r.to(a.dtype) if not r.is_floating_point() else r.round().to(a.dtype)
        bad = (a != e) & (a != r)
        n = int(bad.sum())
        return Comparison(i, n == 0, float(n), 0.0, 0.0, f"{n} elements differ" if n else "")
    a64, e64, r64 = a.double(), e.double(), r.double()
    nan_ok = torch.isnan(a64) == (torch.isnan(r64) | torch.isnan(e64) & torch.isnan(a64))
    if not bool(nan_ok.all()):
        return Comparison(i, False, float("nan"), float("nan"), 0.0, "NaN where the reference has none, or none where it has one")
    inf = torch.isinf(r64)
    if bool((a64[inf] != r64[inf]).any() & (a64[inf] != e64[inf]).any()):
        return Comparison(i, False, float("inf"), float("inf"), 0.0, "infinities differ")
    fin = torch.isfinite(r64) & torch.isfinite(a64)
    if not bool(fin.any()):
        return Comparison(i, True, 0.0, 0.0, 0.0)
    err_a = (a64 - r64)[fin].abs()
    err_e = (e64 - r64)[fin & torch.isfinite(e64)].abs()
    scale = r64[fin].abs()
    eps = torch.finfo(a.dtype).eps
    max_e = float(err_e.max()) if err_e.numel() else 0.0
    allowed = FACTOR * max_e + SLACK * eps * (1.0 + float(scale.max()))
    max_abs = float(err_a.max())
    max_rel = float((err_a / scale.clamp_min(1e-30)).max())
    return Comparison(i, max_abs <= allowed, max_abs, max_rel, allowed)


def compare(actual: Sequence[torch.Tensor], eager: Sequence[torch.Tensor],
            reference: Sequence[torch.Tensor]) -> list[Comparison]:
    if not (len(actual) == len(eager) == len(reference)):
        raise ValueError(f"output counts differ: {len(actual)}, {len(eager)}, {len(reference)}")
    return [compare_one(i, a, e, r) for i, (a, e, r) in enumerate(zip(actual, eager, reference))]


def assert_equivalent(actual: Sequence[torch.Tensor], eager: Sequence[torch.Tensor],
                      reference: Sequence[torch.Tensor], context: str = "") -> None:
    """Raise AssertionError naming every output outside the policy."""
    bad = [c for c in compare(actual, eager, reference) if not c.ok]
    if bad:
        raise AssertionError((context + "\n" if context else "") + "\n".join(map(str, bad)))
