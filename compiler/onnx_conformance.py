"""Running ONNX's own conformance cases through effc (or onnxruntime, for the anchor).

Two sets ship inside the onnx package: the backend *node* cases
(``onnx.backend.test.case.node.collect_testcases()``: one small model per case, with inputs
and expected outputs) and the *light* models (``onnx/backend/test/data/light``: real network
topologies with light weights and one expected output, fed the deterministic input ONNX's own
runner uses). A case passes when every output has the expected dtype and shape and matches
within the case's ``rtol``/``atol``, as ONNX's runner checks.

``run_isolated`` runs one case in a forked child with a time limit, so that a hang or an abort
inside a native library costs that case, not the whole run.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

STATUSES = ("pass", "mismatch", "unsupported", "error", "crash", "timeout")


@dataclass
class CaseResult:
    name: str
    status: str           # one of STATUSES
    detail: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Case:
    name: str
    model: Any                                    # onnx.ModelProto
    data_sets: list[tuple[list[np.ndarray], list[np.ndarray]]]
    rtol: float
    atol: float


def node_cases() -> list[Case]:
    from onnx.backend.test.case.node import collect_testcases
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    out = []
    for c in cases:
        sets = [([_array(x) for x in ins], [_array(y) for y in outs]) for ins, outs in c.data_sets]
        out.append(Case(c.name, c.model, sets, float(c.rtol), float(c.atol)))
    return out


def light_models() -> list[Case]:
    import onnx
    from onnx import numpy_helper
    folder = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "light_*.onnx"))):
        model = onnx.load(path)
        inits = {t.name for t in model.graph.initializer}
        inputs = [_dummy_input(vi) for vi in model.graph.input if vi.name not in inits]
        prefix = os.path.splitext(path)[0]
        expected = []
        for i in range(len(model.graph.output)):
            t = onnx.TensorProto()
            with open(f"{prefix}_output_{i}.pb", "rb") as f:
                t.ParseFromString(f.read())
            expected.append(numpy_helper.to_array(t))
        name = os.path.basename(prefix)
        out.append(Case(name, model, [(inputs, expected)], 1e-3, 1e-7))
    return out


def _dummy_input(vi: Any) -> np.ndarray:
    """The input ONNX's runner feeds a light model: arange(n) / n in float32."""
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def _array(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, np.generic):  # a numpy scalar stands for a rank-0 tensor
        return np.asarray(x)
    from onnx import numpy_helper
    try:
        return numpy_helper.to_array(x)
    except Exception:  # noqa: BLE001 - sequences, optionals: not tensors
        return x


Runner = Callable[[Any], Callable[[Sequence[np.ndarray]], list[np.ndarray]]]


def effc_runner(model: Any) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    """Compile ``model`` with effc; the result runs a list of inputs in model order."""
    from effc.onnx_model import compile_onnx, to_numpy, to_torch
    from effc.options import Options
    compiled = compile_onnx(model, Options())

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [to_numpy(t) for t in compiled(*[to_torch(x) for x in inputs])]
    return run


def ort_runner(model: Any) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return sess.run(None, dict(zip(names, inputs)))
    return run


def compare(expected: Sequence[Any], actual: Sequence[Any], rtol: float, atol: float) -> str | None:
    """None when ``actual`` matches ``expected`` as ONNX's runner checks; else why not."""
    if len(expected) != len(actual):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for i, (e, a) in enumerate(zip(expected, actual)):
        if not isinstance(e, np.ndarray):
            return f"output {i} is a {type(e).__name__}, not a tensor"
        a = np.asarray(a)
        if e.dtype != a.dtype:
            return f"output {i}: dtype {a.dtype}, expected {e.dtype}"
        if e.shape != a.shape:
            return f"output {i}: shape {a.shape}, expected {e.shape}"
        if e.dtype.name == "bfloat16":
            e, a = e.astype(np.float32), a.astype(np.float32)
        elif e.dtype == object or e.dtype.kind in "USV":
            if not np.array_equal(e, a):
                return f"output {i}: values differ"
            continue
        try:
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
        except AssertionError:
            with np.errstate(all="ignore"):
                diff = np.nanmax(np.abs(a.astype(np.float64) - e.astype(np.float64))) if a.size else 0.0
            return f"output {i}: max abs error {diff:.3g} beyond rtol={rtol:g} atol={atol:g}"
    return None


def run_case(case: Case, runner: Runner) -> CaseResult:
    from effc.errors import UserError
    t0 = time.perf_counter()
    if not all(isinstance(x, np.ndarray) for ins, outs in case.data_sets for x in list(ins) + list(outs)):
        return CaseResult(case.name, "unsupported", "inputs or outputs are not tensors", 0.0)
    try:
        fn = runner(case.model)
    except UserError as e:
        return CaseResult(case.name, "unsupported", _first(e), time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - a conformance run records every failure
        return CaseResult(case.name, "error", f"compile: {type(e).__name__}: {_first(e)}", time.perf_counter() - t0)
    for ins, outs in case.data_sets:
        try:
            got = fn(ins)
        except Exception as e:  # noqa: BLE001
            return CaseResult(case.name, "error", f"run: {type(e).__name__}: {_first(e)}", time.perf_counter() - t0)
        why = compare(outs, got, case.rtol, case.atol)
        if why:
            return CaseResult(case.name, "mismatch", why, time.perf_counter() - t0)
    return CaseResult(case.name, "pass", "", time.perf_counter() - t0)


def run_isolated(case: Case, runner: Runner, timeout: float = 60.0) -> CaseResult:
    """``run_case`` in a forked child: a crash or hang is recorded, not inherited."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            res = run_case(case, runner).to_json()
        except BaseException as e:  # noqa: BLE001
            res = CaseResult(case.name, "error", f"{type(e).__name__}: {_first(e)}").to_json()
        data = json.dumps(res).encode()
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(w)
    t0 = time.perf_counter()
    chunks: list[bytes] = []
    deadline = t0 + timeout
    import select
    with os.fdopen(r, "rb", buffering=0) as f:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return CaseResult(case.name, "timeout", f"over {timeout:g} s", timeout)
            ready, _, _ = select.select([f], [], [], left)
            if ready:
                chunk = f.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if chunks:
        return CaseResult(**json.loads(b"".join(chunks)))
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    return CaseResult(case.name, "crash", f"child died ({'signal ' + str(sig) if sig else 'exit ' + str(os.WEXITSTATUS(status))})",
                      time.perf_counter() - t0)


def _first(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300]
