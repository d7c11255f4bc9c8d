"""Unsigned 16-, 32- and 64-bit integers, which neither effc's IR nor torch computes with.

The model is rewritten to compute them as int64, exactly:

- uint16 and uint32 values are held as their (non-negative) value in int64. Wherever an op
  could leave the range (``Add``, ``Sub``, ``Mul``, ``BitwiseNot``, ``Cast``...), a
  ``Mod(y, 2**bits)`` follows it (the floored remainder, never negative), which gives the
  wrapped-around result unsigned arithmetic defines. (Not ``BitwiseAnd``: it needs opset 18.) Every other op then sees the same values the unsigned one would.
- uint64 values are held as int64 with the same bits (two's complement). Ops whose result does
  not depend on the sign (addition, multiplication, bitwise ops, equality, data movement) are
  exact as they are; order comparisons, ``Max`` and ``Min`` flip the sign bit of their operands
  first (adding ``-2**63``, which wraps to the same bits as an exclusive or). Any other op that reads a uint64 value (division, a cast to float...) is refused
  with a one-line error rather than computed wrongly.

The element type each graph input and output declares is kept in the model's metadata under
``WIRE_KEY``; ``OnnxModel`` converts arrays at the boundary, so users pass and get uint arrays.

    Add(x: uint32, y: uint32) -> z: uint32
  ->
    Add(x: int64, y: int64) -> z__wide;  Mod(z__wide, 4294967296) -> z: int64
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

WIRE_KEY = "effc.wire_types"
_BITS = {4: 16, 12: 32, 13: 64}            # TensorProto.UINT16, UINT32, UINT64
_INT64, _BOOL = 7, 9
_SIGNED_SAME_WIDTH = {4: 5, 12: 6, 13: 7}  # for BitCast: UINT16 -> INT16 ...

# Ops whose results stay in the range of their (in-range) inputs: no mask after them.
_IN_RANGE = {"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split",
             "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile", "Where", "Max", "Min",
             "Div", "Mod", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "ReduceMax", "ReduceMin", "Abs",
             "TopK", "Compress", "ScatterElements", "ScatterND", "DepthToSpace", "SpaceToDepth",
             "BitShift", "Constant", "ConstantOfShape"}
_BITSHIFT_MASKED = "LEFT"
# Ops whose result on uint64 held as int64 bits does not depend on the sign.
_SIGN_FREE = {"Add", "Sub", "Mul", "Neg", "Sum", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot",
              "Equal", "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Concat",
              "Split", "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile", "Where", "Shape",
              "Size", "ReduceSum", "ReduceProd", "ScatterElements", "ScatterND"}
_FLOATS = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_ORDERED = {"Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Max", "Min"}


class Refused(Exception):
    """The model uses unsigned values in a way effc cannot compute exactly."""


def has_unsigned(proto: Any) -> bool:
    return bool(_unsigned_values(proto)) or any(_unsigned_attr(n) for n in proto.graph.node)


def wire_types(proto: Any) -> dict[str, str]:
    """Graph input/output name -> the unsigned element type the model declares for it."""
    for p in proto.metadata_props:
        if p.key == WIRE_KEY:
            return dict(json.loads(p.value))
    return {}


def widen(proto: Any) -> None:
    """Rewrite ``proto`` in place to compute its uint16/32/64 values in int64 (see module doc)."""
    from onnx import helper, numpy_helper
    g = proto.graph
    for n in g.node:
        for a in n.attribute:
            if a.type in (5, 10) and _subgraph_has_unsigned(a):
                raise Refused(f"node {n.name!r} ({n.op_type}) has a subgraph with unsigned integer values")
    types = _unsigned_values(proto)
    from .onnx_fold import elem_types
    elem = elem_types(proto)
    wires = wire_types(proto)
    for vi in list(g.input) + list(g.output):
        if vi.name in types:
            wires[vi.name] = {16: "uint16", 32: "uint32", 64: "uint64"}[_BITS[types[vi.name]]]
    masks: dict[int, str] = {}

    def mask(bits: int) -> str:
        if bits not in masks:
            name = f"effc_uint{bits}_modulus"
            g.initializer.append(numpy_helper.from_array(np.array(1 << bits, dtype=np.int64), name))
            masks[bits] = name
        return masks[bits]
    sign = "effc_uint64_sign"
    nodes: list[Any] = []
    for n in g.node:
        in_u64 = [types.get(i) == 13 for i in n.input]
        if any(in_u64) and n.op_type not in _SIGN_FREE | _ORDERED and not _sign_free_cast(n, types) and not (
                n.op_type == "BitShift" and not _in_range(n)):  # a left shift keeps the low bits
            raise Refused(f"{n.op_type} on uint64 values (node {n.name!r}): effc computes uint64 in "
                          f"int64, where this op's result would depend on the sign")
        if any(in_u64) and n.op_type in _ORDERED:
            if sign not in {t.name for t in g.initializer}:
                g.initializer.append(numpy_helper.from_array(np.array(np.iinfo(np.int64).min, dtype=np.int64), sign))
            flipped = []
            for i, u in zip(n.input, in_u64):
                if u:
                    nodes.append(helper.make_node("Add", [i, sign], [f"{n.name}__flip_{i}"]))
                    flipped.append(f"{n.name}__flip_{i}")
                else:
                    flipped.append(i)
            del n.input[:]
            n.input.extend(flipped)
            if n.op_type in ("Max", "Min"):
                out = n.output[0]
                n.output[0] = f"{n.name}__flipped"
                nodes += [n, helper.make_node("Add", [n.output[0], sign], [out])]
                continue
        if n.op_type in ("Cast", "CastLike") and _cast_target(n, types) == 13 and elem.get(n.input[0]) in _FLOATS:
            raise Refused(f"{n.op_type} from floating point to uint64 (node {n.name!r}): effc computes "
                          f"uint64 in int64, which cannot hold values from 2**63")
        if n.op_type == "BitCast":
            nodes += _bit_cast(n, types, mask)
            continue
        _widen_attributes(n)
        wrap = [(k, _BITS[types[o]]) for k, o in enumerate(n.output)
                if types.get(o) in (4, 12) and not _in_range(n)]
        for k, bits in wrap:
            out = n.output[k]
            n.output[k] = f"{out}__wide"
            nodes.append(helper.make_node("Mod", [n.output[k], mask(bits)], [out]))
        nodes.insert(len(nodes) - len(wrap), n)
    del g.node[:]
    g.node.extend(nodes)
    for t in g.initializer:
        if t.data_type in _BITS:
            t.CopyFrom(numpy_helper.from_array(_as_int64(numpy_helper.to_array(t)), t.name))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type in _BITS:
            vi.type.tensor_type.elem_type = _INT64
    kept = [p for p in proto.metadata_props if p.key != WIRE_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    if wires:
        proto.metadata_props.add(key=WIRE_KEY, value=json.dumps(wires, sort_keys=True))


def _in_range(n: Any) -> bool:
    if n.op_type == "BitShift":
        return not any(a.name == "direction" and a.s.decode() == _BITSHIFT_MASKED for a in n.attribute)
    return n.op_type in _IN_RANGE


def _sign_free_cast(n: Any, types: dict[str, int]) -> bool:
    """A Cast of a uint64 value to an integer type: the low bits are kept either way."""
    if n.op_type not in ("Cast", "CastLike"):
        return False
    to = _cast_target(n, types)
    return to in (_INT64, 13, 12, 4, 6, 5, 3, 2, _BOOL)  # int64/32/16/8, uint64/32/16/8, bool


def _cast_target(n: Any, types: dict[str, int]) -> int | None:
    if n.op_type == "Cast":
        return next((a.i for a in n.attribute if a.name == "to"), None)
    return types.get(n.output[0])


def _bit_cast(n: Any, types: dict[str, int], mask: Any) -> list[Any]:
    """BitCast to or from an unsigned type, through the signed type of the same width."""
    from onnx import helper
    to = next(a.i for a in n.attribute if a.name == "to")
    src = types.get(n.input[0])
    x, out, nodes = n.input[0], n.output[0], []
    if src in (4, 12):  # held as a non-negative int64: back to its own width first
        nodes.append(helper.make_node("Cast", [x], [f"{out}__narrow"], to=_SIGNED_SAME_WIDTH[src]))
        x = f"{out}__narrow"
    if to in (4, 12):
        nodes += [helper.make_node("BitCast", [x], [f"{out}__signed"], to=_SIGNED_SAME_WIDTH[to]),
                  helper.make_node("Cast", [f"{out}__signed"], [f"{out}__wide"], to=_INT64),
                  helper.make_node("Mod", [f"{out}__wide", mask(_BITS[to])], [out])]
    else:
        nodes.append(helper.make_node("BitCast", [x], [out], to=_INT64 if to == 13 else to))
    return nodes


def _widen_attributes(n: Any) -> None:
    from onnx import numpy_helper
    for a in n.attribute:
        if a.name in ("to", "dtype") and a.type == 2 and a.i in _BITS:  # INT
            a.i = _INT64
        elif a.type == 4 and a.t.data_type in _BITS:  # TENSOR (Constant, ConstantOfShape)
            a.t.CopyFrom(numpy_helper.from_array(_as_int64(numpy_helper.to_array(a.t)), a.t.name))


def _as_int64(a: np.ndarray) -> np.ndarray:
    return a.view(np.int64) if a.dtype == np.uint64 else a.astype(np.int64)


def _unsigned_values(proto: Any) -> dict[str, int]:
    g = proto.graph
    out = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output) + list(g.value_info)
           if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type in _BITS}
    out.update({t.name: t.data_type for t in g.initializer if t.data_type in _BITS})
    return out


def _unsigned_attr(n: Any) -> bool:
    return any((a.name in ("to", "dtype") and a.type == 2 and a.i in _BITS) or (a.type == 4 and a.t.data_type in _BITS)
               for a in n.attribute)


def _subgraph_has_unsigned(a: Any) -> bool:
    graphs = [a.g] if a.type == 5 else list(a.graphs)
    for sub in graphs:
        vis = list(sub.input) + list(sub.output) + list(sub.value_info)
        if any(vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type in _BITS for vi in vis):
            return True
        if any(t.data_type in _BITS for t in sub.initializer) or any(_unsigned_attr(n) for n in sub.node):
            return True
    return False


def to_wire(a: np.ndarray, wire: str) -> np.ndarray:
    """An output computed in int64 as the unsigned type the model declares."""
    return a.view(np.uint64) if wire == "uint64" else a.astype(wire)


def from_wire(a: np.ndarray, wire: str) -> np.ndarray:
    """A user's unsigned input as the int64 effc computes with."""
    a = np.asarray(a)
    if a.dtype != np.dtype(wire):
        raise TypeError(f"expected {wire} data, got {a.dtype}")
    return _as_int64(np.ascontiguousarray(a))
