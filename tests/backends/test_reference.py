"""The reference backend: input checking, symbol binding, float64 mode, extern calls."""

from __future__ import annotations

import pytest
import torch

from effc.backends.reference import ReferenceProgram
from effc.errors import InputError
from effc.ir import DType, GraphBuilder, InputRef, Op, TensorType, size_symbol

s0, s1 = size_symbol("s0"), size_symbol("s1")


def _graph():
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (s0, 8)))
    w = b.constant(torch.randn(8, 4), "w")
    y = b.op(Op.MATMUL, [x, w])
    z = b.op(Op.RESHAPE, [y], shape=(-1,))
    n = b.op(Op.FULL, [], shape=(s0,), value=s0, dtype=DType.I64)
    return b.build([z, n])


def test_runs_for_every_size_of_a_symbol() -> None:
    g = _graph()
    p = ReferenceProgram(g)
    for n in (2, 5, 9):
        x = torch.randn(n, 8)
        z, count = p(x)
        torch.testing.assert_close(z, (x @ g.constants["w"]).reshape(-1))
        assert count.tolist() == [n] * n


@pytest.mark.parametrize("bad, message", [
    ((torch.randn(3, 7),), "expected shape"),
    ((torch.randn(3, 8, 1),), "expected shape"),
    ((torch.randn(3, 8).double(),), "expected dtype f32"),
    ((), "expected 1 inputs"),
    (([1.0],), "expected a tensor"),
])
def test_bad_inputs_raise_input_error(bad, message) -> None:
    with pytest.raises(InputError, match=message):
        ReferenceProgram(_graph())(*bad)


def test_symbol_bound_twice_must_agree() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (s0,)))
    y = b.input("y", TensorType(DType.F32, (s0,)))
    g = b.build([b.op(Op.ADD, [x, y])])
    with pytest.raises(InputError, match="s0 is 3 elsewhere but 4"):
        ReferenceProgram(g)(torch.randn(3), torch.randn(4))


def test_upcast_runs_in_float64() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (4,)))
    c = b.op(Op.CAST, [x], dtype=DType.F16)
    g = b.build([b.op(Op.EXP, [c]), b.op(Op.SUM, [x], dims=(), keepdim=False, dtype=None)])
    outs = ReferenceProgram(g, upcast=True)(torch.randn(4))
    assert all(o.dtype == torch.float64 for o in outs)


def test_extern_calls_the_torch_op() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (3, 4)))
    node = b.node(Op.EXTERN, [x], {"target": "aten.flip.default", "args": (InputRef(0), (0,)), "kwargs": {}},
                  [TensorType(DType.F32, (3, 4))])
    g = b.build([node.output])
    t = torch.randn(3, 4)
    (out,) = ReferenceProgram(g)(t)
    assert torch.equal(out, t.flip(0))
