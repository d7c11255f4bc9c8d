"""Running generated Triton template sources in tests: on the CPU under TRITON_INTERPRET=1
(set here, before anything imports triton, unless CUDA is present), or compiled on CUDA.

A source is written to a file and imported (``@triton.jit`` reads its function's source
through ``inspect``), its entry called on fresh random inputs and NaN-poisoned outputs, and
every output compared with the reference backend under the tolerance policy: the graph run
by torch in its own dtypes (eager) and widened to float64 (the reference).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import sympy  # noqa: E402

from effc.backends.reference.program import ReferenceProgram  # noqa: E402
from effc.codegen.triton_abi import TritonSource, size_symbols  # noqa: E402
from effc.ir import DType, Graph, GraphBuilder, TensorType, Value  # noqa: E402
from effc.ir.kernel import Kernel  # noqa: E402
from effc.ir.kernel_lower import lower  # noqa: E402
from effc.ir.kernel_node import add_kernel  # noqa: E402
from effc.tolerance import assert_equivalent  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"

Body = Callable[..., list[Value]]


def build(kind: str, fn: Body, types: Sequence[TensorType], name: str = "k0") -> tuple[Graph, Kernel]:
    """The body graph ``fn(builder, *inputs)`` and its lowered kernel of ``kind``."""
    b = GraphBuilder()
    body = b.build(fn(b, *[b.input(f"a{i}", t) for i, t in enumerate(types)]))
    outer = GraphBuilder()
    node = add_kernel(outer, kind, name, [outer.input(f"x{i}", t) for i, t in enumerate(types)], body)
    return body, lower(node)


def load(src: TritonSource, directory: Path) -> Callable[[list, list, list], None]:
    path = directory / f"{src.name}_{abs(hash(src.source))}.py"
    path.write_text(src.source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, src.entry)


def random_input(shape: Sequence[int], dtype: DType, gen: torch.Generator) -> torch.Tensor:
    if dtype.is_float:
        return torch.randn(tuple(shape), generator=gen).to(dtype.to_torch())
    return torch.randint(-5, 6, tuple(shape), generator=gen).to(dtype.to_torch())


def check(src: TritonSource, body: Graph, kernel: Kernel, shapes: Sequence[Sequence[int]], directory: Path,
          env: dict[sympy.Symbol, int] | None = None, seed: int = 0) -> None:
    """Run ``src`` on random inputs of ``shapes`` and compare with the reference backend."""
    gen = torch.Generator().manual_seed(seed)
    xs = [random_input(s, b.dtype, gen) for s, b in zip(shapes, kernel.inputs)]
    eager = ReferenceProgram(body)(*xs)
    ref = ReferenceProgram(body, upcast=True)(*xs)
    outs = [torch.full(e.shape, float("nan") if e.is_floating_point() else -7, dtype=e.dtype, device=DEVICE)
            for e in eager]
    sizes = [int((env or {})[s]) for s in size_symbols(kernel)]
    load(src, directory)([x.to(DEVICE) for x in xs], outs, sizes)
    got = [o.cpu() for o in outs]
    assert_equivalent(got, eager, ref, f"{kernel}\n{src.source}")
