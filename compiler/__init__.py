"""effc: an optimizing compiler for neural-network inference.

    import effc
    compiled = effc.compile(model, [example_input])
    compiled(x); print(compiled.explain())

or ``torch.compile(model, backend="effc")`` (no import needed), then ``effc.explain()``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from .errors import CompileError, EffcError, InputError, OptionError, UserError  # noqa: E402
from .options import Options  # noqa: E402


def compile(*args: Any, **kwargs: Any) -> Any:  # noqa: A001 - the public name is effc.compile
    from .api import compile as _compile
    return _compile(*args, **kwargs)


def explain() -> Any:
    """What ``torch.compile(backend="effc")`` compiled most recently in this process."""
    from .dynamo import recent_explain
    return recent_explain()


def backend(**options: Any) -> Any:
    """A backend object with fixed options, for ``torch.compile(model, backend=effc.backend(...))``;
    its ``.explain()`` covers only the graphs it compiled."""
    from .dynamo import EffcBackend
    return EffcBackend(Options.from_mapping(options))


__all__ = ["CompileError", "EffcError", "InputError", "OptionError", "Options", "UserError",
           "__version__", "backend", "compile", "explain"]
