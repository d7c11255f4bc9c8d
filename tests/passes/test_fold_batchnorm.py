"""Batch-norm folding: golden IR, the near misses it must decline, and real torch modules."""

from __future__ import annotations

from typing import Sequence

import pytest
import torch
from torch import nn

from effc.ir import DType, Graph, GraphBuilder, Op, TensorType
from effc.options import Options
from effc.passes import PIPELINE, fold_batchnorm, run_pipeline

from .golden import apply, assert_rewrites, assert_same_results, assert_unchanged, params

CONV = ("stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1, transposed=false, "
        "output_padding=[0, 0]")
BN = "eps=1e-05, has_weight=true, has_bias=true"


def _params(**shapes: Sequence[int]) -> dict[str, torch.Tensor]:
    """Seeded constants; "var" is positive, as a batch norm's running variance is."""
    gen = torch.Generator().manual_seed(7)
    out = {name: torch.randn(list(shape), generator=gen) for name, shape in shapes.items()}
    if "var" in out:
        out["var"] = out["var"].abs() + 0.5
    return out


CONV_BN = f"""
graph(%x: f32[2, 3, 6, 6]) {{
  %0 = constant() {{name="w"}} : f32[8, 3, 3, 3]
  %1 = constant() {{name="b"}} : f32[8]
  %2 = convolution(%x, %0, %1) {{{CONV}}} : f32[2, 8, 6, 6]
  %3 = constant() {{name="mean"}} : f32[8]
  %4 = constant() {{name="var"}} : f32[8]
  %5 = constant() {{name="gamma"}} : f32[8]
  %6 = constant() {{name="beta"}} : f32[8]
  %7 = batch_norm(%2, %3, %4, %5, %6) {{{BN}}} : f32[2, 8, 6, 6]
  %8 = relu(%7) : f32[2, 8, 6, 6]
  return %8
}}"""
CONV_BN_PARAMS = _params(w=[8, 3, 3, 3], b=[8], mean=[8], var=[8], gamma=[8], beta=[8])


def test_conv_bn() -> None:
    res = assert_rewrites(fold_batchnorm.run, CONV_BN, f"""
graph(%x: f32[2, 3, 6, 6]) {{
  %0 = constant() {{name="w.bn"}} : f32[8, 3, 3, 3]
  %1 = constant() {{name="b.bn"}} : f32[8]
  %2 = convolution(%x, %0, %1) {{{CONV}}} : f32[2, 8, 6, 6]
  %3 = relu(%2) : f32[2, 8, 6, 6]
  return %3
}}""", constants=CONV_BN_PARAMS)
    assert res.notes == ("folded batch_norm : f32[2, 8, 6, 6] into convolution weight w",)


def test_conv_without_bias_and_affine() -> None:
    assert_rewrites(fold_batchnorm.run, f"""
graph(%x: f32[2, 3, 6, 6]) {{
  %0 = constant() {{name="w"}} : f32[8, 3, 3, 3]
  %1 = convolution(%x, %0) {{{CONV}}} : f32[2, 8, 6, 6]
  %2 = constant() {{name="mean"}} : f32[8]
  %3 = constant() {{name="var"}} : f32[8]
  %4 = batch_norm(%1, %2, %3) {{eps=0.001, has_weight=false, has_bias=false}} : f32[2, 8, 6, 6]
  return %4
}}""", f"""
graph(%x: f32[2, 3, 6, 6]) {{
  %0 = constant() {{name="w.bn"}} : f32[8, 3, 3, 3]
  %1 = constant() {{name="w.bias.bn"}} : f32[8]
  %2 = convolution(%x, %0, %1) {{{CONV}}} : f32[2, 8, 6, 6]
  return %2
}}""", constants=_params(w=[8, 3, 3, 3], mean=[8], var=[8]))


LINEAR_PARAMS = _params(w=[6, 5], b=[6], wt=[5, 6], mean=[6], var=[6], gamma=[6], beta=[6])
BN_TAIL = f"""
  %3 = constant() {{name="mean"}} : f32[6]
  %4 = constant() {{name="var"}} : f32[6]
  %5 = constant() {{name="gamma"}} : f32[6]
  %6 = constant() {{name="beta"}} : f32[6]
  %7 = batch_norm(%2, %3, %4, %5, %6) {{{BN}}} : f32[4, 6]
  return %7
}}"""


@pytest.mark.parametrize("layer, expected", [
    ("""
  %0 = constant() {name="w"} : f32[6, 5]
  %1 = constant() {name="b"} : f32[6]
  %2 = linear(%x, %0, %1) : f32[4, 6]""", """
  %0 = constant() {name="w.bn"} : f32[6, 5]
  %1 = constant() {name="b.bn"} : f32[6]
  %2 = linear(%x, %0, %1) : f32[4, 6]"""),
    ("""
  %0 = constant() {name="b"} : f32[6]
  %1 = constant() {name="wt"} : f32[5, 6]
  %2 = addmm(%0, %x, %1) {beta=0.5, alpha=2.0} : f32[4, 6]""", """
  %0 = constant() {name="wt.bn"} : f32[5, 6]
  %1 = constant() {name="b.bn"} : f32[6]
  %2 = addmm(%1, %x, %0) {beta=1.0, alpha=2.0} : f32[4, 6]"""),
    ("""
  %0 = constant() {name="wt"} : f32[5, 6]
  %1 = exp(%x) : f32[4, 5]
  %2 = matmul(%1, %0) : f32[4, 6]""", """
  %0 = exp(%x) : f32[4, 5]
  %1 = constant() {name="wt.bn"} : f32[5, 6]
  %2 = constant() {name="wt.bias.bn"} : f32[6]
  %3 = addmm(%2, %0, %1) {beta=1.0, alpha=1.0} : f32[4, 6]"""),
], ids=["linear", "addmm", "matmul"])
def test_linear_layers(layer: str, expected: str) -> None:
    out = "%3" if "exp" in expected else "%2"
    assert_rewrites(fold_batchnorm.run, "graph(%x: f32[4, 5]) {" + layer + BN_TAIL,
                    "graph(%x: f32[4, 5]) {" + expected + f"\n  return {out}\n}}",
                    constants=LINEAR_PARAMS)


NEGATIVES = [
    # The convolution's output is also returned: it is needed without the batch norm.
    ("second_user", CONV_BN.replace("return %8", "return %8, %2"), CONV_BN_PARAMS, "other users"),
    # A running statistic that is an input, not a constant.
    ("mean_not_constant", f"""
graph(%x: f32[2, 3, 6, 6], %mean: f32[8]) {{
  %0 = constant() {{name="w"}} : f32[8, 3, 3, 3]
  %1 = convolution(%x, %0) {{{CONV}}} : f32[2, 8, 6, 6]
  %2 = constant() {{name="var"}} : f32[8]
  %3 = batch_norm(%1, %mean, %2) {{eps=1e-05, has_weight=false, has_bias=false}} : f32[2, 8, 6, 6]
  return %3
}}""", _params(w=[8, 3, 3, 3], var=[8]), "mean is not a constant"),
    # A linear over (N, L, F): the batch norm's channel axis 1 is L, not the features.
    ("channel_axis", """
graph(%x: f32[2, 6, 5]) {
  %0 = constant() {name="w"} : f32[6, 5]
  %1 = linear(%x, %0) : f32[2, 6, 6]
  %2 = constant() {name="mean"} : f32[6]
  %3 = constant() {name="var"} : f32[6]
  %4 = batch_norm(%1, %2, %3) {eps=1e-05, has_weight=false, has_bias=false} : f32[2, 6, 6]
  return %4
}""", _params(w=[6, 5], mean=[6], var=[6]), "channel axis"),
    # Statistics in another dtype than the layer.
    ("dtypes_differ", """
graph(%x: f64[4, 5]) {
  %0 = constant() {name="w"} : f64[6, 5]
  %1 = linear(%x, %0) : f64[4, 6]
  %2 = constant() {name="mean"} : f32[6]
  %3 = constant() {name="var"} : f32[6]
  %4 = batch_norm(%1, %2, %3) {eps=1e-05, has_weight=false, has_bias=false} : f64[4, 6]
  return %4
}""", {**_params(mean=[6], var=[6]), "w": torch.randn(6, 5, dtype=torch.float64)}, "dtypes differ"),
    # Not after a layer at all.
    ("after_relu", """
graph(%x: f32[4, 6]) {
  %0 = relu(%x) : f32[4, 6]
  %1 = constant() {name="mean"} : f32[6]
  %2 = constant() {name="var"} : f32[6]
  %3 = batch_norm(%0, %1, %2) {eps=1e-05, has_weight=false, has_bias=false} : f32[4, 6]
  return %3
}""", _params(mean=[6], var=[6]), None),
]


@pytest.mark.parametrize("before, constants, reason", params(NEGATIVES))
def test_negative(before: str, constants: dict[str, torch.Tensor], reason: str | None) -> None:
    res = assert_unchanged(fold_batchnorm.run, before, constants=constants)
    if reason is None:
        assert not res.rejected
    else:
        assert any(reason in r for r in res.rejected), res.rejected


# -- real torch modules ----------------------------------------------------------------------

def _randomize(bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Non-trivial running statistics and affine parameters, as a trained model has."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) * 2 + 0.1)
        if bn.affine:
            bn.weight.copy_(torch.randn(bn.num_features, generator=gen))
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen))


def _module_graph(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm,
                  x_shape: Sequence[int]) -> Graph:
    """The IR a frontend makes for ``bn(layer(x))``, with the modules' tensors as constants."""
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, tuple(x_shape)))
    ins = [x, b.constant(layer.weight.detach(), "layer.weight")]
    if layer.bias is not None:
        ins.append(b.constant(layer.bias.detach(), "layer.bias"))
    if isinstance(layer, nn.Linear):
        y = b.op(Op.LINEAR, ins)
    else:
        assert isinstance(layer, nn.modules.conv._ConvNd)
        y = b.op(Op.CONVOLUTION, ins, stride=layer.stride, padding=layer.padding,
                 dilation=layer.dilation, groups=layer.groups, transposed=layer.transposed,
                 output_padding=layer.output_padding)
    params = [b.constant(bn.running_mean, "bn.running_mean"),
              b.constant(bn.running_var, "bn.running_var")]
    if bn.affine:
        params += [b.constant(bn.weight.detach(), "bn.weight"),
                   b.constant(bn.bias.detach(), "bn.bias")]
    out = b.op(Op.BATCH_NORM, [y, *params], eps=bn.eps, has_weight=bn.affine, has_bias=bn.affine)
    return b.build([out])


MODULES = {
    "conv2d": (lambda: nn.Conv2d(3, 8, 3, padding=1), lambda: nn.BatchNorm2d(8), [2, 3, 9, 9]),
    "conv2d_grouped_strided": (lambda: nn.Conv2d(8, 12, 3, stride=2, groups=4),
                               lambda: nn.BatchNorm2d(12), [2, 8, 9, 9]),
    "conv2d_depthwise_no_bias": (lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                                 lambda: nn.BatchNorm2d(8), [2, 8, 7, 7]),
    "conv_transpose2d_grouped": (lambda: nn.ConvTranspose2d(6, 8, 3, stride=2, groups=2,
                                                            output_padding=1),
                                 lambda: nn.BatchNorm2d(8), [2, 6, 5, 5]),
    "conv1d_no_affine": (lambda: nn.Conv1d(4, 6, 5), lambda: nn.BatchNorm1d(6, affine=False),
                         [3, 4, 16]),
    "linear": (lambda: nn.Linear(16, 10), lambda: nn.BatchNorm1d(10), [5, 16]),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_torch_modules(name: str) -> None:
    make_layer, make_bn, x_shape = MODULES[name]
    torch.manual_seed(0)
    layer, bn = make_layer(), make_bn()
    _randomize(bn)
    model = nn.Sequential(layer, bn).eval()
    graph = _module_graph(layer, bn, x_shape)
    res = apply(fold_batchnorm.run, graph)
    assert res.modified and res.graph.count(Op.BATCH_NORM) == 0
    assert res.graph.count(Op.CONSTANT) == 2  # the folded weight and bias, nothing left over
    x = torch.randn(x_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = model(x)
    assert_same_results(graph, res.graph, [x], eager=[eager])


def test_pipeline_folds_a_traced_conv_block() -> None:
    """The passes together, as a frontend's graph meets them: BN parameters that arrive as
    small computations (a transposed weight, a variance with a cast) fold to constants first,
    then into the convolution; the redundant glue around it simplifies away."""
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
    _randomize(bn)
    model = nn.Sequential(conv, bn, nn.ReLU()).eval()
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, (2, 3, 5, 5)))
    w = b.op(Op.PERMUTE, [b.constant(conv.weight.detach().permute(1, 0, 2, 3).contiguous(), "wt")],
             dims=[1, 0, 2, 3])
    y = b.op(Op.CONVOLUTION, [x, w, b.constant(conv.bias.detach(), "bias")], stride=[1, 1],
             padding=[1, 1], dilation=[1, 1], groups=1, transposed=False, output_padding=[0, 0])
    var = b.op(Op.CAST, [b.constant(bn.running_var.double(), "var64")], dtype=DType.F32)
    params = [b.constant(bn.running_mean, "mean"), var, b.constant(bn.weight.detach(), "gamma"),
              b.constant(bn.bias.detach(), "beta")]
    z = b.op(Op.BATCH_NORM, [y, *params], eps=bn.eps, has_weight=True, has_bias=True)
    one = b.scalar(1.0, DType.F32)
    z = b.op(Op.MUL, [b.op(Op.RELU, [z]), one])
    graph = b.build([b.op(Op.RESHAPE, [b.op(Op.RESHAPE, [z], shape=[2, -1])], shape=[2, 4, 5, 5])])

    after, records = run_pipeline(graph, PIPELINE, Options(verify=True))
    # what is left is one convolution with a relu epilogue, fused into one kernel
    assert [n.op for n in after.nodes] == [Op.CONSTANT, Op.CONSTANT, Op.KERNEL]
    kernel = after.nodes[-1]
    assert kernel.attrs["kind"] == "conv"
    assert [n.op for n in kernel.attrs["body"].nodes] == [Op.CONVOLUTION, Op.RELU]
    assert {r.name for r in records if r.modified} == {
        "simplify", "fold_constants", "fold_batchnorm", "fuse"}
    xin = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        eager = model(xin)
    assert_same_results(graph, after, [xin], eager=[eager])
