"""The reference backend's patched kernels: tile-by-tile execution equals layer-by-layer.

The random CNN stages come from tests/passes/test_schedule_patches.py (``cnn_stages``).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from effc.backends.reference import ReferenceProgram
from effc.errors import CompileError
from effc.ir import DType, Graph, GraphBuilder, Op, TensorType, verify
from effc.ir.kernel_node import add_kernel, extract_body
from effc.passes import receptive_field as rf
from effc.passes import schedule_patches as sp
from tests.passes.test_schedule_patches import Net, StageCase, assert_same, cnn_stages

F32 = DType.F32


def _bounds(data: Any, size: int) -> tuple[int, ...]:
    """Random tile boundaries of [0, size): uneven tiles, from one tile to one pixel each."""
    cuts = data.draw(st.sets(st.integers(1, size - 1), max_size=min(5, size - 1))) if size > 1 else set()
    return (0, *sorted(cuts), size)


@settings(max_examples=30)
@given(cnn_stages(), st.data())
def test_patched_equals_layer_by_layer(case: StageCase, data: Any) -> None:
    h, w = rf.spatial_hw(case.stage.output)
    g = sp.patch_stage(case.graph, case.stage, _bounds(data, h), _bounds(data, w))
    verify(g)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 100)))
    x = torch.randn([int(d) for d in case.graph.inputs[0].type.shape], generator=gen)
    assert_same(case.graph, g, x)


def _single(op: Op, size: int = 7, **attrs: Any) -> tuple[Graph, Graph]:
    """A graph of conv -> ``op`` and the same with both patched in 3x2 tiles."""
    n = Net(3)
    x = n.b.input("x", TensorType(F32, (2, 3, size, size)))
    y = n.b.op(op, [n.conv(x, 4, 3, 1, 1)], **attrs)
    g = n.b.build([y])
    stages, _ = sp.find_stages(g)
    (h, w) = rf.spatial_hw(y)
    return g, sp.patch_stage(g, stages[-1], rf.even_bounds(h, 3), rf.even_bounds(w, 2))


@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize("dilation", [1, 2])
def test_max_pool_pads_with_minus_infinity(ceil: bool, dilation: int) -> None:
    g, p = _single(Op.MAX_POOL, kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(dilation, dilation),
                   ceil_mode=ceil)
    x = -torch.rand(2, 3, 7, 7) - 10  # every value is far below zero: zero padding would show
    assert_same(g, p, x)


@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize("divisor", [None, 5])
def test_avg_pool_divides_as_the_op_defines(ceil: bool, include_pad: bool, divisor: int | None) -> None:
    g, p = _single(Op.AVG_POOL, size=8, kernel=(3, 3), stride=(2, 2), padding=(1, 1), ceil_mode=ceil,
                   count_include_pad=include_pad, divisor_override=divisor)
    assert_same(g, p, torch.randn(2, 3, 8, 8) + 3)


def test_tiles_shorthand_and_one_pixel_tiles() -> None:
    n = Net(5)
    x = n.b.input("x", TensorType(F32, (1, 2, 6, 5)))
    y = n.relu6(n.conv(n.relu6(n.conv(x, 4, 3, 2, 1)), 3, 3, 1, 2, 2))
    g = n.b.build([y])
    stages, _ = sp.find_stages(g)
    body, outer = extract_body(stages[-1].nodes, [y])
    for params in ({"input": outer.index(x), "tiles": (2, 3)}, {"input": outer.index(x), "tiles": (3, 3)}):
        b = GraphBuilder()
        xi = b.input("x", x.type)
        consts = [b.constant(g.constant(v.node), "c") if v is not x else xi for v in outer]
        out = add_kernel(b, "patched", "patch0", consts, body, params).output
        p = b.build([out])
        verify(p)
        assert_same(g, p, torch.randn(1, 2, 6, 5))


def test_bad_params_and_bodies_are_refused() -> None:
    n = Net()
    x = n.b.input("x", TensorType(F32, (1, 2, 6, 6)))
    y = n.b.op(Op.SOFTMAX, [n.conv(x, 2, 3, 1, 1)], dim=1)
    body, outer = extract_body([v.node for v in (y.node.inputs[0], y)], [y])
    b = GraphBuilder()
    ins = [b.input("x", x.type), b.constant(torch.randn(2, 2, 3, 3), "w"), b.constant(torch.randn(2), "b")]
    k = add_kernel(b, "patched", "patch0", ins, body, {"input": 0, "tiles": (2, 2)})
    with pytest.raises(CompileError, match="cannot tile softmax"):
        ReferenceProgram(b.build([k.output]))

    body, _ = extract_body([y.node.inputs[0].node], [y.node.inputs[0]])
    b = GraphBuilder()
    ins = [b.input("x", x.type), b.constant(torch.randn(2, 2, 3, 3), "w"), b.constant(torch.randn(2), "b")]
    k = add_kernel(b, "patched", "patch0", ins, body, {"input": 0, "rows": (0, 4, 3, 6), "cols": (0, 6)})
    with pytest.raises(CompileError, match="do not split"):
        ReferenceProgram(b.build([k.output]))


def test_residual_mobilenet_block_batch_of_three() -> None:
    # expansion 6, depthwise, projection, residual add; batch 3; 4x3 uneven tiles
    n = Net(9)
    x = n.b.input("x", TensorType(F32, (3, 4, 11, 9)))
    e = n.relu6(n.conv(x, 24, 1))
    e = n.relu6(n.conv(e, 24, 3, 1, 1, g=24))
    y = n.b.op(Op.ADD, [n.conv(e, 4, 1), x])
    g = n.b.build([y])
    stages, _ = sp.find_stages(g)
    assert stages[-1].output is y
    p = sp.patch_stage(g, stages[-1], (0, 1, 5, 6, 11), (0, 4, 5, 9))
    assert_same(g, p, torch.randn(3, 4, 11, 9))
