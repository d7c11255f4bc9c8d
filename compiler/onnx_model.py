"""A compiled ONNX model: named inputs and outputs around a compiled effc graph.

    model = effc.compile("model.onnx")          # or an onnx.ModelProto
    outs = model.run({"x": np.ones((2, 8), np.float32)})   # {"y": ndarray, ...}
    outs = model(torch.ones(2, 8))              # positional torch tensors -> tuple of tensors

``compile_onnx`` loads and checks the file (``frontends/onnx_load.py``), imports it through
torch-mlir into effc IR (``frontends/onnx.py``), then runs the same pass pipeline and backend
selection as the torch.compile path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import sympy
import torch

from effc.errors import InputError
from effc.ir import DType, Graph
from effc.options import Options
from effc.report import Explain, GraphReport


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: its ONNX name, dtype, and shape (ints and symbol names).
    ``wire`` is the unsigned type the model declares ("uint16", "uint32", "uint64") where effc
    computes in ``dtype`` int64 (``frontends/onnx_unsigned.py``); callers pass and get ``wire``."""
    name: str
    dtype: DType
    shape: tuple[int | str, ...]
    wire: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {"name": self.name, "dtype": self.dtype.value, "shape": list(self.shape)}
        return d | ({"wire": self.wire} if self.wire else {})

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "TensorSpec":
        return TensorSpec(str(d["name"]), DType(d["dtype"]), tuple(d["shape"]), wire_type(d.get("wire")))

    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype of the tensors callers pass or get."""
        return getattr(torch, self.wire) if self.wire else self.dtype.to_torch()

    def inward(self, t: torch.Tensor) -> torch.Tensor:
        """A caller's tensor as effc computes with it (unsigned values into int64)."""
        if not self.wire or t.dtype is not self.torch_dtype:
            return t
        return t.view(torch.int64) if self.wire == "uint64" else t.to(torch.int64)

    def outward(self, t: torch.Tensor) -> torch.Tensor:
        """A computed tensor as the caller gets it (int64 back to the declared unsigned type)."""
        if not self.wire:
            return t
        return t.view(torch.uint64) if self.wire == "uint64" else t.to(self.torch_dtype)


    def concrete_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with every symbolic size taken from ``sizes``; an expression such as
        ``2*n`` is evaluated. A symbol missing from ``sizes`` is an InputError."""
        out = []
        for d in self.shape:
            if isinstance(d, int):
                out.append(d)
                continue
            expr = _size(d)
            env = {s: sizes[str(s)] for s in expr.free_symbols if str(s) in sizes}
            missing = sorted(str(s) for s in expr.free_symbols if str(s) not in sizes)
            if missing:
                raise InputError(f"{self.name}: size {', '.join(missing)} is not given")
            out.append(int(expr.subs(env)))
        return tuple(out)


def wire_type(w: Any) -> str | None:
    """A spec's wire type read from JSON: None or one of the unsigned types."""
    if w is None:
        return None
    if w not in ("uint16", "uint32", "uint64"):
        raise ValueError(f"bad wire type {w!r}")
    return str(w)


class OnnxModel:
    """A compiled ONNX model. ``inputs``/``outputs`` keep the model's own names (they are
    never put into generated code; the IR uses sanitised names)."""

    def __init__(self, program: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 options: Options, report: GraphReport, source_graph: Graph | None = None) -> None:
        self.program = program          # a CompiledGraph (effc.program)
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.options = options
        self.report = report
        self.source_graph = source_graph  # the IR as imported, before passes

    @property
    def graph(self) -> Graph:
        """The final IR graph."""
        return self.program.graph

    def explain(self) -> Explain:
        return Explain([self.report])

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(tensors) != len(self.inputs):
            raise InputError(f"the model takes {len(self.inputs)} inputs "
                             f"({', '.join(i.name for i in self.inputs)}), got {len(tensors)}")
        with torch.no_grad():
            outs = self.program(*[spec.inward(t) for spec, t in zip(self.inputs, tensors)])
        return tuple(spec.outward(t) for spec, t in zip(self.outputs, outs))

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run on inputs given by name (numpy arrays or tensors); outputs by name as numpy."""
        check_names(self.inputs, feeds)
        tensors = [_as_tensor(feeds[i.name], i) for i in self.inputs]
        outs = self(*tensors)
        return {o.name: to_numpy(t) for o, t in zip(self.outputs, outs)}

    def random_inputs(self, sizes: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs of the right dtypes and shapes; symbolic sizes come from ``sizes``
        (default 1 for any not given)."""
        sizes = dict(sizes or {})
        for spec in self.inputs:
            for d in spec.shape:
                if isinstance(d, str):
                    for s in _size(d).free_symbols:
                        sizes.setdefault(str(s), 1)
        rng = np.random.default_rng(seed)
        return {i.name: random_array(i.dtype, i.concrete_shape(sizes), rng, i.wire) for i in self.inputs}


def _size(d: Any) -> sympy.Expr:
    """A size expression from its text, parsed without evaluating it (``N`` or ``E`` are size
    names here, not sympy's functions and constants)."""
    from effc.ir.parser import parse_size
    return sympy.sympify(parse_size(d)) if isinstance(d, str) else sympy.sympify(d)


def check_names(specs: Sequence[TensorSpec], given: Mapping[str, Any], source: str = "") -> None:
    """InputError unless ``given`` names exactly the inputs ``specs`` describe."""
    names = [s.name for s in specs]
    where = f"{source}: " if source else ""
    unknown = [n for n in given if n not in names]
    if unknown:
        raise InputError(f"{where}unknown input {', '.join(map(repr, unknown))}; "
                         f"the model's inputs are {', '.join(map(repr, names))}")
    missing = [n for n in names if n not in given]
    if missing:
        raise InputError(f"{where}missing input {', '.join(map(repr, missing))}")


def random_array(dtype: DType, shape: tuple[int, ...], rng: np.random.Generator, wire: str | None = None) -> np.ndarray:
    if wire:
        return rng.integers(0, 4, size=shape).astype(wire)
    t = dtype.to_torch()
    if dtype is DType.BOOL:
        return rng.random(shape) < 0.5
    if dtype.is_float:
        a = rng.standard_normal(shape, dtype=np.float64)
        return torch.from_numpy(a).to(t).numpy() if t is not torch.bfloat16 else a.astype(np.float32)
    return rng.integers(0, 4, size=shape).astype(torch.empty((), dtype=t).numpy().dtype)


def _as_tensor(x: Any, spec: TensorSpec) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        a = np.asarray(x)
    except Exception as e:  # an object numpy cannot turn into an array
        raise InputError(f"input {spec.name!r}: cannot make an array of {type(x).__name__}: {e}") from None
    if a.dtype == object or a.dtype.kind in "USV":
        raise InputError(f"input {spec.name!r}: expected {spec.wire or spec.dtype.value} data, got {a.dtype}")
    return to_torch(a)


def to_torch(a: np.ndarray) -> torch.Tensor:
    """A numpy array as a tensor (bfloat16 arrays, which numpy only has through ml_dtypes,
    included); the tensor owns a copy only where numpy's buffer cannot be shared."""
    a = np.asarray(a)
    if not a.flags.c_contiguous:
        a = a.copy()  # (np.ascontiguousarray would also make a rank-0 array rank 1)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.uint16).copy()).view(torch.bfloat16)
    if not a.flags.writeable:
        a = a.copy()
    return torch.from_numpy(a)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype is torch.bfloat16:
        import ml_dtypes
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def compile_onnx(model: str | os.PathLike | bytes | Any, options: Options) -> OnnxModel:
    """Load, check and compile an ONNX model (a path, serialized bytes or a ModelProto)."""
    from effc.frontends.onnx import UnsupportedOpsError, io_specs
    from effc.frontends.onnx_load import load_model

    proto, label = load_model(model)
    try:
        return _compile_proto(proto, options, label)
    except UnsupportedOpsError as e:
        positions = e.value_inputs(io_specs(proto)[0])
        if not positions:
            raise
        return ValueSpecializedModel(proto, positions, options, label, str(e))


def _compile_proto(proto: Any, options: Options, label: str) -> OnnxModel:
    from effc.frontends.onnx import import_onnx
    from effc.program import compile_imported

    imported, inputs, outputs = import_onnx(proto)
    compiled = compile_imported(imported, options, label)
    return OnnxModel(compiled, inputs, outputs, options, compiled.report, imported.graph)


class ValueSpecializedModel(OnnxModel):
    """A model whose shapes or op arguments come from the *values* of some inputs (an
    ``axes``, ``shape`` or ``pads`` input rather than an initializer). It is compiled on each
    call for the values of those inputs, which become constants, and kept per value (like
    torch.compile's guards on a value that shapes the graph), for up to ``MAX_VARIANTS``
    distinct values."""

    MAX_VARIANTS = 16

    def __init__(self, proto: Any, positions: Sequence[int], options: Options, label: str, why: str) -> None:
        from effc.frontends.onnx import io_specs
        _, inputs, out_vis = io_specs(proto)
        self.proto = proto
        self.positions = tuple(positions)
        self.why = why
        self.label = label
        self.variants: dict[tuple, OnnxModel] = {}
        self._last: OnnxModel | None = None
        from effc.frontends.onnx_unsigned import wire_types
        wires = wire_types(proto)
        outputs = [TensorSpec(vi.name, _declared_dtype(vi), _declared_shape(vi, k), wires.get(vi.name))
                   for k, vi in enumerate(out_vis)]
        super().__init__(None, inputs, outputs, options, None, None)  # type: ignore[arg-type]

    @property
    def value_inputs(self) -> list[str]:
        return [self.inputs[i].name for i in self.positions]

    def _latest(self) -> OnnxModel:
        if self._last is None:
            from effc.errors import UserError
            raise UserError(f"this model is compiled per value of its inputs "
                            f"{', '.join(map(repr, self.value_inputs))} (they set shapes or op "
                            f"arguments); run it once to compile a variant")
        return self._last

    @property
    def graph(self) -> Graph:  # type: ignore[override]
        return self._latest().graph

    @property
    def report(self) -> GraphReport:  # type: ignore[override]
        return self._latest().report

    @report.setter
    def report(self, value: Any) -> None:
        pass

    @property
    def source_graph(self) -> Graph | None:  # type: ignore[override]
        return self._latest().source_graph

    @source_graph.setter
    def source_graph(self, value: Any) -> None:
        pass

    def explain(self) -> Explain:
        return Explain([m.report for m in self.variants.values()])

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(tensors) != len(self.inputs):
            raise InputError(f"the model takes {len(self.inputs)} inputs "
                             f"({', '.join(i.name for i in self.inputs)}), got {len(tensors)}")
        values = {i: tensors[i] for i in self.positions}
        for i, t in values.items():
            spec = self.inputs[i]
            if not isinstance(t, torch.Tensor) or t.dtype not in (spec.dtype.to_torch(), spec.torch_dtype) or t.dim() != len(spec.shape):
                raise InputError(f"input {spec.name!r}: expected {spec.wire or spec.dtype.value} with "
                                 f"{len(spec.shape)} dimensions")
        values = {i: self.inputs[i].inward(t) for i, t in values.items()}
        key = tuple((i, tuple(t.shape), t.detach().cpu().contiguous().numpy().tobytes()) for i, t in values.items())
        variant = self.variants.get(key)
        if variant is None:
            if len(self.variants) >= self.MAX_VARIANTS:
                self.variants.pop(next(iter(self.variants)))
            variant = _compile_proto(_bake(self.proto, {self.inputs[i].name: t for i, t in values.items()}),
                                     self.options, f"{self.label}-v{len(self.variants)}")
            self.variants[key] = variant
        self._last = variant
        return variant(*[t for i, t in enumerate(tensors) if i not in values])


def _bake(proto: Any, values: Mapping[str, torch.Tensor]) -> Any:
    """``proto`` with the inputs in ``values`` turned into initializers holding them."""
    import onnx
    from onnx import numpy_helper

    from effc.frontends.onnx_load import prepare
    baked = onnx.ModelProto()
    baked.CopyFrom(proto)
    kept = [vi for vi in baked.graph.input if vi.name not in values]
    del baked.graph.input[:]
    baked.graph.input.extend(kept)
    for name, t in values.items():
        baked.graph.initializer.append(numpy_helper.from_array(to_numpy(t), name))
    return prepare(baked)


def _declared_dtype(vi: Any) -> DType:
    from effc.frontends.onnx_load import dtype_of
    return dtype_of(vi.type.tensor_type.elem_type) or DType.F32


def _declared_shape(vi: Any, k: int) -> tuple[int | str, ...]:
    dims = vi.type.tensor_type.shape.dim if vi.type.tensor_type.HasField("shape") else []
    return tuple(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or f"out{k}_{a}")
                 for a, d in enumerate(dims))


def from_graph(graph: Graph, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
               options: Options, label: str = "model") -> OnnxModel:
    """A runnable model from an IR graph (for instance one read back from an artifact folder)
    whose inputs and outputs correspond one to one with ``inputs`` and ``outputs``."""
    from effc.frontends.fx import Imported, OutSpec
    from effc.program import compile_imported

    imported = Imported(graph, list(range(len(graph.inputs))),
                        [OutSpec("ir", i) for i in range(len(graph.outputs))])
    compiled = compile_imported(imported, options, label)
    return OnnxModel(compiled, inputs, outputs, options, compiled.report, graph)
