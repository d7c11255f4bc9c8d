"""effc quick start: compile a small CNN + MLP classifier, check it, time it, explain it.

    python examples/quickstart.py        (or: make demo)
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

import effc
from effc.tolerance import compare


class SmallNet(torch.nn.Module):
    """A conv-bn-relu stem, a residual block and an MLP head: what effc's passes work on."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1, bias=False),
                                        torch.nn.BatchNorm2d(32), torch.nn.ReLU())
        self.block = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 3, padding=1, bias=False),
                                         torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                                         torch.nn.Conv2d(32, 32, 3, padding=1, bias=False),
                                         torch.nn.BatchNorm2d(32))
        self.head = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = x.mean(dim=(2, 3))
        return torch.softmax(self.head(x), dim=-1)


def median_time(fn, x: torch.Tensor, runs: int = 30) -> float:
    times = []
    with torch.no_grad():
        for _ in range(3):
            fn(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    model = SmallNet()
    model.train()
    with torch.no_grad():  # give batch norm real running statistics
        for _ in range(5):
            model(torch.randn(8, 3, 32, 32))
    model.eval()
    x = torch.randn(4, 3, 32, 32)

    t0 = time.perf_counter()
    compiled = effc.compile(model, [x])
    print(f"compiled in {time.perf_counter() - t0:.2f} s (including tracing by torch.compile)\n")
    print(compiled.explain())

    with torch.no_grad():
        eager = model(x)
        ref = copy.deepcopy(model).double()(x.double())
        ours = compiled(x)
    (c,) = compare([ours], [eager], [ref])
    print(f"\nnumerics vs float64 reference: {c}")

    t_eager = median_time(model, x)
    t_effc = median_time(compiled, x)
    print(f"median time: eager {t_eager * 1e3:.3f} ms, effc {t_effc * 1e3:.3f} ms "
          f"-> speed ratio {t_eager / t_effc:.2f}x over eager (target: {compiled.explain().graphs[0].target})")
    if not c.ok:
        raise SystemExit("effc output is outside the tolerance policy")


if __name__ == "__main__":
    main()
