"""Loading an ONNX model safely: read, check, upgrade, infer shapes.

Everything a user can hand us is checked here, before torch-mlir sees it, and every problem
becomes a one-line ``ModelError``: a missing or non-ONNX file, external data that is missing or
points outside the model's own folder, a graph the ONNX checker rejects (a cycle, a dangling
input, an unknown opset domain), element types effc has no dtype for (torch-mlir aborts the
process on some of them), and absurd declared sizes.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

from effc.errors import UserError
from effc.ir import DType

# Opsets older than this are upgraded first; torch-mlir's ONNX lowering covers the newer forms.
UPGRADE_TO_OPSET = 17
MAX_DIM = 1 << 40          # a declared size above this is not a real model
MAX_ELEMENTS = 1 << 48
MAX_FILE_BYTES = 1 << 34   # 16 GiB


class ModelError(UserError):
    """The ONNX model cannot be loaded or is not valid; the message says which part and why."""


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise UserError("reading ONNX models needs the onnx package: pip install 'effc[onnx]'") from None
    return onnx


def onnx_dtype_table() -> dict[int, DType]:
    onnx = _onnx()
    T = onnx.TensorProto
    return {T.FLOAT: DType.F32, T.DOUBLE: DType.F64, T.FLOAT16: DType.F16, T.BFLOAT16: DType.BF16,
            T.INT64: DType.I64, T.INT32: DType.I32, T.INT16: DType.I16, T.INT8: DType.I8,
            T.UINT8: DType.U8, T.BOOL: DType.BOOL}


def dtype_of(elem_type: int) -> DType | None:
    return onnx_dtype_table().get(elem_type)


def type_name(elem_type: int) -> str:
    onnx = _onnx()
    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"element type {elem_type}"


def load_model(model: Any) -> tuple[Any, str]:
    """``model`` (a path, serialized bytes, or a ModelProto) loaded, checked, upgraded and
    shape-inferred; with a label for reports (the file's stem)."""
    onnx = _onnx()
    if isinstance(model, onnx.ModelProto):
        proto, label, base = model, _label(model.graph.name or "model"), None
        proto_copy = onnx.ModelProto()
        proto_copy.CopyFrom(proto)
        proto = proto_copy
        _check_external(proto, None)
    elif isinstance(model, (bytes, bytearray)):
        proto, label, base = _parse(bytes(model), "the given bytes"), "model", None
        _check_external(proto, None)
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        proto, label, base = _read_file(path), _label(os.path.splitext(os.path.basename(path))[0]), os.path.dirname(os.path.abspath(path))
        _check_external(proto, base)
        if _has_external(proto):
            from onnx.external_data_helper import load_external_data_for_model
            try:
                load_external_data_for_model(proto, base)
            except (OSError, ValueError) as e:
                raise ModelError(f"cannot read external data of {path}: {_line(e)}") from None
    else:
        raise UserError(f"expected an ONNX file path, bytes or onnx.ModelProto, got {type(model).__name__}")
    return prepare(proto), label


def prepare(proto: Any) -> Any:
    """Check, upgrade and shape-infer an in-memory model (external data already loaded)."""
    onnx = _onnx()
    if not proto.HasField("graph"):
        raise ModelError("the file holds no ONNX graph (truncated, or not an ONNX model)")
    _check_domains(proto)
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise ModelError(f"invalid ONNX model: {_line(e)}") from None
    _check_types_and_sizes(proto, unsigned=True)
    opset = default_opset(proto)
    if opset is not None and opset < UPGRADE_TO_OPSET:
        from onnx import version_converter
        try:
            proto = version_converter.convert_version(proto, UPGRADE_TO_OPSET)
        except Exception as e:  # the converter raises bare RuntimeErrors from C++
            raise ModelError(f"cannot upgrade the model from opset {opset} to {UPGRADE_TO_OPSET}: {_line(e)}") from None
    try:
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # InferenceError, or RuntimeError from C++
        raise ModelError(f"ONNX shape inference failed: {_line(e)}") from None
    from . import onnx_unsigned
    if onnx_unsigned.has_unsigned(proto):
        try:
            onnx_unsigned.widen(proto)
        except onnx_unsigned.Refused as e:
            raise ModelError(str(e)) from None
        try:
            proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
        except Exception as e:  # an op whose type constraints leave out int64 (QuantizeLinear...)
            raise ModelError(f"cannot compute this model's unsigned integers as int64: {_line(e)}") from None
    from .onnx_fold import rewrite
    proto = rewrite(proto)
    _check_types_and_sizes(proto)
    return proto


def default_opset(proto: Any) -> int | None:
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


def _read_file(path: str) -> Any:
    onnx = _onnx()
    if not os.path.exists(path):
        raise ModelError(f"no such file: {path}")
    if os.path.isdir(path):
        raise ModelError(f"{path} is a folder, not an ONNX file")
    size = os.path.getsize(path)
    if size == 0:
        raise ModelError(f"{path} is empty")
    if size > MAX_FILE_BYTES:
        raise ModelError(f"{path} is {size} bytes; models over 16 GiB must keep weights as external data")
    with open(path, "rb") as f:
        data = f.read()
    del onnx
    return _parse(data, path)


def _parse(data: bytes, what: str) -> Any:
    onnx = _onnx()
    from google.protobuf.message import DecodeError
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{what} is not an ONNX model (it does not parse: {_line(e)})") from None
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelError(f"{what} is not an ONNX model (truncated, or another kind of file)")
    return proto


def _has_external(proto: Any) -> bool:
    return any(t.data_location == 1 for t in _all_tensors(proto))


def _all_tensors(proto: Any) -> Iterable[Any]:
    from onnx.external_data_helper import _get_all_tensors
    return _get_all_tensors(proto)


def _check_external(proto: Any, base: str | None) -> None:
    """Every external-data reference must name an existing file inside ``base`` (the model's
    folder), and the byte range it asks for must lie within that file."""
    for t in _all_tensors(proto):
        if t.data_location != 1:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        name = t.name or "<unnamed>"
        if base is None:
            raise ModelError(f"tensor {name!r} keeps its data in an external file; load the model from its path")
        if not loc or os.path.isabs(loc) or "\x00" in loc:
            raise ModelError(f"tensor {name!r}: external data location {loc!r} must be a relative path")
        root = os.path.realpath(base)
        full = os.path.realpath(os.path.join(root, loc))
        if os.path.commonpath([root, full]) != root:
            raise ModelError(f"tensor {name!r}: external data {loc!r} lies outside the model's folder")
        if not os.path.isfile(full):
            raise ModelError(f"tensor {name!r}: external data file {loc!r} is missing")
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise ModelError(f"tensor {name!r}: bad external data offset or length") from None
        size = os.path.getsize(full)
        if offset < 0 or offset > size or (length is not None and (length < 0 or offset + length > size)):
            raise ModelError(f"tensor {name!r}: external data range lies beyond the end of {loc!r}")


def _check_domains(proto: Any) -> None:
    known = {"", "ai.onnx"}
    unknown = sorted({o.domain for o in proto.opset_import} - known)
    local = {f.domain for f in proto.functions}
    used = {n.domain for n in proto.graph.node}
    bad = sorted(d for d in unknown if d in used and d not in local)
    if bad:
        raise ModelError(f"unsupported opset domain {', '.join(map(repr, bad))}; effc reads the default ONNX domain")


def _check_types_and_sizes(proto: Any, unsigned: bool = False) -> None:
    """ModelError for element types effc cannot compute with (uint16/32/64 are accepted when
    ``unsigned``: ``onnx_unsigned`` rewrites them) and for absurd sizes."""
    table = dict(onnx_dtype_table())
    if unsigned:
        T = _onnx().TensorProto
        table.update({T.UINT16: DType.I64, T.UINT32: DType.I64, T.UINT64: DType.I64})
    bad: list[str] = []
    g = proto.graph
    infos = list(g.input) + list(g.output) + list(g.value_info)
    for vi in infos:
        tt = vi.type
        if tt.HasField("tensor_type"):
            et = tt.tensor_type.elem_type
            if et and et not in table:
                bad.append(f"{vi.name!r} ({type_name(et)})")
            if tt.tensor_type.HasField("shape"):
                _check_dims(vi.name, [d.dim_value for d in tt.tensor_type.shape.dim if d.HasField("dim_value")])
        elif tt.WhichOneof("value") is not None:
            bad.append(f"{vi.name!r} ({tt.WhichOneof('value').replace('_type', '')})")
    for t in g.initializer:
        if t.data_type not in table:
            bad.append(f"{t.name!r} ({type_name(t.data_type)})")
        _check_dims(t.name, list(t.dims))
    if bad:
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        raise ModelError(f"unsupported element types: {shown}; effc supports "
                         f"{', '.join(sorted(type_name(k) for k in table))}")


def _check_dims(name: str, dims: list[int]) -> None:
    total = 1
    for d in dims:
        if d < 0 or d > MAX_DIM:
            raise ModelError(f"tensor {name!r} declares an absurd size {d}")
        total *= max(d, 1)
    if total > MAX_ELEMENTS:
        raise ModelError(f"tensor {name!r} declares {total} elements, beyond any real model")


def _label(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "model"


def _line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")
