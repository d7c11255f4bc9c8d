"""Building ONNX ops from aten calls: the interface the handlers of ``onnx_ops.py`` use.

A handler gets its operands (IR values, or python values for non-tensors), its ONNX attributes
as python values, and torch-mlir's declared result types; it returns IR values built by calling
aten ops, each typed by torch's meta kernel and converted through the shared op table (or
becoming an extern), exactly as the aten ops torch-mlir emits are.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import torch

from effc.ir import DType, Value

from .lowering import Unsupported


class AtenCalls:
    """aten ops called on IR values, typed by torch's meta kernels."""

    def __init__(self, importer: Any) -> None:
        self.importer = importer

    def __call__(self, short: str, *args: Any, **kwargs: Any) -> Any:
        from .torch_dialect import _overload
        overload = _overload(short)
        schema = overload._schema
        bound: dict[str, Any] = {}
        positional = list(args)
        for arg in schema.arguments:
            if positional and not arg.kwarg_only:
                bound[arg.name] = positional.pop(0)
            elif arg.name in kwargs:
                bound[arg.name] = kwargs.pop(arg.name)
            elif arg.has_default_value():
                bound[arg.name] = arg.default_value
            else:
                raise Unsupported(f"{short}: no value for argument {arg.name}")
        if positional or kwargs:
            raise Unsupported(f"{short}: too many arguments")
        outs = _meta_outputs(overload, schema, bound)
        items = self.importer.apply(short, bound, outs, [True] * len(outs))
        return items[0] if len(items) == 1 else items

    def constant(self, t: torch.Tensor) -> Value:
        v = self.importer.b.constant(t, "onnx_op")
        self.importer.const[v] = t
        return v

    def value(self, v: Any, what: str) -> torch.Tensor:
        """The contents of ``v``, which must be known now (an initializer or constant)."""
        return self.values([v], what)[0]

    def values(self, vs: Sequence[Any], what: str) -> list[torch.Tensor]:
        """The contents of each of ``vs``; when some are only known at run time, one failure
        naming the inputs all of them come from (so a compile per value bakes them together)."""
        from .torch_dialect import DataDependent
        unknown = [v for v in vs if not (isinstance(v, Value) and v in self.importer.const)]
        if unknown:
            sources = sorted({i for v in unknown if isinstance(v, Value) for i in self.importer.input_sources(v)})
            raise DataDependent(f"{what} is read from tensor data known only at run time", tuple(sources))
        return [self.importer.const[v] for v in vs]


def _meta_outputs(overload: Any, schema: Any, bound: Mapping[str, Any]) -> list[tuple[DType, list[int | None]]]:
    def meta(x: Any) -> Any:
        if isinstance(x, Value):
            if not x.type.is_static:
                raise Unsupported("needs static sizes")
            return torch.empty(x.type.shape, dtype=x.type.dtype.to_torch(), device="meta")
        if isinstance(x, list):
            return [meta(e) for e in x]
        return x
    args, kwargs = [], {}
    for arg in schema.arguments:
        (kwargs.__setitem__(arg.name, meta(bound[arg.name])) if arg.kwarg_only
         else args.append(meta(bound[arg.name])))
    res = overload(*args, **kwargs)
    items = [res] if isinstance(res, torch.Tensor) else list(res)
    return [(DType.from_torch(t.dtype), list(t.shape)) for t in items]


_ATTR_INT = re.compile(r"^(-?\d+) : [su]?i\d+$")
_ATTR_FLOAT = re.compile(r"^(\S+) : (f\d+|bf16)$")


def onnx_attributes(attrs: Any) -> dict[str, Any]:
    """A ``torch.operator``'s ``torch.onnx.*`` attributes as python values."""
    out: dict[str, Any] = {}
    for i in range(len(attrs)):
        named = attrs[i]
        if named.name.startswith("torch.onnx."):
            out[named.name[len("torch.onnx."):]] = _attr_value(str(named.attr))
    return out


def _attr_value(text: str) -> Any:
    if text.startswith('"'):
        return text[1:-1]
    if text.startswith("["):
        inner = text[1:-1].strip()
        return [_attr_value(p.strip()) for p in inner.split(",")] if inner else []
    m = _ATTR_INT.match(text)
    if m:
        return int(m.group(1))
    m = _ATTR_FLOAT.match(text)
    if m:
        return float(m.group(1))
    return text


Outs = Sequence[tuple[DType, list[int | None]]]
Handler = Callable[[AtenCalls, list[Any], dict[str, Any], Outs], tuple]

def tensor(x: Any, what: str) -> Value:
    if not isinstance(x, Value):
        raise Unsupported(f"{what} must be a tensor")
    return x


