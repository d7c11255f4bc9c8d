"""Model inputs on the command line: symbolic sizes, random inputs, and checking given arrays.

Symbolic sizes in a ``TensorSpec`` are strings (``"batch"``, ``"2*seq"``). They come from a
model file or a manifest, so they are read with the IR's size parser, which never evaluates
text (see [Note: no eval] in ir/parser.py), rather than with ``sympy.sympify``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from effc.errors import InputError, UserError

if TYPE_CHECKING:
    import torch

    from effc.onnx_model import OnnxModel, TensorSpec


def _dim(d: int | str) -> object:
    if isinstance(d, int):
        return d
    from effc.ir.parser import ParseError, parse_size
    try:
        return parse_size(str(d))
    except ParseError:
        raise UserError(f"the model declares a size effc cannot read: {d!r}") from None


def size_names(specs: Sequence["TensorSpec"]) -> list[str]:
    """Names of the symbolic sizes in ``specs``, in order of first appearance."""
    names: dict[str, None] = {}
    for spec in specs:
        for d in spec.shape:
            e = _dim(d)
            if not isinstance(e, int):
                for s in sorted(e.free_symbols, key=str):  # type: ignore[attr-defined]
                    names[str(s)] = None
    return list(names)


def resolve_sizes(specs: Sequence["TensorSpec"], dims: Mapping[str, int]) -> dict[str, int]:
    """Every symbolic size: from ``dims`` (``--dim``), else 1. Unknown names are an error."""
    names = size_names(specs)
    unknown = [n for n in dims if n not in names]
    if unknown:
        known = ", ".join(names) if names else "none (all its sizes are fixed)"
        raise UserError(f"--dim {unknown[0]}: the model has no size of that name; its sizes: {known}")
    return {n: dims.get(n, 1) for n in names}


def shape_of(spec: "TensorSpec", sizes: Mapping[str, int]) -> tuple[int, ...]:
    out = []
    for d in spec.shape:
        e = _dim(d)
        if isinstance(e, int):
            out.append(e)
            continue
        missing = [str(s) for s in e.free_symbols if str(s) not in sizes]  # type: ignore[attr-defined]
        if missing:
            raise UserError(f"input {spec.name!r}: the inputs do not fix size {missing[0]}; "
                            f"pass --dim {missing[0]}=SIZE")
        out.append(int(e.subs({s: sizes[str(s)] for s in e.free_symbols})))  # type: ignore[attr-defined]
    return tuple(out)


def random_feeds(specs: Sequence["TensorSpec"], sizes: Mapping[str, int],
                 seed: int) -> dict[str, np.ndarray]:
    """Random inputs, drawn as ``OnnxModel.random_inputs`` draws them."""
    from effc.onnx_model import random_array

    rng = np.random.default_rng(seed)
    return {s.name: random_array(s.dtype, shape_of(s, sizes), rng, s.wire) for s in specs}


def check_feeds(specs: Sequence["TensorSpec"], arrays: Mapping[str, np.ndarray],
                dims: Mapping[str, int], source: str) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """``arrays`` (read from ``source``) checked against the model's inputs: names, dtypes,
    ranks and fixed sizes; symbolic sizes are read off the arrays and must agree with each
    other and with ``dims``. Returns the feeds in input order and the sizes."""
    from effc.onnx_model import check_names
    check_names(specs, arrays, source)
    resolve_sizes(specs, dims)  # rejects unknown --dim names
    sizes = dict(dims)
    for spec in specs:
        a = arrays[spec.name]
        want = numpy_dtype(spec)
        if a.dtype != want and not (spec.dtype.value == "bf16" and a.dtype == np.float32):
            raise InputError(f"{source}: input {spec.name!r} has dtype {a.dtype}, the model "
                             f"expects {want} ({spec.wire or spec.dtype.value})")
        if a.ndim != len(spec.shape):
            raise InputError(f"{source}: input {spec.name!r} has shape {list(a.shape)}, the model "
                             f"expects {_shape_text(spec)}")
        for d, n in zip(spec.shape, a.shape):
            e = _dim(d)
            if isinstance(e, int) or not e.is_Symbol:  # type: ignore[attr-defined]
                continue
            if sizes.setdefault(str(e), int(n)) != n:
                raise InputError(f"{source}: input {spec.name!r} has shape {list(a.shape)}, but "
                                 f"size {e} is {sizes[str(e)]}")
    for spec in specs:
        a = arrays[spec.name]
        if tuple(a.shape) != shape_of(spec, sizes):
            raise InputError(f"{source}: input {spec.name!r} has shape {list(a.shape)}, the model "
                             f"expects {_shape_text(spec)} = {list(shape_of(spec, sizes))}")
    return {s.name: arrays[s.name] for s in specs}, sizes


def numpy_dtype(spec: "TensorSpec") -> np.dtype:
    import torch
    if spec.wire:
        return np.dtype(spec.wire)    # an unsigned type effc computes in int64
    if spec.dtype.value == "bf16":
        return np.dtype(np.float32)   # numpy has no bfloat16: given as float32, rounded on entry
    return torch.empty((), dtype=spec.dtype.to_torch()).numpy().dtype


def to_tensors(specs: Sequence["TensorSpec"], feeds: Mapping[str, np.ndarray]) -> list["torch.Tensor"]:
    from effc.onnx_model import to_torch
    return [to_torch(feeds[spec.name]).to(spec.torch_dtype) for spec in specs]


def to_numpy(t: "torch.Tensor") -> np.ndarray:
    import torch
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def run_model(model: "OnnxModel", feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    outs = model(*to_tensors(model.inputs, feeds))
    return {spec.name: to_numpy(t) for spec, t in zip(model.outputs, outs)}


def _shape_text(spec: "TensorSpec") -> str:
    return "[" + ", ".join(str(d) for d in spec.shape) + "]"
