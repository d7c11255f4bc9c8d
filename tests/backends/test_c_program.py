"""The C backend's whole-program path: random graphs fused, planned, compiled into one shared
library with its host program, and run in one call; kernels no generator covers come back to
Python through the callback. Outputs must match the reference backend under the tolerance
policy, at sizes other than the ones the plan was priced at."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

import effc
from effc.backends.c.build import compiler_available
from effc.backends.c.program import CProgram
from effc.backends.reference import ReferenceProgram
from effc.errors import CompileError
from effc.ir import DType, GraphBuilder, Op, TensorType, size_symbol
from effc.options import Options
from effc.passes import fuse, plan_memory
from effc.tolerance import assert_equivalent

from tests.strategies import examples, graphs, sizes

pytestmark = pytest.mark.skipif(not compiler_available(), reason="no C compiler")

s0 = size_symbol("s0")


def compiled(graph, hint):
    opts = Options(size_hints={str(k): v for k, v in hint.items()})
    fused = fuse.run(graph, opts).graph
    p = plan_memory.plan(fused, opts.hint_env(fused.symbols()))
    return fused, CProgram(fused, p)


@examples(12)
@given(data=st.data(), case=graphs(max_nodes=10))
def test_c_program_matches_the_reference(data: st.DataObject, case) -> None:
    hint = data.draw(sizes(case), label="hint")
    env = data.draw(sizes(case, avoid=hint), label="sizes")
    fused, program = compiled(case.graph, hint)
    note(str(fused))
    note(f"run in Python: {program.fallbacks}")
    inputs = case.inputs(env, seed=3)
    actual = program(*inputs)
    expected = ReferenceProgram(case.graph)(*inputs)
    reference = ReferenceProgram(case.graph, upcast=True)(*inputs)
    assert_equivalent(actual, expected, reference, str(fused))


def test_a_kernel_without_c_runs_through_the_callback_in_the_same_arena() -> None:
    """exp -> cumsum (an op kernel, no C) -> relu: the middle step returns to Python."""
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (s0, 16)))
    e = b.op(Op.EXP, [x])
    c = b.op(Op.CUMSUM, [e], dim=1, dtype=None)
    g = b.build([b.op(Op.RELU, [b.op(Op.SUB, [c, e])])])
    fused, program = compiled(g, {s0: 8})
    assert any("cumsum" in k for k in program.fallbacks), program.fallbacks
    for n in (1, 5, 33):
        xs = torch.randn(n, 16)
        (got,) = program(xs)
        torch.testing.assert_close(got, (xs.exp().cumsum(1) - xs.exp()).relu())


def test_an_error_in_the_callback_surfaces_in_python() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (4, 4)))
    g = b.build([b.op(Op.RELU, [b.op(Op.CUMSUM, [b.op(Op.EXP, [x])], dim=1, dtype=None)])])
    _, program = compiled(g, {})
    step = next(s for s in program.steps if s.body is not None and "cumsum" in str(s.node.attrs["body"]))

    class Boom:
        def run(self, args, env):
            raise RuntimeError("boom")
    step.body = Boom()
    with pytest.raises(CompileError, match="fallback failed at kernel.*k1.*boom"):
        program(torch.randn(4, 4))


def test_target_c_through_effc_compile() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.MaxPool2d(3, 1, 1), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
                            torch.nn.ReLU6(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 4 * 4, 10), torch.nn.Softmax(-1)).eval()
    x = torch.randn(2, 3, 8, 8)
    c = effc.compile(m, (x,), target="c")
    g = c.explain().graphs[0]
    assert g.target == "c" and g.python_kernels == {}
    with torch.no_grad():
        torch.testing.assert_close(c(x), m(x), rtol=1e-4, atol=1e-5)


def test_explain_counts_the_kernels_scratch_in_peak_memory() -> None:
    """The GEMM template's packing panels and the attention blocks live after the plan's
    buffers: the report's peak adds them."""
    def f(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v) @ v.transpose(-1, -2)
    q, k, v = (torch.randn(1, 2, 64, 16) for _ in range(3))
    c = effc.compile(f, (q, k, v), target="c")
    assert_equivalent([c(q, k, v)], [f(q, k, v)], [f(q.double(), k.double(), v.double())])
    (g,) = c.explain().graphs
    assert g.memory["kernel_scratch"] and g.memory["kernel_scratch"] > 0
    assert g.peak_bytes == g.memory["arena"] + g.memory["scratch"] + g.memory["kernel_scratch"]
    assert "kernel scratch" in str(c.explain())
