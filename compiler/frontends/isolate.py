"""Running a native library's work in a forked child, so that its crash is an error, not ours.

torch-mlir aborts or segfaults the whole process on some valid ONNX models (4-bit types abort
with "LLVM ERROR"; a data-dependent ``Unique`` segfaults). ``in_child(fn)`` runs ``fn`` in a
forked copy of this process and returns its result, or raises what it raised; a child that dies
becomes a ``CompileError`` naming the signal, and one that runs past ``timeout`` seconds
(``EFFC_IMPORT_TIMEOUT``, default 600) is killed and reported the same way. The result travels back pickled: it is our own
process's data (the child is a fork of this process), never a file a user handed us.
"""

from __future__ import annotations

import os
import pickle
import signal
import tempfile
import time
from typing import Any, Callable

from effc.errors import CompileError


def in_child(fn: Callable[[], Any], what: str, timeout: float | None = None) -> Any:
    if not hasattr(os, "fork") or os.environ.get("EFFC_NO_FORK") == "1":
        return fn()
    with tempfile.TemporaryFile() as out:
        pid = os.fork()
        if pid == 0:  # the child: run, write the outcome, and leave without cleanup handlers
            code = 0
            try:
                try:
                    import faulthandler
                    faulthandler.disable()  # a crash here is reported by the parent, once
                    import torch
                    torch.set_num_threads(1)  # OpenMP's thread pool does not survive fork
                    result: tuple[str, Any] = ("ok", fn())
                except BaseException as e:  # noqa: BLE001 - every outcome goes to the parent
                    result = ("raised", e)
                try:
                    pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as e:  # noqa: BLE001 - an unpicklable exception
                    out.seek(0)
                    out.truncate()
                    pickle.dump(("raised", CompileError(f"{what}: {type(e).__name__}: {e}")), out)
                out.flush()
            except BaseException:  # noqa: BLE001
                code = 70
            finally:
                os._exit(code)
        status = _wait(pid, timeout if timeout is not None else float(os.environ.get("EFFC_IMPORT_TIMEOUT", 600)))
        if status is None:
            raise CompileError(f"{what} did not finish in {timeout or os.environ.get('EFFC_IMPORT_TIMEOUT', 600)} s "
                               f"and was stopped (EFFC_IMPORT_TIMEOUT sets the limit)")
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            raise CompileError(f"{what} crashed ({name}); this model hits a bug in a native library")
        if os.WEXITSTATUS(status) != 0:
            raise CompileError(f"{what} failed (exit status {os.WEXITSTATUS(status)})")
        out.seek(0)
        kind, value = pickle.load(out)  # our own child's output (see the module docstring)
    if kind == "raised":
        raise value
    return value


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit status, or None after killing it when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
