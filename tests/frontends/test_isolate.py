"""Work in a forked child: results and exceptions come back, crashes and hangs become errors."""

from __future__ import annotations

import os
import signal
import time

import pytest

from effc.errors import CompileError, UserError
from effc.frontends.isolate import in_child


def test_result_and_exception_come_back():
    assert in_child(lambda: {"x": [1, 2]}, "work") == {"x": [1, 2]}

    def fail():
        raise UserError("bad model")
    with pytest.raises(UserError, match="bad model"):
        in_child(fail, "work")


def test_a_crash_is_an_error_naming_the_signal():
    with pytest.raises(CompileError, match="work crashed \\(SIGSEGV\\)"):
        in_child(lambda: os.kill(os.getpid(), signal.SIGSEGV), "work")


def test_a_hang_is_stopped():
    t0 = time.monotonic()
    with pytest.raises(CompileError, match="did not finish in 0.5 s"):
        in_child(lambda: time.sleep(60), "work", timeout=0.5)
    assert time.monotonic() - t0 < 30
