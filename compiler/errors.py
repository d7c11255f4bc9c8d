"""effc's error hierarchy.

User errors (bad input file, bad option, wrong input at run time) derive from ``UserError``:
the CLI prints their message on one line and exits with status 2. Anything else is an internal
error and keeps its traceback.
"""

from __future__ import annotations


class EffcError(Exception):
    """Base of every error effc raises on purpose."""


class UserError(EffcError):
    """Something the user can fix: a bad option, model file or input."""


class OptionError(UserError):
    pass


class InputError(UserError):
    """A compiled program was called with inputs of the wrong number, dtype or shape."""


class CompileError(EffcError):
    """An internal failure while compiling; names the pass or node involved."""


class MemoryBudgetError(UserError):
    """No schedule keeps the program's peak memory within the ``memory_budget`` option."""
