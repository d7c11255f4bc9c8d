"""effc run: artifact folders and ONNX files, npz inputs and outputs, damaged artifacts."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_util import WEIRD_IN, WEIRD_OUT, assert_user_error, effc

from effc.cli.npz import read_npz, write_npz
from effc.onnx_model import compile_onnx
from effc.options import Options


def test_run_artifact_matches_in_memory_compile(models: dict[str, Path], artifact: dict[str, Path],
                                                tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    write_npz(tmp_path / "in.npz", {"x": x})
    r = effc("run", artifact["mlp"], "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "out.npz")
    assert r.code == 0, r
    got = read_npz(tmp_path / "out.npz")
    want = compile_onnx(models["mlp"], Options()).run({"x": x})
    assert list(got) == ["y"] and got["y"].dtype == np.float32
    np.testing.assert_array_equal(got["y"], want["y"])
    # the same again straight from the .onnx file
    r = effc("run", models["mlp"], "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "o2.npz")
    assert r.code == 0, r
    np.testing.assert_array_equal(read_npz(tmp_path / "o2.npz")["y"], want["y"])


def test_run_prints_a_summary_of_random_outputs(artifact: dict[str, Path]) -> None:
    r = effc("run", artifact["mlp"], "--dim", "batch=7", "--seed", "3")
    assert r.code == 0, r
    for text in ("y", "float32", "[7, 3]", "min", "max", "mean", "NaN/Inf", "batch=7"):
        assert text in r.stdout, r


def test_random_inputs_follow_the_seed(artifact: dict[str, Path], tmp_path: Path) -> None:
    outs = []
    for seed, name in ((1, "a"), (1, "b"), (2, "c")):
        r = effc("run", artifact["mlp"], "--seed", seed, "--dim", "batch=4", "--outputs", tmp_path / f"{name}.npz")
        assert r.code == 0, r
        outs.append(read_npz(tmp_path / f"{name}.npz")["y"])
    assert outs[0].shape == (4, 3)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_quiet_prints_nothing(artifact: dict[str, Path]) -> None:
    r = effc("-q", "run", artifact["mlp"])
    assert r.code == 0 and r.stdout == "" and r.stderr == "", r


def test_weird_names_round_trip(models: dict[str, Path], artifact: dict[str, Path], tmp_path: Path) -> None:
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    write_npz(tmp_path / "in.npz", {WEIRD_IN: x})
    r = effc("run", artifact["weird"], "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "out.npz")
    assert r.code == 0, r
    assert "out 'x';\\nÿ" in r.stdout      # the newline is shown escaped, on one row
    got = read_npz(tmp_path / "out.npz")
    assert list(got) == [WEIRD_OUT]
    np.testing.assert_array_equal(got[WEIRD_OUT], np.maximum(x, 0) + x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "mlp", "out.npz", "weird"]


def test_npz_keys_that_numpy_savez_rejects(tmp_path: Path) -> None:
    arrays = {"file": np.zeros(2), "allow_pickle": np.ones(1, np.int64), "a/b": np.eye(2)}
    write_npz(tmp_path / "k.npz", arrays)
    back = read_npz(tmp_path / "k.npz")
    assert list(back) == list(arrays)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])


@pytest.mark.parametrize("damage, fragment", [
    ("flip weights", "weights.bin does not match its sha256"),
    ("truncate ir", "model.effc has"),
    ("delete ir", "model.effc is missing"),
    ("edit manifest", "manifest.json cannot be read"),
    ("drop manifest", "not an effc artifact"),
    ("future format", "format version 99"),
    ("escape path", "outside the folder"),
])
def test_damaged_artifact_is_a_clear_error(artifact: dict[str, Path], damage: str, fragment: str) -> None:
    d = artifact["mlp"]
    manifest = json.loads((d / "manifest.json").read_text())
    if damage == "flip weights":
        data = bytearray((d / "weights.bin").read_bytes())
        data[3] ^= 0x40
        (d / "weights.bin").write_bytes(bytes(data))
    elif damage == "truncate ir":
        text = (d / "model.effc").read_text()
        (d / "model.effc").write_text(text[: len(text) // 2])
    elif damage == "delete ir":
        (d / "model.effc").unlink()
    elif damage == "edit manifest":
        (d / "manifest.json").write_text((d / "manifest.json").read_text()[:-20])
    elif damage == "drop manifest":
        (d / "manifest.json").unlink()
    elif damage == "future format":
        manifest["format_version"] = 99
        (d / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "escape path":
        manifest["files"][0]["path"] = "../../etc/passwd"
        (d / "manifest.json").write_text(json.dumps(manifest))
    assert_user_error(effc("run", d), fragment)


def test_manifest_shapes_are_never_evaluated(artifact: dict[str, Path]) -> None:
    d = artifact["mlp"]
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["inputs"][0]["shape"] = ["__import__('os').system('false')", 4]
    (d / "manifest.json").write_text(json.dumps(manifest))
    assert_user_error(effc("run", d), "malformed")


def test_compile_options_do_not_apply_to_artifacts(artifact: dict[str, Path]) -> None:
    assert_user_error(effc("run", artifact["mlp"], "--target", "reference"), "artifact folder")


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    write_npz(path, arrays)
    return path


@pytest.mark.parametrize("case, fragment", [
    ("not a zip", "not an .npz file"),
    ("missing file", "no such file"),
    ("missing input", "missing input 'x'"),
    ("unknown input", "unknown input 'z'"),
    ("wrong dtype", "dtype float64"),
    ("wrong rank", "shape [4]"),
    ("wrong size", "shape [2, 5]"),
    ("disagrees with --dim", "size batch is 3"),
    ("pickled object", "cannot read the arrays"),
])
def test_bad_npz_inputs(artifact: dict[str, Path], tmp_path: Path, case: str, fragment: str) -> None:
    p = tmp_path / "in.npz"
    extra: list[str] = []
    x = np.zeros((2, 4), np.float32)
    if case == "not a zip":
        p.write_text("hello")
    elif case == "missing file":
        p = tmp_path / "nope.npz"
    elif case == "missing input":
        _npz(p)
    elif case == "unknown input":
        _npz(p, x=x, z=x)
    elif case == "wrong dtype":
        _npz(p, x=x.astype(np.float64))
    elif case == "wrong rank":
        _npz(p, x=np.zeros(4, np.float32))
    elif case == "wrong size":
        _npz(p, x=np.zeros((2, 5), np.float32))
    elif case == "disagrees with --dim":
        _npz(p, x=x)
        extra = ["--dim", "batch=3"]
    elif case == "pickled object":
        np.savez(p, x=np.array([{"a": 1}], dtype=object))
    out = tmp_path / "out.npz"
    assert_user_error(effc("run", artifact["mlp"], "--inputs", p, "--outputs", out, *extra), fragment)
    assert not out.exists()
    assert zipfile.is_zipfile(p) or case in ("not a zip", "missing file")


@pytest.mark.parametrize("dim, fragment", [
    ("batch", "expected NAME=SIZE"),
    ("batch=x", "expected NAME=SIZE"),
    ("batch=0", "at least 1"),
    ("=3", "expected NAME=SIZE"),
    ("seq=4", "no size of that name; its sizes: batch"),
])
def test_bad_dims(artifact: dict[str, Path], dim: str, fragment: str) -> None:
    assert_user_error(effc("run", artifact["mlp"], "--dim", dim), fragment)


def test_bad_run_targets(models: dict[str, Path], tmp_path: Path) -> None:
    assert_user_error(effc("run", tmp_path / "missing.onnx"), "no such file")
    assert_user_error(effc("run", tmp_path), "not an effc artifact")
    assert_user_error(effc("run", models["truncated"]), "truncated.onnx")
    assert_user_error(effc("run", models["text"]), "text.onnx")


def test_unsigned_inputs_and_outputs_keep_their_type_through_an_artifact(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    from cli_util import save_model
    u32 = TensorProto.UINT32
    graph = helper.make_graph([helper.make_node("Sub", ["a", "b"], ["d"])], "g",
                              [helper.make_tensor_value_info(n, u32, [3]) for n in "ab"],
                              [helper.make_tensor_value_info("d", u32, [3])])
    model = save_model(graph, tmp_path / "u.onnx")
    r = effc("compile", model, "-o", tmp_path / "art")
    assert r.code == 0, r
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert [s.get("wire") for s in manifest["inputs"] + manifest["outputs"]] == ["uint32"] * 3
    a, b = np.array([5, 0, 7], np.uint32), np.array([3, 1, 7], np.uint32)
    write_npz(tmp_path / "in.npz", {"a": a, "b": b})
    r = effc("run", tmp_path / "art", "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "out.npz")
    assert r.code == 0, r
    got = read_npz(tmp_path / "out.npz")["d"]
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, a - b)  # 0 - 1 wraps to 2**32 - 1
    write_npz(tmp_path / "bad.npz", {"a": a.astype(np.int64), "b": b})
    assert_user_error(effc("run", tmp_path / "art", "--inputs", tmp_path / "bad.npz"), "expects uint32")
