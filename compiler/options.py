"""Compile options: one frozen object that travels explicitly through the compiler.

They arrive as keyword arguments of ``effc.compile`` or as ``torch.compile(...,
options={...})``; unknown names and bad values are rejected with an OptionError that lists
what is accepted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import debug
from .errors import OptionError

TARGETS = ("auto", "reference", "c", "triton")


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

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise OptionError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.training not in ("compile", "eager"):
            raise OptionError(f"option training must be 'compile' or 'eager', got {self.training!r}")
        if isinstance(self.disable_passes, str):
            object.__setattr__(self, "disable_passes", (self.disable_passes,))
        object.__setattr__(self, "disable_passes", tuple(self.disable_passes))
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

    def replace(self, **changes: Any) -> "Options":
        return dataclasses.replace(self, **changes)
