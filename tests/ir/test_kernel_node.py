"""Kernel nodes: a fused group held as one node. Text round trip, verification, the reference
backend running the body, and inlining that undoes the grouping."""

from __future__ import annotations

import pytest
import torch

from effc.backends.reference import ReferenceProgram
from effc.ir import DType, Graph, GraphBuilder, Op, TensorType, print_graph, size_symbol, verify
from effc.ir.kernel_node import add_kernel, extract_body, inline_kernels, kernels
from effc.ir.parser import parse_graph
from effc.ir import VerificationError

s0 = size_symbol("s0")


def bias_gelu_matmul() -> tuple[Graph, Graph]:
    """x @ w + b -> gelu -> @ w2; the add and gelu grouped as a pointwise kernel."""
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (s0, 8)))
    w = b.constant(torch.randn(8, 16), "w")
    bias = b.constant(torch.randn(16), "bias")
    w2 = b.constant(torch.randn(16, 4), "w2")
    h = b.op(Op.MATMUL, [x, w])
    a = b.node(Op.ADD, [h, bias], {})
    g = b.node(Op.GELU, [a.output], {"approximate": "none"})
    y = b.op(Op.MATMUL, [g.output, w2])
    plain = b.build([y])

    body, outer = extract_body([a, g], [g.output])
    k = GraphBuilder()
    kx = k.input("x", TensorType(DType.F32, (s0, 8)))
    kw, kb, kw2 = (k.adopt_constant(n, plain.constants[n]) for n in ("w", "bias", "w2"))
    kh = k.op(Op.MATMUL, [kx, kw])
    assert [v.node.op if v.node else None for v in outer] == [Op.MATMUL, Op.CONSTANT]
    node = add_kernel(k, "pointwise", "k0", [kh, kb], body)
    fused = k.build([k.op(Op.MATMUL, [node.output, kw2])])
    return plain, fused


def test_kernel_body_inputs_are_the_groups_outer_values():
    plain, fused = bias_gelu_matmul()
    (node,) = kernels(fused)
    body = node.attrs["body"]
    assert [v.name for v in body.inputs] == ["a0", "a1"]
    assert [n.op for n in body.nodes] == [Op.ADD, Op.GELU]
    assert node.output.type == body.outputs[0].type
    verify(fused)


def test_kernel_text_round_trips_with_the_body_indented():
    _, fused = bias_gelu_matmul()
    text = print_graph(fused)
    assert 'kernel(' in text and 'kind="pointwise"' in text and "\n    graph(%a0" in text
    again = parse_graph(text, fused.constants)
    assert print_graph(again) == text
    verify(again)


def test_reference_backend_runs_the_body_and_inlining_undoes_the_group():
    plain, fused = bias_gelu_matmul()
    x = torch.randn(5, 8)
    want = ReferenceProgram(plain)(x)[0]
    torch.testing.assert_close(ReferenceProgram(fused)(x)[0], want)
    inlined = inline_kernels(fused)
    assert inlined.count(Op.KERNEL) == 0 and inlined.count(Op.GELU) == 1
    torch.testing.assert_close(ReferenceProgram(inlined)(x)[0], want)
    torch.testing.assert_close(ReferenceProgram(fused, upcast=True)(x)[0].float(), want, rtol=1e-4, atol=1e-4)


def test_a_body_may_not_hold_constants_or_use_a_value_before_it_is_made():
    plain, _ = bias_gelu_matmul()
    const = next(n for n in plain.nodes if n.op is Op.CONSTANT)
    with pytest.raises(ValueError, match="no constants"):
        extract_body([const], [const.output])
    add = next(n for n in plain.nodes if n.op is Op.ADD)
    gelu = next(n for n in plain.nodes if n.op is Op.GELU)
    with pytest.raises(ValueError, match="before it is made"):
        extract_body([gelu, add], [gelu.output])


def test_verify_rejects_an_unknown_kind_and_a_body_whose_types_disagree():
    _, fused = bias_gelu_matmul()
    text = print_graph(fused)
    bad_kind = parse_graph(text.replace('kind="pointwise"', 'kind="magic"'), fused.constants)
    with pytest.raises(VerificationError, match="magic"):
        verify(bad_kind)
    with pytest.raises((VerificationError, ValueError)):
        verify(parse_graph(text.replace("%a0: f32[s0, 16]", "%a0: f32[s0, 17]"), fused.constants))
