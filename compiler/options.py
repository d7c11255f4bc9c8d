"""Compile options: one frozen object that travels explicitly through the compiler.

They arrive as keyword arguments of ``effc.compile`` or as ``torch.compile(...,
options={...})``; unknown names and bad values are rejected with an OptionError that lists
what is accepted.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import debug
from .errors import OptionError

TARGETS = ("auto", "reference", "c", "triton")
DEFAULT_HINT = 64
_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def parse_bytes(value: int | str | None, name: str) -> int | None:
    """``512KiB``, ``1.5 MB``, ``4096`` -> bytes; None stays None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise OptionError(f"option {name} must be positive, got {value}")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).upper() in _UNITS:
            n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
            if n > 0:
                return n
    raise OptionError(f"option {name} must be a size such as 512KiB, 2MB or a byte count; got {value!r}")


@dataclass(frozen=True)
class Options:
    target: str = "auto"
    disable_passes: tuple[str, ...] = ()
    verify: bool = field(default_factory=lambda: debug.VERIFY)
    dump_dir: str | None = field(default_factory=lambda: debug.DUMP_DIR)
    explain: bool = field(default_factory=lambda: debug.EXPLAIN)
    # Training graphs (inputs that require grad): "compile" both forward and backward through
    # effc, or "eager" to run them with PyTorch and log why.
    training: str = "compile"
    # Peak activation memory allowed ("512KiB", "2MB", or bytes); None: no limit. Over it, the
    # early stages of a CNN run patch by patch (passes/schedule_patches.py).
    memory_budget: int | str | None = None
    # A typical value per size symbol (name -> int) for cost-model decisions; the compiler
    # fills it from the example inputs. Symbols without a hint are priced at DEFAULT_HINT.
    size_hints: Mapping[str, int] = field(default_factory=dict)
    # Target triton: measure the cost model's top few launch configs per kernel on the GPU and
    # keep the fastest (cached beside the kernel); off, the cost model's first pick is used.
    autotune: bool = False
    # Target triton on CUDA: replay a program whose shapes are static as one CUDA graph.
    cuda_graphs: bool = True
    # Target c: keep the compiled program (generated C, packed weights, the report) in the
    # whole-program cache, and load it instead of compiling again when the graph, weights,
    # options, effc and the toolchain are the same ([Note: C program cache]).
    cache: bool = field(default_factory=lambda: debug.CACHE)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise OptionError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.training not in ("compile", "eager"):
            raise OptionError(f"option training must be 'compile' or 'eager', got {self.training!r}")
        if isinstance(self.disable_passes, str):
            object.__setattr__(self, "disable_passes", (self.disable_passes,))
        object.__setattr__(self, "disable_passes", tuple(self.disable_passes))
        object.__setattr__(self, "memory_budget", parse_bytes(self.memory_budget, "memory_budget"))
        if not isinstance(self.size_hints, Mapping) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
                for k, v in self.size_hints.items()):
            raise OptionError("option size_hints must map size-symbol names to positive integers")
        from effc.passes import PASS_NAMES
        unknown = [p for p in self.disable_passes if p not in PASS_NAMES]
        if unknown:
            raise OptionError(f"unknown pass {', '.join(unknown)} in disable_passes; "
                              f"passes are: {', '.join(PASS_NAMES)}")

    @staticmethod
    def from_mapping(values: Mapping[str, Any] | None) -> "Options":
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(Options)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise OptionError(f"unknown option {', '.join(unknown)}; options are: "
                              f"{', '.join(sorted(names))}")
        return Options(**values)

    def hint_env(self, symbols: Any) -> dict:
        """A value for each sympy symbol in ``symbols``: its size hint, else DEFAULT_HINT."""
        return {s: self.size_hints.get(str(s), DEFAULT_HINT) for s in symbols}

    def replace(self, **changes: Any) -> "Options":
        return dataclasses.replace(self, **changes)
