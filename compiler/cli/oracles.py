"""What effc's results are compared with: the imported graph on the reference backend (op by
op in torch, natively or widened to float64) and ONNX Runtime.

The imported graph (``OnnxModel.source_graph``) takes the model's inputs and gives its outputs
one to one, in order, as ``effc.onnx_model.from_graph`` also assumes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from effc.errors import UserError

if TYPE_CHECKING:
    import torch

    from effc.onnx_model import OnnxModel


def graph_runner(model: "OnnxModel", *, upcast: bool) -> Callable[[Sequence["torch.Tensor"]], list["torch.Tensor"]]:
    """The imported graph, run node by node with torch ops (in float64 when ``upcast``)."""
    import torch

    from effc.backends.reference import ReferenceProgram
    from effc.backends.signature import bind_inputs

    graph = model.source_graph
    if graph is None:
        raise UserError("this model has no imported graph to compare with")
    if len(graph.inputs) != len(model.inputs) or len(graph.outputs) != len(model.outputs):
        raise RuntimeError("the imported graph's inputs/outputs do not match the model's")
    program = ReferenceProgram(graph, upcast=upcast)

    def run(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return program.run(tensors, bind_inputs(graph, tensors))

    return run


class OrtSession:
    """An ONNX Runtime CPU session on the model file, fed and read by the model's names."""

    def __init__(self, path: Path, model: "OnnxModel", threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("comparing with onnxruntime needs the onnxruntime package "
                            "(pip install 'effc[onnx]'), or use --against reference") from None
        self.version = ort.__version__
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types, from C++
            raise UserError(f"onnxruntime cannot load this model: {_line(e)}") from None
        self.output_names = [o.name for o in model.outputs]
        known = {i.name for i in self.session.get_inputs()}
        self.input_names = [i.name for i in model.inputs if i.name in known]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return list(self.session.run(self.output_names, {n: feeds[n] for n in self.input_names}))
        except Exception as e:
            raise UserError(f"onnxruntime failed to run this model: {_line(e)}") from None

    def run_tensors(self, feeds: Mapping[str, np.ndarray]) -> list["torch.Tensor"]:
        from effc.onnx_model import to_torch
        return [to_torch(a) for a in self.run(feeds)]

    def callable(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        fixed = {n: feeds[n] for n in self.input_names}
        return lambda: self.session.run(self.output_names, fixed)


_CPP_FRAME = re.compile(r"\s*/onnxruntime_src/\S+ (?:\S+::)+\S+\(.*\)\s*")


def _line(e: BaseException) -> str:
    """ORT's message without the C++ source location and signature it carries."""
    text = _CPP_FRAME.sub(" ", " ".join(str(e).split())).strip()
    return text[:300] + ("..." if len(text) > 300 else "")
