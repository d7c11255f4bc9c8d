"""``effc.compile``: compile a function or module for inference from example inputs."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch

from effc.dynamo import EffcBackend
from effc.errors import UserError
from effc.report import Explain
from effc.options import Options


class CompiledModel:
    """The result of ``effc.compile``: call it like the original; ``.explain()`` says what
    effc did. Calls run without autograd (effc compiles for inference)."""

    def __init__(self, fn: Callable, backend: EffcBackend, original: Callable) -> None:
        self._fn = fn
        self._backend = backend
        self.original = original

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self._fn(*args, **kwargs)

    def explain(self) -> Explain:
        return self._backend.explain()

    @property
    def options(self) -> Options:
        return self._backend.options


def compile(fn: Callable | torch.nn.Module, example_inputs: Sequence[Any] = (), *,
            target: str = "auto", dynamic: bool | None = None, **options: Any) -> CompiledModel:
    """Compile ``fn`` (a module or function of tensors) with effc; or an ONNX model (a file
    path, serialized bytes or ``onnx.ModelProto``), which gives an ``effc.onnx_model.OnnxModel``.

    ``example_inputs`` are used once, to trace and compile; ``dynamic=True`` makes every size
    symbolic up front (otherwise sizes become symbolic after the first change, as in
    torch.compile). ``options`` are effc options, e.g. ``disable_passes=["fold_batchnorm"]``.
    """
    if isinstance(fn, (str, bytes, os.PathLike)) or hasattr(fn, "SerializeToString"):
        if example_inputs:
            raise UserError("an ONNX model is compiled from its declared input types; "
                            "pass no example inputs")
        from effc.onnx_model import compile_onnx
        return compile_onnx(fn, Options.from_mapping({"target": target, **options}))
    if not callable(fn):
        raise UserError(f"effc.compile needs a module or function, got {type(fn).__name__}")
    opts = Options.from_mapping({"target": target, **options})
    backend = EffcBackend(opts)
    compiled = torch.compile(fn, backend=backend, dynamic=dynamic)
    model = CompiledModel(compiled, backend, fn)
    if example_inputs:
        try:
            model(*example_inputs)
        except torch._dynamo.exc.BackendCompilerFailed as e:
            # torch.compile wraps what the backend raised; a UserError is for the user as is
            if isinstance(e.inner_exception, UserError):
                raise e.inner_exception.with_traceback(None) from None
            raise
    return model
