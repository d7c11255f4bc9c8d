"""Fusion: golden groupings of small blocks, the merges it must decline, and random graphs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from effc.backends.reference import ReferenceProgram
from effc.costmodel.group_cost import predict_group
from effc.costmodel.roofline import CPU_DEFAULT, Target
from effc.ir import DType, Graph, GraphBuilder, Node, Op, TensorType, Value
from effc.ir.kernel import format_kernel
from effc.ir.kernel_interp import run_kernel
from effc.ir.kernel_lower import lower
from effc.ir.kernel_node import add_kernel, inline_kernels, kernels
from effc.ir.verify import verify
from effc.options import Options
from effc.passes import PassResult, fuse
from effc.passes.fuse_horizontal import fuse_siblings
from effc.tolerance import assert_equivalent

from ..strategies import GraphCase, examples, graphs, sizes
from .golden import apply, assert_same_results, normalise

F32 = DType.F32
CONV = dict(stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1, transposed=False,
            output_padding=[0, 0])


def run_fuse(graph: Graph, options: Options | None = None) -> PassResult:
    """The pass priced on fixed default ceilings, so goldens do not depend on calibration."""
    return fuse.run(graph, options or Options(), CPU_DEFAULT)


def summary(graph: Graph) -> str:
    """One line per kernel: name, kind, what it reads, the ops of its body."""
    names: dict[Value, str] = {v: v.name or "?" for v in graph.inputs}
    lines = []
    for n in graph.nodes:
        if n.op is Op.CONSTANT:
            names[n.output] = n.attrs["name"]
            continue
        name = n.attrs["name"]
        for i, v in enumerate(n.outputs):
            names[v] = name if len(n.outputs) == 1 else f"{name}#{i}"
        ops = ", ".join(str(m.op) for m in n.attrs["body"].nodes)
        reads = ", ".join(names[v] for v in n.inputs)
        lines.append(f"{name} {n.attrs['kind']}({reads}): {ops}")
    return "\n".join(lines)


def check(graph: Graph, expected: str) -> PassResult:
    res = apply(run_fuse, graph)
    assert all(n.op in (Op.CONSTANT, Op.KERNEL) for n in res.graph.nodes)
    got = summary(res.graph)
    assert got == normalise(expected), f"got:\n{got}"
    assert_same_results(graph, res.graph)
    assert_same_results(graph, inline_kernels(res.graph))
    return res


class Block:
    """A GraphBuilder with seeded constants."""

    def __init__(self, seed: int = 0) -> None:
        self.b = GraphBuilder()
        self.gen = torch.Generator().manual_seed(seed)

    def const(self, name: str, *shape: int, positive: bool = False) -> Value:
        t = torch.randn(*shape, generator=self.gen) * 0.3
        return self.b.constant(t.abs() + 0.5 if positive else t, name)

    def linear(self, x: Value, name: str, n: int, k: int) -> Value:
        return self.b.op(Op.LINEAR, [x, self.const(f"{name}.w", n, k), self.const(f"{name}.b", n)])

    def layer_norm(self, x: Value, name: str, d: int) -> Value:
        return self.b.op(Op.LAYER_NORM, [x, self.const(f"{name}.w", d), self.const(f"{name}.b", d)],
                         normalized_shape=[d], eps=1e-5, has_weight=True, has_bias=True)

    def conv_bn(self, x: Value, name: str, cin: int, cout: int) -> Value:
        y = self.b.op(Op.CONVOLUTION, [x, self.const(f"{name}.w", cout, cin, 3, 3)], **CONV)
        stats = [self.const(f"{name}.mean", cout), self.const(f"{name}.var", cout, positive=True),
                 self.const(f"{name}.gamma", cout), self.const(f"{name}.beta", cout)]
        return self.b.op(Op.BATCH_NORM, [y, *stats], eps=1e-5, has_weight=True, has_bias=True)


def transformer_block(s: int = 8, d: int = 32, heads: int = 4, ff: int = 64) -> Graph:
    """Pre-norm block: attention written out (matmul, softmax, matmul, head reshapes), MLP."""
    m = Block()
    b = m.b
    x = b.input("x", TensorType(F32, (1, s, d)))
    h = m.layer_norm(x, "ln1", d)
    q, k, v = (m.linear(h, name, d, d) for name in ("q", "k", "v"))

    def split_heads(t: Value) -> Value:
        return b.op(Op.PERMUTE, [b.op(Op.RESHAPE, [t], shape=[1, s, heads, d // heads])],
                    dims=[0, 2, 1, 3])
    qh, kh, vh = split_heads(q), split_heads(k), split_heads(v)
    scores = b.op(Op.MATMUL, [qh, b.op(Op.PERMUTE, [kh], dims=[0, 1, 3, 2])])
    scores = b.op(Op.MUL, [scores, b.scalar((d // heads) ** -0.5, F32)])
    attn = b.op(Op.MATMUL, [b.op(Op.SOFTMAX, [scores], dim=-1), vh])
    merged = b.op(Op.RESHAPE, [b.op(Op.PERMUTE, [attn], dims=[0, 2, 1, 3])], shape=[1, s, d])
    x1 = b.op(Op.ADD, [x, m.linear(merged, "o", d, d)])
    f = b.op(Op.GELU, [m.linear(m.layer_norm(x1, "ln2", d), "fc1", ff, d)], approximate="none")
    return b.build([b.op(Op.ADD, [x1, m.linear(f, "fc2", d, ff)])])


def test_transformer_block() -> None:
    res = check(transformer_block(), """
        k0 reduction(x, ln1.w, ln1.b): layer_norm
        k1 matmul(k0, q.w.hcat, q.b.hcat): linear
        k2 matmul(k1): slice, slice, reshape, permute, reshape, permute, permute, matmul, full, mul
        k3 reduction(k2): softmax
        k4 matmul(k1, k3): slice, reshape, permute, matmul
        k5 matmul(k4, o.w, o.b, x): permute, reshape, linear, add
        k6 reduction(k5, ln2.w, ln2.b): layer_norm
        k7 matmul(k6, fc1.w, fc1.b): linear, gelu
        k8 matmul(k7, fc2.w, fc2.b, k5): linear, add
    """)
    # the Q, K, V weights were concatenated; the old constants are gone
    assert not {"q.w", "k.w", "v.w", "q.b"} & set(res.graph.constants)
    assert res.graph.constants["q.w.hcat"].shape == (96, 32)
    assert any(n.startswith("horizontal 3 x linear") for n in res.notes)
    assert any(n.startswith("k7 = matmul[linear, gelu] saves") for n in res.notes)
    assert "layer_norm + linear: a reduction cannot feed a linear prologue (kind rule)" in res.rejected
    # the MLP's residual add cannot join the out-projection kernel: ln2 and the MLP sit between
    assert ("matmul[permute, reshape, linear, add] + add: would create a cycle through layer_norm"
            in res.rejected)
    assert len(res.rejected) == len(set(res.rejected))


def test_conv_bn_relu() -> None:
    m = Block()
    x = m.b.input("x", TensorType(F32, (2, 3, 6, 6)))
    y = m.b.op(Op.RELU, [m.conv_bn(x, "c1", 3, 8)])
    graph = m.b.build([y])
    res = check(graph, "k0 conv(x, c1.w, c1.mean, c1.var, c1.gamma, c1.beta): convolution, batch_norm, relu")
    (k,) = kernels(res.graph)
    assert [v.name for v in k.attrs["body"].inputs] == ["a0", "a1", "a2", "a3", "a4", "a5"]
    assert res.notes[1].startswith("k0 = conv[convolution, batch_norm, relu] saves")


def test_residual_block() -> None:
    m = Block()
    x = m.b.input("x", TensorType(F32, (2, 4, 6, 6)))
    h = m.b.op(Op.RELU, [m.conv_bn(x, "c1", 4, 4)])
    y = m.b.op(Op.RELU, [m.b.op(Op.ADD, [m.conv_bn(h, "c2", 4, 4), x])])
    check(m.b.build([y]), """
        k0 conv(x, c1.w, c1.mean, c1.var, c1.gamma, c1.beta): convolution, batch_norm, relu
        k1 conv(k0, c2.w, c2.mean, c2.var, c2.gamma, c2.beta, x): convolution, batch_norm, add, relu
    """)


def test_softmax_and_norm_decomposed_are_one_reduction() -> None:
    """mean/var layer norm and a written-out softmax: each one reduction kernel."""
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (4, 16)))
    mean = b.op(Op.MEAN, [x], dims=[-1], keepdim=True)
    var = b.op(Op.VAR, [x], dims=[-1], correction=0, keepdim=True)
    eps = b.scalar(1e-5, F32)
    norm = b.op(Op.MUL, [b.op(Op.SUB, [x, mean]), b.op(Op.RSQRT, [b.op(Op.ADD, [var, eps])])])
    top = b.op(Op.AMAX, [norm], dims=[1], keepdim=True)
    e = b.op(Op.EXP, [b.op(Op.SUB, [norm, top])])
    sm = b.op(Op.DIV, [e, b.op(Op.SUM, [e], dims=[1], keepdim=True, dtype=None)], rounding_mode=None)
    check(b.build([sm]), """
        k0 reduction(x): mean, var, full, sub, add, rsqrt, mul, amax, sub, exp, sum, div
    """)


# -- merges that must not happen ----------------------------------------------------------

def test_cycle_is_rejected() -> None:
    """a = exp(x); out = a + matmul(a, w): exp cannot join the add, the matmul is between."""
    m = Block()
    x = m.b.input("x", TensorType(F32, (8, 8)))
    a = m.b.op(Op.EXP, [x])
    y = m.b.op(Op.ADD, [a, m.b.op(Op.MATMUL, [a, m.const("w", 8, 8)])])
    res = check(m.b.build([y]), """
        k0 pointwise(x): exp
        k1 matmul(k0, w): matmul, add
    """)
    assert "exp + add: would create a cycle through matmul" in res.rejected
    assert "exp + matmul: only views may feed a matmul operand, not exp (kind rule)" in res.rejected


def test_reduction_does_not_feed_matmul() -> None:
    m = Block()
    x = m.b.input("x", TensorType(F32, (4, 16)))
    y = m.linear(m.layer_norm(x, "ln", 16), "fc", 8, 16)
    res = check(m.b.build([y]), """
        k0 reduction(x, ln.w, ln.b): layer_norm
        k1 matmul(k0, fc.w, fc.b): linear
    """)
    assert res.rejected == ("layer_norm + linear: a reduction cannot feed a linear prologue (kind rule)",)


def test_matmul_is_never_duplicated() -> None:
    """A matmul result used by two epilogues and a softmax: one matmul, written once."""
    m = Block()
    x = m.b.input("x", TensorType(F32, (8, 16)))
    y = m.b.op(Op.MATMUL, [x, m.const("w", 16, 8)])
    outs = [m.b.op(Op.RELU, [y]), m.b.op(Op.EXP, [y]), m.b.op(Op.SOFTMAX, [y], dim=-1)]
    res = check(m.b.build(outs), """
        k0 matmul(x, w): matmul, relu, exp
        k1 reduction(k0#0): softmax
    """)
    bodies = [k.attrs["body"] for k in kernels(res.graph)]
    assert sum(body.count(Op.MATMUL) for body in bodies) == 1
    assert len(next(kernels(res.graph)).outputs) == 3  # the matmul result is an extra output


def test_free_scalar_is_recomputed_not_shared() -> None:
    """A ``full`` read by two kernels is copied into both (cheap), never written to memory."""
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (4, 8)))
    two = b.scalar(2.0, F32)
    y = b.op(Op.MUL, [x, two])
    z = b.op(Op.ADD, [b.op(Op.SUM, [y], dims=[0], keepdim=False, dtype=None), two])
    res = check(b.build([y, z]), """
        k0 reduction(x): full, mul, sum, add
    """)
    assert res.graph.count(Op.KERNEL) == 1


def test_pointwise_outputs_of_two_shapes_stay_apart() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (4, 8)))
    r = b.input("r", TensorType(F32, (8,)))
    e = b.op(Op.EXP, [r])
    y = b.op(Op.ADD, [x, e])
    res = check(b.build([y, e]), """
        k0 pointwise(r): exp
        k1 pointwise(x, k0): add
    """)
    assert res.rejected == ("exp + add: pointwise outputs of different shapes",)


def test_horizontal_siblings_without_a_gain_kept() -> None:
    """Linear layers on different inputs are not siblings; one alone is not fused wider."""
    m = Block()
    x = m.b.input("x", TensorType(F32, (4, 8)))
    z = m.b.input("z", TensorType(F32, (4, 8)))
    graph = m.b.build([m.linear(x, "a", 8, 8), m.linear(z, "b", 8, 8)])
    res = apply(run_fuse, graph)
    assert set(res.graph.constants) == {"a.w", "a.b", "b.w", "b.b"}
    assert not any("horizontal" in n for n in res.notes)


def test_merge_without_a_predicted_gain_is_rejected() -> None:
    """On a compute-bound target with free launches, recomputing a scalar saves nothing."""
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (4, 8)))
    two = b.scalar(2.0, F32)
    graph = b.build([b.op(Op.MUL, [x, two]), b.op(Op.ADD, [x, two])])
    slow = Target("compute-bound, free launches", bandwidth=1e15, peak_flops=1e3, overhead=0.0)
    res = fuse.run(graph, Options(), slow)
    assert summary(res.graph) == normalise("""
        k0 pointwise(): full
        k1 pointwise(x, k0): mul
        k2 pointwise(x, k0): add
    """)
    assert res.rejected == ("full + mul: predicted no faster (32000.0 us vs 32000.0 us apart)",
                            "full + add: predicted no faster (32000.0 us vs 32000.0 us apart)")
    assert_same_results(graph, res.graph)


def test_horizontal_keeps_a_weight_still_used_elsewhere() -> None:
    m = Block()
    x = m.b.input("x", TensorType(F32, (4, 8)))
    z = m.b.input("z", TensorType(F32, (4, 8)))
    w = m.const("w", 8, 8)
    ys = [m.b.op(Op.LINEAR, [x, w]), m.b.op(Op.LINEAR, [x, m.const("w2", 8, 8)]),
          m.b.op(Op.LINEAR, [z, w])]
    res = check(m.b.build(ys), """
        k0 matmul(x, w.hcat): linear
        k1 pointwise(k0): slice
        k2 pointwise(k0): slice
        k3 matmul(z, w): linear
    """)
    assert set(res.graph.constants) == {"w", "w.hcat"}


def test_existing_kernels_are_kept() -> None:
    once = apply(run_fuse, transformer_block()).graph
    again = run_fuse(once, Options())
    assert not again.modified and again.graph is once
    # a kernel among plain nodes: its output is an opaque input to the kernels after it
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (4, 8)))
    inner = GraphBuilder()
    a = inner.input("a0", x.type)
    body = inner.build([inner.op(Op.EXP, [a])])
    k = add_kernel(b, "pointwise", "stage", [b.op(Op.NEG, [x])], body).output
    graph = b.build([b.op(Op.RELU, [k])])
    res = check(graph, """
        k0 pointwise(x): neg
        stage pointwise(k0): exp
        k1 pointwise(stage): relu
    """)
    assert res.rejected == ("neg + kernel: kernel is an existing kernel, kept as it is",
                            "kernel + relu: kernel is an existing kernel, kept as it is")


# -- the cost model of a group ------------------------------------------------------------

def test_predict_group_reads_inputs_once_and_writes_outputs_once() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (1000,)))
    y = b.op(Op.EXP, [x])
    z = b.op(Op.ADD, [y, x])
    graph = b.build([z])
    p = predict_group(list(graph.nodes), [z], {}, CPU_DEFAULT)
    assert p is not None
    assert p.features["bytes"] == 8000 and p.features["flops"] == 2000
    assert p.features["n_nodes"] == 2 and p.features["bound"] == "memory"
    assert p.seconds == 8000 / CPU_DEFAULT.bandwidth + CPU_DEFAULT.overhead


# -- random graphs ------------------------------------------------------------------------

def _concrete(data: st.DataObject, case: GraphCase) -> list[torch.Tensor]:
    return case.inputs(data.draw(sizes(case), label="sizes"), data.draw(st.integers(0, 2**16)))


@examples(40)
@given(case=graphs(max_nodes=14), data=st.data())
def test_fusion_preserves_outputs(case: GraphCase, data: st.DataObject) -> None:
    graph = case.graph
    text = str(graph)
    res = fuse.run(graph, Options())
    note(f"fused:\n{res.graph}\n" + "\n".join(res.notes + res.rejected))
    assert str(graph) == text, "fuse mutated its input"
    verify(res.graph)
    assert all(n.op in (Op.CONSTANT, Op.KERNEL) for n in res.graph.nodes)
    names = [n.attrs["name"] for n in kernels(res.graph)]
    assert names == [f"k{i}" for i in range(len(names))]
    ins = _concrete(data, case)
    expected, ref = ReferenceProgram(graph)(*ins), ReferenceProgram(graph, upcast=True)(*ins)
    assert_equivalent(ReferenceProgram(res.graph)(*ins), expected, ref, context="fused")
    assert_equivalent(ReferenceProgram(inline_kernels(res.graph))(*ins), expected, ref,
                      context="fused, then inlined")


# -- horizontal fusion of addmm, as torch.compile hands over BERT's Q, K and V -------------

def _addmm_t(m: Block, x: Value, name: str, n: int, k: int, bias: bool = True, **attrs: float
             ) -> Value:
    """addmm(b, x, permute(w, [1, 0])) with w (n, k); a plain mm when ``bias`` is False."""
    wt = m.b.op(Op.PERMUTE, [m.const(f"{name}.w", n, k)], dims=[1, 0])
    if not bias:
        return m.b.op(Op.MATMUL, [x, wt])
    return m.b.op(Op.ADDMM, [m.const(f"{name}.b", n), x, wt], beta=attrs.get("beta", 1),
                  alpha=attrs.get("alpha", 1))


def test_horizontal_addmm_through_permute() -> None:
    m = Block()
    x = m.b.input("x", TensorType(F32, (8, 32)))
    outs = [_addmm_t(m, x, name, n, 32) for name, n in (("q", 16), ("k", 8), ("v", 24))]
    graph = m.b.build([m.b.op(Op.RELU, [y]) for y in outs])
    wide, notes, rejected = fuse_siblings(graph, {}, CPU_DEFAULT)
    verify(wide)
    assert str(wide) == normalise("""
        graph(%x: f32[8, 32]) {
          %0 = constant() {name="q.w.hcat"} : f32[48, 32]
          %1 = permute(%0) {dims=[1, 0]} : f32[32, 48]
          %2 = constant() {name="q.b.hcat"} : f32[48]
          %3 = addmm(%2, %x, %1) {beta=1, alpha=1} : f32[8, 48]
          %4 = slice(%3) {dim=1, start=0, end=16, step=1} : f32[8, 16]
          %5 = slice(%3) {dim=1, start=16, end=24, step=1} : f32[8, 8]
          %6 = slice(%3) {dim=1, start=24, end=48, step=1} : f32[8, 24]
          %7 = relu(%4) : f32[8, 16]
          %8 = relu(%5) : f32[8, 8]
          %9 = relu(%6) : f32[8, 24]
          return %7, %8, %9
        }
    """) + "\n"
    assert notes == ["horizontal 3 x addmm on one input f32[8, 32] -> one addmm of width 48, "
                     "7.1 us -> 2.9 us"] and rejected == []
    assert set(wide.constants) == {"q.w.hcat", "q.b.hcat"}
    torch.testing.assert_close(wide.constants["q.w.hcat"][16:24], graph.constants["k.w"])
    assert_same_results(graph, wide)
    res = check(graph, """
        k0 matmul(q.w.hcat, q.b.hcat, x): permute, addmm
        k1 pointwise(k0): slice, relu
        k2 pointwise(k0): slice, relu
        k3 pointwise(k0): slice, relu
    """)
    assert res.notes[1] == notes[0]


def test_horizontal_mixes_siblings_with_and_without_bias() -> None:
    """A plain mm joins addmm siblings (zero bias), beta is folded into the bias; likewise
    linear layers with and without a bias."""
    m = Block()
    x = m.b.input("x", TensorType(F32, (8, 32)))
    ys = [_addmm_t(m, x, "a", 16, 32, beta=0.5), _addmm_t(m, x, "b", 8, 32, bias=False),
          _addmm_t(m, x, "c", 8, 32, beta=0.0)]
    z = m.b.input("z", TensorType(F32, (2, 4, 16)))
    ys += [m.linear(z, "l1", 8, 16), m.b.op(Op.LINEAR, [z, m.const("l2.w", 4, 16)])]
    graph = m.b.build(ys)
    wide, notes, _ = fuse_siblings(graph, {}, CPU_DEFAULT)
    verify(wide)
    assert [n.op for n in wide.nodes if n.op not in (Op.CONSTANT, Op.SLICE)] == [
        Op.PERMUTE, Op.ADDMM, Op.LINEAR]
    assert [n.split(" ->")[0] for n in notes] == [
        "horizontal 3 x addmm/matmul on one input f32[8, 32]",
        "horizontal 2 x linear on one input f32[2, 4, 16]"]
    assert set(wide.constants) == {"a.w.hcat", "a.b.hcat", "l1.w.hcat", "l1.b.hcat"}
    bias = wide.constants["a.b.hcat"]
    torch.testing.assert_close(bias[:16], graph.constants["a.b"] * 0.5)
    assert not bias[16:].any()  # the mm has no bias, and beta=0 drops c's
    assert not wide.constants["l1.b.hcat"][8:].any()
    assert_same_results(graph, wide)
    assert_same_results(graph, apply(run_fuse, graph).graph)


def test_horizontal_addmm_siblings_that_do_not_fit_kept() -> None:
    """Weights through different views, another alpha, a bias that is not a row: apart."""
    m = Block()
    x = m.b.input("x", TensorType(F32, (8, 32)))
    plain = m.b.op(Op.ADDMM, [m.const("p.b", 16), x, m.const("p.w", 32, 16)], beta=1, alpha=1)
    scaled = _addmm_t(m, x, "s", 16, 32, alpha=2.0)
    wt = m.b.op(Op.PERMUTE, [m.const("f.w", 16, 32)], dims=[1, 0])
    full_bias = m.b.op(Op.ADDMM, [m.const("f.b", 8, 16), x, wt], beta=1, alpha=1)
    graph = m.b.build([plain, scaled, full_bias])
    wide, notes, rejected = fuse_siblings(graph, {}, CPU_DEFAULT)
    assert wide is graph and notes == [] and rejected == []
    # the same three, each with a twin that fits it: three pairs
    m2 = Block()
    x2 = m2.b.input("x", TensorType(F32, (8, 32)))
    ys = [m2.b.op(Op.ADDMM, [m2.const(f"p{i}.b", 16), x2, m2.const(f"p{i}.w", 32, 16)],
                  beta=1, alpha=1) for i in range(2)]
    ys += [_addmm_t(m2, x2, f"s{i}", 16, 32, alpha=2.0) for i in range(2)]
    ys += [_addmm_t(m2, x2, f"t{i}", 16, 32) for i in range(2)]
    graph2 = m2.b.build(ys)
    wide2, notes2, _ = fuse_siblings(graph2, {}, CPU_DEFAULT)
    assert len(notes2) == 3 and wide2.count(Op.ADDMM) == 3
    assert wide2.constants["p0.w.hcat"].shape == (32, 32)  # no permute: cat along dim 1
    assert_same_results(graph2, wide2)


def test_horizontal_fuses_bert_qkv() -> None:
    """A real (tiny) BertModel through effc.compile: Q, K and V become one addmm."""
    transformers = pytest.importorskip("transformers")
    import effc
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=1, hidden_size=64, num_attention_heads=4,
                                  intermediate_size=128, vocab_size=1000)
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, 1000, (1, 16))
    compiled = effc.compile(model, (ids,))
    (record,) = [p for p in compiled.explain().graphs[0].passes if p.name == "fuse"]
    merged = "horizontal 3 x addmm on one input f32[16, 64] -> one addmm of width 192"
    assert any(n.startswith(merged) for n in record.notes), record.notes
    with torch.no_grad():
        expected = model(ids).last_hidden_state
    torch.testing.assert_close(compiled(ids).last_hidden_state, expected, rtol=1e-4, atol=1e-5)


# -- GPT-2's patterns: trivial reshapes in epilogues and after norms; split read as slices ------

def _lowered_agrees(k: Node) -> None:
    """The kernel lowered to kernel IR and run by run_kernel equals its body on the reference."""
    body: Graph = k.attrs["body"]
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn([int(d) for d in v.type.shape], generator=gen) for v in body.inputs]
    got, want = run_kernel(lower(k), xs, {}), ReferenceProgram(body)(*xs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def _gelu_tanh(b: GraphBuilder, x: Value) -> Value:
    """GPT-2's NewGELU as torch.compile hands it over: f64 scalars, pow, tanh."""
    def c(v: float) -> Value:
        return b.scalar(v, DType.F64)
    inner = b.op(Op.ADD, [x, b.op(Op.MUL, [b.op(Op.POW, [x, c(3.0)]), c(0.044715)])])
    t = b.op(Op.TANH, [b.op(Op.MUL, [inner, c(0.7978845608028654)])])
    return b.op(Op.MUL, [b.op(Op.MUL, [x, c(0.5)]), b.op(Op.ADD, [t, c(1.0)])])


def test_gpt2_mlp_gelu_between_trivial_reshapes_is_one_matmul_kernel() -> None:
    """addmm -> reshape [1, s, n] -> gelu -> reshape [s, n]: the reshapes only add and drop a
    size-1 dim, so the whole chain is the matmul's epilogue."""
    m = Block()
    x = m.b.input("x", TensorType(F32, (8, 32)))
    h = m.b.op(Op.ADDMM, [m.const("fc.b", 64), x, m.const("fc.w", 32, 64)], beta=1, alpha=1)
    g = _gelu_tanh(m.b, m.b.op(Op.RESHAPE, [h], shape=[1, 8, 64]))
    flat = m.b.op(Op.RESHAPE, [g], shape=[-1, 64])
    y = m.b.op(Op.ADDMM, [m.const("proj.b", 32), flat, m.const("proj.w", 64, 32)], beta=1, alpha=1)
    gelu = "full, pow, full, mul, add, full, mul, tanh, full, mul, full, add, mul"
    res = check(m.b.build([m.b.op(Op.RESHAPE, [y], shape=[1, 8, 32])]), f"""
        k0 matmul(fc.b, x, fc.w): addmm, reshape, {gelu}, reshape
        k1 matmul(proj.b, k0, proj.w): addmm, reshape
    """)
    k0, k1 = kernels(res.graph)
    assert [str(v.type) for v in k0.outputs] == ["f32[8, 64]"]
    assert [str(v.type) for v in k1.outputs] == ["f32[1, 8, 32]"]  # the domain up to a 1
    _lowered_agrees(k0)
    _lowered_agrees(k1)


def test_layer_norm_then_reshape_is_one_reduction_kernel() -> None:
    """residual add, layer norm on [1, s, d], reshape to [s, d] for the next addmm."""
    m = Block()
    x = m.b.input("x", TensorType(F32, (1, 8, 32)))
    r = m.b.input("r", TensorType(F32, (1, 8, 32)))
    h = m.b.op(Op.ADD, [x, r])
    flat = m.b.op(Op.RESHAPE, [m.layer_norm(h, "ln", 32)], shape=[-1, 32])
    y = m.b.op(Op.ADDMM, [m.const("fc.b", 16), flat, m.const("fc.w", 32, 16)], beta=1, alpha=1)
    res = check(m.b.build([y, h]), """
        k0 reduction(x, r, ln.w, ln.b): add, layer_norm, reshape
        k1 matmul(fc.b, k0#1, fc.w): addmm
    """)
    k0 = next(kernels(res.graph))
    assert [str(v.type) for v in k0.outputs] == ["f32[1, 8, 32]", "f32[8, 32]"]
    _lowered_agrees(k0)


def test_split_read_by_head_permutes_becomes_slices() -> None:
    """GPT-2's fused QKV: split into three, each reshaped into heads and permuted. The split
    becomes three slices, which fold into the permute copies: no kernel copies the parts."""
    m = Block()
    x = m.b.input("x", TensorType(F32, (8, 32)))
    qkv = m.b.op(Op.RESHAPE, [m.b.op(Op.ADDMM, [m.const("attn.b", 96), x, m.const("attn.w", 32, 96)],
                                     beta=1, alpha=1)], shape=[1, 8, 96])
    parts = m.b.node(Op.SPLIT, [qkv], {"dim": 2, "sizes": (32, 32, 32)}).outputs
    heads = [m.b.op(Op.PERMUTE, [m.b.op(Op.RESHAPE, [p], shape=[1, 8, -1, 8])], dims=[0, 2, 1, 3])
             for p in parts]
    graph = m.b.build(heads)
    res = check(graph, """
        k0 matmul(attn.b, x, attn.w): addmm, reshape
        k1 pointwise(k0): slice, reshape, permute
        k2 pointwise(k0): slice, reshape, permute
        k3 pointwise(k0): slice, reshape, permute
    """)
    starts = [n.attrs["start"] for k in kernels(res.graph) for n in k.attrs["body"].nodes
              if n.op is Op.SLICE]
    assert starts == [0, 32, 64]
    assert not any("split" in r for r in res.rejected)
    for k in kernels(res.graph):
        _lowered_agrees(k)
    # the second head's load reads the QKV buffer at offset 32, through index arithmetic only
    text = format_kernel(lower(list(kernels(res.graph))[2]))
    assert "load a0[8*i1 + 96*i2 + i3 + 32]" in text, text


def test_split_read_by_an_op_or_returned_stays_a_kernel() -> None:
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (4, 8)))
    p, q = b.node(Op.SPLIT, [b.op(Op.EXP, [x])], {"dim": 1, "sizes": (4, 4)}).outputs
    res = check(b.build([b.op(Op.CAT, [b.op(Op.NEG, [p]), q], dim=0)]), """
        k0 pointwise(x): exp
        k1 op(k0): split
        k2 pointwise(k1#0): neg
        k3 op(k2, k1#1): cat
    """)
    assert "split stays a kernel: cat reads its output 1 and runs as a kernel of its own" in res.rejected
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (4, 8)))
    p, q = b.node(Op.SPLIT, [x], {"dim": 0, "sizes": (1, 3)}).outputs
    res = check(b.build([p, b.op(Op.RELU, [q])]), """
        k0 op(x): split
        k1 pointwise(k0#1): relu
    """)
    assert res.rejected[0] == "split stays a kernel: its output 0 is a graph output"


def test_epilogue_reshape_that_regroups_dims_is_rejected() -> None:
    m = Block()
    x = m.b.input("x", TensorType(F32, (8, 32)))
    h = m.b.op(Op.MATMUL, [x, m.const("w", 32, 64)])
    y = m.b.op(Op.RELU, [m.b.op(Op.RESHAPE, [h], shape=[8, 4, 16])])
    res = check(m.b.build([y]), """
        k0 matmul(x, w): matmul
        k1 pointwise(k0): reshape, relu
    """)
    assert ("matmul + reshape: a matmul epilogue holds pointwise nodes and trivial reshapes, not a "
            "reshape beyond size-1 dims (kind rule)") in res.rejected


def test_reduction_result_moved_by_a_trivial_reshape_is_rejected() -> None:
    """x[i, j] + sum(x[i, :]) reshaped [4, 1] -> [1, 4]: broadcast, the row sum lands on the
    columns, off its own row."""
    b = GraphBuilder()
    x = b.input("x", TensorType(F32, (4, 4)))
    s = b.op(Op.SUM, [x], dims=[1], keepdim=True, dtype=None)
    y = b.op(Op.ADD, [x, b.op(Op.RESHAPE, [s], shape=[1, 4])])
    res = check(b.build([y]), """
        k0 reduction(x): sum, reshape
        k1 pointwise(x, k0): add
    """)
    assert "reduction[sum, reshape] + add: add moves a reduction result off its outer index" in res.rejected


def test_the_final_acyclicity_check_catches_a_cycle_the_merge_rules_let_through():
    """x -> exp -> sin -> add(exp, sin): forcing exp and add into one group without sin makes
    a cycle (the group must run both before and after sin); the condensation check names it."""
    from effc.errors import CompileError
    from effc.options import Options
    from effc.passes.fuse import Fuser
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (4, 4)))
    e = b.op(Op.EXP, [x])
    s = b.op(Op.SIN, [e])
    y = b.op(Op.ADD, [e, s])
    g = b.build([y])
    fuser = Fuser(g, Options().hint_env(()), None)
    exp_g, add_g = fuser.home[e.node], fuser.home[y.node]
    add_g.nodes |= exp_g.nodes
    add_g.home |= exp_g.home
    fuser.home[e.node] = add_g
    fuser.dag.remove_node(exp_g)   # what a merge without rule (b) would leave behind
    with pytest.raises(CompileError, match="cycle of kernels"):
        fuser.build()


@pytest.mark.parametrize("target, expected", [
    ("c", "k0 matmul(x, w): matmul, full, mul, tanh"),
    ("triton", "k0 matmul(x, w): matmul, full, mul\nk1 pointwise(k0): tanh"),
])
def test_long_formulas_stay_out_of_gpu_matmul_epilogues(target: str, expected: str) -> None:
    """[Note: GPU matmul epilogues]: tanh after a matmul joins its epilogue on the C target,
    and on the Triton target runs as a point-wise kernel of its own, with the reason."""
    m = Block()
    x = m.b.input("x", TensorType(F32, (8, 32)))
    h = m.b.op(Op.MATMUL, [x, m.const("w", 32, 64)])
    y = m.b.op(Op.TANH, [m.b.op(Op.MUL, [h, m.b.scalar(0.5, F32)])])
    g = m.b.build([y])
    res = fuse.run(g, Options(target=target), CPU_DEFAULT)
    assert summary(res.graph) == normalise(expected), summary(res.graph)
    assert_same_results(g, res.graph)
    gpu_reason = any("epilogue on the GPU holds no tanh" in r for r in res.rejected)
    assert gpu_reason == (target == "triton"), res.rejected
