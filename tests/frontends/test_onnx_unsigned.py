"""uint16/32/64 models computed in int64 (frontends/onnx_unsigned.py): exact wrap-around, the
sign flip for uint64 order, unsigned arrays at the boundary, and refusals where int64 would be
wrong."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import effc
from effc.errors import UserError
from effc.onnx_model import TensorSpec

from .onnx_models import model

U = {"uint16": TensorProto.UINT16, "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64}


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, U.get(dtype, dtype), shape)


def _binary(op, dtype, out_type=None, opset=14):
    return model([helper.make_node(op, ["x", "y"], ["z"])], [_vi("x", dtype, [5]), _vi("y", dtype, [5])],
                 [_vi("z", out_type or dtype, [5])], opset=opset)


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
@pytest.mark.parametrize("op, ref", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply)])
def test_arithmetic_wraps_around_like_unsigned(dtype, op, ref):
    top = np.iinfo(dtype).max
    x = np.array([top, top - 1, 0, 7, 1 << (np.iinfo(dtype).bits - 1)], dtype=dtype)
    y = np.array([1, top, 1, 3, 2], dtype=dtype)
    out = effc.compile(_binary(op, dtype)).run({"x": x, "y": y})["z"]
    assert out.dtype == np.dtype(dtype)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(out, ref(x, y))


def test_a_wrapped_result_feeds_the_next_op_as_its_unsigned_value():
    # 3 - 5 wraps to 2**32 - 2, which is greater than 10; computed as plain int64 it would be -2
    m = model([helper.make_node("Sub", ["x", "y"], ["d"]), helper.make_node("Greater", ["d", "t"], ["z"])],
              [_vi("x", "uint32", [2]), _vi("y", "uint32", [2]), _vi("t", "uint32", [2])],
              [_vi("z", TensorProto.BOOL, [2])], opset=14)
    x, y, t = (np.array(v, dtype=np.uint32) for v in ([3, 20], [5, 4], [10, 10]))
    np.testing.assert_array_equal(effc.compile(m).run({"x": x, "y": y, "t": t})["z"], (x - y) > t)


@pytest.mark.parametrize("op, ref", [("Less", np.less), ("GreaterOrEqual", np.greater_equal),
                                     ("Max", np.maximum), ("Min", np.minimum)])
def test_uint64_order_beyond_2_63(op, ref):
    x = np.array([2**63 + 5, 1, 2**64 - 1, 0, 2**63], dtype=np.uint64)
    y = np.array([3, 2**64 - 1, 2**64 - 2, 0, 2**63 - 1], dtype=np.uint64)
    out_type = TensorProto.BOOL if op in ("Less", "GreaterOrEqual") else "uint64"
    out = effc.compile(_binary(op, "uint64", out_type)).run({"x": x, "y": y})["z"]
    np.testing.assert_array_equal(out, ref(x, y))
    assert out.dtype == ref(x, y).dtype


def test_uint64_bits_survive_add_and_xor():
    x = np.array([2**64 - 1, 2**63, 12345, 0, 1], dtype=np.uint64)
    y = np.array([2, 2**63, 2**64 - 12345, 5, 2**64 - 1], dtype=np.uint64)
    np.testing.assert_array_equal(effc.compile(_binary("Add", "uint64")).run({"x": x, "y": y})["z"], x + y)
    np.testing.assert_array_equal(effc.compile(_binary("BitwiseXor", "uint64", opset=18)).run({"x": x, "y": y})["z"], x ^ y)


def test_bitwise_not_and_casts_of_uint16():
    m = model([helper.make_node("BitwiseNot", ["x"], ["n"]),
               helper.make_node("Cast", ["n"], ["f"], to=TensorProto.FLOAT),
               helper.make_node("Cast", ["s"], ["u"], to=TensorProto.UINT16)],
              [_vi("x", "uint16", [3]), _vi("s", TensorProto.INT32, [3])],
              [_vi("n", "uint16", [3]), _vi("f", TensorProto.FLOAT, [3]), _vi("u", "uint16", [3])], opset=18)
    x, s = np.array([0, 1, 65535], dtype=np.uint16), np.array([-1, 70000, 5], dtype=np.int32)
    out = effc.compile(m).run({"x": x, "s": s})
    np.testing.assert_array_equal(out["n"], ~x)
    np.testing.assert_array_equal(out["f"], (~x).astype(np.float32))
    np.testing.assert_array_equal(out["u"], s.astype(np.uint16))


@pytest.mark.parametrize("op", ["Div", "Mod"])
def test_uint64_ops_whose_result_depends_on_the_sign_are_refused(op):
    with pytest.raises(UserError, match=f"{op} on uint64 values .*depend on the sign") as e:
        effc.compile(_binary(op, "uint64"))
    assert "\n" not in str(e.value)


def test_float_to_uint64_cast_is_refused():
    m = model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.UINT64)],
              [_vi("x", TensorProto.FLOAT, [2])], [_vi("y", "uint64", [2])], opset=14)
    with pytest.raises(UserError, match="cannot hold values from 2\\*\\*63"):
        effc.compile(m)


def test_specs_keep_the_declared_unsigned_type():
    compiled = effc.compile(_binary("Add", "uint32"))
    assert [s.wire for s in compiled.inputs + compiled.outputs] == ["uint32"] * 3
    feeds = compiled.random_inputs()
    assert all(a.dtype == np.uint32 for a in feeds.values())
    spec = compiled.inputs[0]
    assert TensorSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="wire"):
        TensorSpec.from_json(spec.to_json() | {"wire": "float32"})
