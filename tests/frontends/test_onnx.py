"""The ONNX frontend: models load, convert through torch-mlir, run like onnxruntime, and every
bad file gets a one-line UserError."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import effc
from effc.errors import InputError, UserError
from effc.frontends.onnx import UnsupportedOpsError
from effc.ir import Op

from .onnx_models import exported, f32, init, mlp, model


def _ort(proto, feeds):
    data = proto if isinstance(proto, bytes) else proto.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_mlp_matches_onnxruntime_at_two_batch_sizes():
    m = mlp()
    compiled = effc.compile(m)
    assert [i.shape for i in compiled.inputs] == [("batch", 8)]
    assert compiled.outputs[0].name == "y" and compiled.outputs[0].shape == ("batch", 4)
    for batch in (1, 7):
        x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
        got = compiled.run({"x": x})["y"]
        np.testing.assert_allclose(got, _ort(m, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_dim_param_becomes_one_symbol_shared_by_inputs():
    m = model([helper.make_node("Add", ["a", "b"], ["c"])],
              [f32("a", ["n", 3]), f32("b", ["n", 3])], [f32("c", ["n", 3])])
    compiled = effc.compile(m)
    g = compiled.graph
    assert g.inputs[0].type.shape[0] == g.inputs[1].type.shape[0]
    assert len(g.symbols()) == 1
    with pytest.raises(InputError, match="size n"):
        compiled.run({"a": np.ones((2, 3), np.float32), "b": np.ones((4, 3), np.float32)})


def test_path_bytes_and_proto_give_the_same_model(tmp_path):
    m = mlp()
    path = tmp_path / "mlp.onnx"
    onnx.save(m, path)
    x = np.ones((2, 8), np.float32)
    outs = [effc.compile(src).run({"x": x})["y"] for src in (str(path), path, m.SerializeToString(), m)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    assert effc.compile(str(path)).report.label == "mlp"


class ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.nn.functional.max_pool2d(y, 2).mean((2, 3))
        return torch.softmax(self.fc(y), -1)


class Block(torch.nn.Module):
    """A pre-norm transformer block with a hand-written attention."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.h = heads
        self.ln = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln(x)).split(d, -1)
        q, k, v = (t.reshape(b, s, self.h, d // self.h).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.h) ** 0.5, -1) @ v
        x = x + self.proj(att.transpose(1, 2).reshape(b, s, d))
        return x + self.mlp(self.ln(x))


def _ir_op_kinds(graph) -> set[str]:
    return {n.op.value for n in graph.nodes if n.op is not Op.CONSTANT}


@pytest.mark.parametrize("make,inputs", [
    (ConvNet, (torch.randn(2, 3, 8, 8),)),
    (Block, (torch.randn(2, 5, 16),)),
])
def test_exported_model_matches_torch_and_uses_the_fx_op_kinds(make, inputs):
    torch.manual_seed(0)
    module = make().eval()
    compiled = effc.compile(exported(module, *inputs))
    with torch.no_grad():
        want = module(*inputs)
        got = compiled(*inputs)[0]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        # another batch size through the same compiled model
        more = tuple(torch.cat([t, t]) for t in inputs)
        torch.testing.assert_close(compiled(*more)[0], module(*more), rtol=1e-4, atol=1e-5)
    assert compiled.explain().extern_count == 0, str(compiled.explain())
    fx = effc.compile(module, list(inputs))
    fx_kinds = _ir_op_kinds(fx.explain().graphs[0].graph)
    onnx_kinds = _ir_op_kinds(compiled.graph)
    # the same vocabulary: every op kind the ONNX path uses, the torch.compile path uses too,
    # up to what the ONNX exporter itself spells differently:
    spelled_differently = {
        "slice": "ONNX Split arrives as one slice per part; torch.split is one split op",
        "permute": "ONNX Transpose of a 2-D weight where torch.compile folds it into addmm",
    }
    assert onnx_kinds - fx_kinds <= set(spelled_differently), (onnx_kinds, fx_kinds)
    torch._dynamo.reset()


def test_unsupported_ops_are_reported_together_with_node_names():
    m = model([helper.make_node("ImageDecoder", ["jpeg"], ["img"], name="decode_a"),
               helper.make_node("ImageDecoder", ["jpeg"], ["img2"], name="decode b"),
               helper.make_node("Add", ["img", "img2"], ["s"], name="sum"),
               helper.make_node("DFT", ["x"], ["f"], name="fourier")],
              [helper.make_tensor_value_info("jpeg", TensorProto.UINT8, [100]), f32("x", [1, 16, 1])],
              [helper.make_tensor_value_info("s", TensorProto.UINT8, ["h", "w", 3]), f32("f", [1, 16, 2])],
              opset=20)
    with pytest.raises(UnsupportedOpsError) as e:
        effc.compile(m)
    msg = str(e.value)
    assert "\n" not in msg
    assert "onnx.ImageDecoder" in msg and "'decode_a'" in msg and "'decode b'" in msg
    assert "'fourier'" in msg  # DFT works on complex numbers, which effc has no dtype for
    assert "'sum'" not in msg  # a consumer of a failed node is not reported again


def test_ops_onnx_defines_as_functions_are_expanded_when_torch_mlir_lacks_them():
    m = model([helper.make_node("Swish", ["x"], ["y"], alpha=1.5)], [f32("x", [2, 3])], [f32("y", [2, 3])], opset=24)
    m.ir_version = 11
    compiled = effc.compile(m)
    x = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(compiled.run({"x": x})["y"], x / (1 + np.exp(-1.5 * x)), rtol=1e-5)


def test_inputs_that_set_shapes_compile_per_value():
    # ReduceSum's axes come from an input, not an initializer: effc compiles per axes value
    m = model([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
              [f32("x", [2, 3, 4]), helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
              [f32("y", ["a", "b"])])
    compiled = effc.compile(m)
    assert compiled.value_inputs == ["axes"]
    with pytest.raises(UserError, match="run it once"):
        compiled.graph
    x = np.random.default_rng(0).random((2, 3, 4), dtype=np.float32)
    for axis in (0, 2, 1, 0):
        got = compiled.run({"x": x, "axes": np.array([axis], np.int64)})["y"]
        np.testing.assert_allclose(got, x.sum(axis), rtol=1e-6)
    assert len(compiled.variants) == 3 and len(compiled.explain().graphs) == 3


def test_a_model_that_crashes_torch_mlir_is_an_error_not_a_dead_process():
    m = model([helper.make_node("Unique", ["x"], ["u"], name="uniq")], [f32("x", [4])], [f32("u", [None])], opset=20)
    with pytest.raises(effc.CompileError, match="crashed \\(SIGSEGV\\)"):
        effc.compile(m)


def test_names_with_quotes_newlines_and_non_ascii_stay_out_of_the_ir():
    evil = ['x"; import os #', "y\n}\nreturn", "ζ√ 名前"]
    m = model([helper.make_node("Relu", [evil[0]], [evil[1]], name="n\"1;"),
               helper.make_node("Neg", [evil[1]], [evil[2]], name="n\n2")],
              [f32(evil[0], ["b;\"", 2])], [f32(evil[2], ["b;\"", 2])])
    compiled = effc.compile(m)
    text = str(compiled.graph)
    assert text.isascii() and '"; import' not in text and "\n}\nreturn" not in text
    assert [i.name for i in compiled.inputs] == [evil[0]]
    assert [o.name for o in compiled.outputs] == [evil[2]]
    x = np.array([[1.0, -2.0]], np.float32)
    np.testing.assert_array_equal(compiled.run({evil[0]: x})[evil[2]], -np.maximum(x, 0))
    from effc.ir.parser import parse_graph
    assert str(parse_graph(text, compiled.graph.constants)) == text


def test_run_rejects_wrong_inputs():
    compiled = effc.compile(mlp())
    with pytest.raises(InputError, match="missing input 'x'"):
        compiled.run({})
    with pytest.raises(InputError, match="unknown input 'z'"):
        compiled.run({"x": np.ones((1, 8), np.float32), "z": np.ones(1)})
    with pytest.raises(InputError, match="dtype"):
        compiled.run({"x": np.ones((1, 8), np.float64)})
    with pytest.raises(InputError, match="shape"):
        compiled.run({"x": np.ones((1, 9), np.float32)})
    with pytest.raises(InputError, match="expected f32 data"):
        compiled.run({"x": np.array([["a"] * 8])})


# ---- bad files: each a one-line ModelError, from path, bytes or proto ----

def _one_line_error(src, match):
    with pytest.raises(UserError, match=match) as e:
        effc.compile(src)
    assert "\n" not in str(e.value)


def test_missing_file_folder_and_empty_file(tmp_path):
    _one_line_error(str(tmp_path / "nope.onnx"), "no such file")
    _one_line_error(str(tmp_path), "is a folder")
    (tmp_path / "empty.onnx").write_bytes(b"")
    _one_line_error(str(tmp_path / "empty.onnx"), "is empty")


def test_truncated_and_non_onnx_files(tmp_path):
    data = mlp().SerializeToString()
    for cut in (len(data) // 2, len(data) - 3, 7):
        p = tmp_path / f"cut{cut}.onnx"
        p.write_bytes(data[:cut])
        _one_line_error(str(p), "not an ONNX model|invalid ONNX model")
    p = tmp_path / "text.onnx"
    p.write_text("hello, I am not a model\n" * 20)
    _one_line_error(str(p), "not an ONNX model")
    _one_line_error(os.urandom(64), "not an ONNX model")


def test_unknown_opset_domain():
    m = model([helper.make_node("Frob", ["x"], ["y"], domain="com.example")],
              [f32("x", [2])], [f32("y", [2])])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    _one_line_error(m, "unsupported opset domain 'com.example'")


def test_graph_with_a_cycle_or_a_dangling_input():
    cyc = model([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])],
                [f32("x", [2])], [f32("b", [2])])
    _one_line_error(cyc, "invalid ONNX model")
    dangling = model([helper.make_node("Add", ["x", "ghost"], ["y"])], [f32("x", [2])], [f32("y", [2])])
    _one_line_error(dangling, "invalid ONNX model.*ghost")


def _external_model(tmp_path, location):
    m = mlp()
    t = m.graph.initializer[0]
    raw = onnx.numpy_helper.to_array(t).tobytes()
    t.ClearField("float_data")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        e = t.external_data.add()
        e.key, e.value = k, v
    path = tmp_path / "model" / "ext.onnx"
    path.parent.mkdir(exist_ok=True)
    onnx.save(m, path)
    return path, raw


def test_external_data_inside_the_folder_loads(tmp_path):
    path, raw = _external_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(raw)
    x = np.ones((3, 8), np.float32)
    np.testing.assert_allclose(effc.compile(str(path)).run({"x": x})["y"],
                               effc.compile(mlp()).run({"x": x})["y"], rtol=1e-6)


@pytest.mark.parametrize("location,match", [
    ("../../etc/passwd", "outside the model's folder"),
    ("/etc/passwd", "must be a relative path"),
    ("missing.bin", "is missing"),
])
def test_external_data_outside_the_folder_or_missing(tmp_path, location, match):
    path, _ = _external_model(tmp_path, location)
    _one_line_error(str(path), match)


def test_external_data_shorter_than_declared(tmp_path):
    path, raw = _external_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(raw[:10])
    _one_line_error(str(path), "beyond the end")


def test_absurd_declared_sizes():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [f32("x", [1 << 50, 2])], [f32("y", [1 << 50, 2])])
    _one_line_error(m, "absurd size")
    m = model([helper.make_node("Relu", ["x"], ["y"])], [f32("x", [1 << 30, 1 << 30])], [f32("y", [1 << 30, 1 << 30])])
    _one_line_error(m, "elements")


def test_unsupported_element_types_are_refused_before_torch_mlir():
    # torch-mlir aborts the whole process on 4-bit types; effc must refuse them first
    m = model([helper.make_node("Identity", ["x"], ["y"])],
              [helper.make_tensor_value_info("x", TensorProto.UINT4, [4])],
              [helper.make_tensor_value_info("y", TensorProto.UINT4, [4])], opset=21)
    _one_line_error(m, "unsupported element types: 'x' \\(uint4\\)")


def test_effc_and_torch_compile_do_not_import_torch_mlir():
    code = ("import sys, torch, effc\n"
            "f = torch.compile(lambda x: x.relu() + 1, backend='effc')\n"
            "f(torch.randn(3))\n"
            "assert 'torch_mlir' not in sys.modules and 'onnx' not in sys.modules, 'imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_symbolic_sizes_flow_through_index_arithmetic():
    # Gather wraps negative indices with the symbolic axis size, and unflattens by the
    # symbolic index shape: both stay formulas over the input symbols
    m = model([helper.make_node("Gather", ["x", "i"], ["y"], axis=0)],
              [f32("x", ["n", 3]), helper.make_tensor_value_info("i", TensorProto.INT64, ["b", 2])],
              [f32("y", ["b", 2, 3])])
    compiled = effc.compile(m)
    assert {str(s) for s in compiled.graph.symbols()} == {"n", "b"}
    for n, idx in ((5, [[0, 4], [-1, 2], [1, -5]]), (2, [[1, -2]])):
        x = np.random.default_rng(n).random((n, 3), dtype=np.float32)
        i = np.array(idx, np.int64)
        np.testing.assert_array_equal(compiled.run({"x": x, "i": i})["y"], x[i])


def _matches_ort(m, feeds, rtol=1e-5, atol=1e-6):
    got = effc.compile(m).run(feeds)
    for (name, g), want in zip(got.items(), _ort(m, feeds)):
        assert g.dtype == want.dtype, name
        np.testing.assert_allclose(g, want, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("pads,include", [([0, 0, 1, 1], 0), ([1, 0, 2, 1], 1), ([2, 2, 2, 2], 0)])
def test_average_pool_with_asymmetric_or_wide_padding(pads, include):
    # torch pads symmetrically and at most half a window; effc pads explicitly instead
    m = model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=pads,
                                count_include_pad=include)],
              [f32("x", [1, 2, 5, 6])], [f32("y", [1, 2, "h", "w"])])
    _matches_ort(m, {"x": np.random.default_rng(1).random((1, 2, 5, 6), dtype=np.float32)})


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_nll_loss_over_spatial_dimensions_with_ignored_labels(reduction):
    m = model([helper.make_node("NegativeLogLikelihoodLoss", ["x", "t", "w"], ["y"],
                                reduction=reduction, ignore_index=1)],
              [f32("x", [2, 4, 3, 5]), helper.make_tensor_value_info("t", TensorProto.INT64, [2, 3, 5]),
               f32("w", [4])], [f32("y", [2, 3, 5] if reduction == "none" else [])])
    rng = np.random.default_rng(2)
    _matches_ort(m, {"x": rng.standard_normal((2, 4, 3, 5), dtype=np.float32),
                     "t": rng.integers(0, 4, (2, 3, 5)), "w": rng.random(4, dtype=np.float32)})


def test_recurrent_layers_are_unrolled():
    rng = np.random.default_rng(3)
    m = model([helper.make_node("GRU", ["x", "w", "r", "b"], ["y", "h"], hidden_size=5)],
              [f32("x", [4, 2, 3])], [f32("y", [4, 1, 2, 5]), f32("h", [1, 2, 5])],
              [init("w", rng.standard_normal((1, 15, 3)).astype(np.float32)),
               init("r", rng.standard_normal((1, 15, 5)).astype(np.float32)),
               init("b", rng.standard_normal((1, 30)).astype(np.float32))])
    _matches_ort(m, {"x": rng.standard_normal((4, 2, 3), dtype=np.float32)})


def test_integer_division_truncates_as_onnx_does():
    m = model([helper.make_node("Div", ["a", "b"], ["c"])],
              [helper.make_tensor_value_info(n, TensorProto.INT32, [4]) for n in "ab"],
              [helper.make_tensor_value_info("c", TensorProto.INT32, [4])])
    a, b = np.array([7, -7, 9, 1], np.int32), np.array([2, 2, -4, 3], np.int32)
    assert effc.compile(m).run({"a": a, "b": b})["c"].tolist() == [3, -3, -2, 0]
