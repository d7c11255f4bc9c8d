"""effc compile: the artifact folder's contents, --force, atomic writes, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from cli_util import WEIRD_IN, WEIRD_OUT, assert_user_error, effc, listing

import effc as effc_pkg
from effc import artifact
from effc.passes import PASS_NAMES

FIXED_FILES = {"manifest.json", "model.effc", "source.effc", "weights.bin", "passes", "sources",
               "passes/00_input.txt", "passes/passes.json"} | {
    f"passes/{i:02d}_{name}.txt" for i, name in enumerate(PASS_NAMES, start=1)}


def test_compile_writes_the_artifact(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    r = effc("compile", models["mlp"], "-o", out)
    assert r.code == 0, r
    assert listing(out) == FIXED_FILES
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "effc-artifact" and m["format_version"] == 1
    assert m["effc_version"] == effc_pkg.__version__
    assert m["model"]["file"] == "mlp.onnx"
    assert m["model"]["sha256"] == hashlib.sha256(models["mlp"].read_bytes()).hexdigest()
    assert m["options"] == {"target": "auto", "disable_passes": [], "training": "compile",
                            "memory_budget": None}
    assert m["target"] == "reference"
    assert m["inputs"] == [{"name": "x", "dtype": "f32", "shape": ["batch", 4]}]
    assert m["outputs"] == [{"name": "y", "dtype": "f32", "shape": ["batch", 3]}]
    assert m["sources"]["files"] == [] and "no kernel sources" in m["sources"]["note"]
    # every file but the manifest is listed with its size and hash
    listed = {f["path"]: f for f in m["files"]}
    assert set(listed) == {p for p in FIXED_FILES if (out / p).is_file()} - {"manifest.json"}
    for path, f in listed.items():
        data = (out / path).read_bytes()
        assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    # the IR files are the final and the imported graph
    assert "relu(" in (out / "model.effc").read_text()
    assert (out / "passes" / "00_input.txt").read_text() == (out / "source.effc").read_text()


def test_weights_are_raw_aligned_bytes(models: dict[str, Path], tmp_path: Path) -> None:
    import numpy as np

    out = tmp_path / "gemm"
    assert effc("compile", models["gemm"], "-o", out).code == 0
    m = json.loads((out / "manifest.json").read_text())
    index = m["weights"]["tensors"]
    blob = (out / "weights.bin").read_bytes()
    assert m["weights"]["alignment"] == 64 and index
    for e in index:
        assert e["offset"] % 64 == 0 and e["offset"] + e["nbytes"] <= len(blob)
    c = next(e for e in index if e["name"] == "c")
    assert (c["dtype"], c["shape"], c["nbytes"]) == ("f32", [3], 12)
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4", count=3, offset=c["offset"]), np.ones(3))
    # the importer may keep gemm's transposed weight as [3, 5] or fold it into [5, 3]
    w = next(e for e in index if sorted(e["shape"]) == [3, 5])
    got = np.frombuffer(blob, "<f4", count=15, offset=w["offset"]).reshape(w["shape"])
    want = np.linspace(-1, 1, 15, dtype=np.float32).reshape(3, 5)
    np.testing.assert_array_equal(got, want if w["shape"] == [3, 5] else want.T)
    assert b"pickle" not in blob and not any(p.suffix in (".pt", ".pkl") for p in out.rglob("*"))


def test_model_names_stay_in_json(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "weird"
    r = effc("compile", models["weird"], "-o", out)
    assert r.code == 0, r
    assert listing(out) == FIXED_FILES
    m = json.loads((out / "manifest.json").read_text())
    assert m["inputs"][0]["name"] == WEIRD_IN and m["outputs"][0]["name"] == WEIRD_OUT
    assert m["inputs"][0]["shape"] == ["n", 3]
    assert (out / "manifest.json").read_bytes().isascii()   # names are escaped JSON strings
    for p in out.rglob("*.effc"):
        text = p.read_text()
        assert '"q"' not in text and "ä" not in text and "ÿ" not in text


def test_existing_output_needs_force(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "a"
    assert effc("compile", models["mlp"], "-o", out).code == 0
    before = (out / "manifest.json").read_bytes()
    assert_user_error(effc("compile", models["gemm"], "-o", out), "already exists", "--force")
    assert (out / "manifest.json").read_bytes() == before
    r = effc("compile", models["gemm"], "-o", out, "--force")
    assert r.code == 0, r
    assert json.loads((out / "manifest.json").read_text())["model"]["file"] == "gemm.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]   # no temporary folders left


def test_force_never_replaces_a_foreign_folder(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert_user_error(effc("compile", models["mlp"], "-o", out, "--force"), "not an effc artifact")
    assert (out / "notes.txt").read_text() == "keep me"
    f = tmp_path / "file"
    f.write_text("x")
    assert_user_error(effc("compile", models["mlp"], "-o", f, "--force"), "not a folder")


def test_missing_parent_folders_are_created(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "build" / "deep" / "mlp"
    assert effc("compile", models["mlp"], "-o", out).code == 0
    assert (out / "model.effc").is_file()


@pytest.mark.parametrize("force", [False, True])
def test_failure_mid_write_leaves_nothing(models: dict[str, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, force: bool) -> None:
    out = tmp_path / "sub" / "out"
    if force:
        assert effc("compile", models["gemm"], "-o", out).code == 0
        before = listing(out), (out / "manifest.json").read_bytes()

    def broken(path: Path, tensors: object) -> list:
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifact, "_write_weights", broken)
    r = effc("compile", models["mlp"], "-o", out, *(["--force"] if force else []))
    assert r.code == 1 and "internal error" in r.stderr, r
    if force:   # the old artifact is untouched, and nothing else is left beside it
        assert (listing(out), (out / "manifest.json").read_bytes()) == before
        assert [p.name for p in out.parent.iterdir()] == ["out"]
    else:       # not even the parent folder it created
        assert list(tmp_path.iterdir()) == []


def _no_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    import effc.backends.triton as triton_backend
    monkeypatch.setattr(triton_backend, "triton_available", lambda: False)


def test_failure_in_the_frontend_leaves_nothing(models: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _no_triton(monkeypatch)
    out = tmp_path / "new" / "x"
    assert_user_error(effc("compile", models["mlp"], "-o", out, "--target", "triton"), "needs the triton package")
    assert list(tmp_path.iterdir()) == []


def test_unavailable_targets(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_triton(monkeypatch)
    assert_user_error(effc("compile", models["mlp"], "-o", tmp_path / "o", "--target", "triton"),
                      "target 'triton' needs the triton package")
    assert not (tmp_path / "o").exists()


def test_target_triton_writes_its_kernels_and_runs(models: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import torch
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    if not torch.cuda.is_available():   # tests/conftest.py set it before triton was imported
        assert os.environ.get("TRITON_INTERPRET") == "1"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "t"
    r = effc("compile", models["mlp"], "-o", out, "--target", "triton")
    assert r.code == 0, r
    m = json.loads((out / "manifest.json").read_text())
    assert m["target"] == "triton" and m["sources"]["files"], m["sources"]
    assert all(f.endswith(".py") and "@triton.jit" in (out / "sources" / f).read_text()
               for f in m["sources"]["files"])
    r = effc("run", out, "--dim", "batch=3")
    assert r.code == 0, r


def test_target_c_writes_the_generated_source(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "c"
    r = effc("compile", models["mlp"], "-o", out, "--target", "c")
    assert r.code == 0, r
    m = json.loads((out / "manifest.json").read_text())
    assert m["target"] == "c" and m["sources"]["files"] == ["model.c"]
    assert "int effc_run(" in (out / "sources" / "model.c").read_text()
    r = effc("run", out, "--dim", "batch=3")
    assert r.code == 0, r


@pytest.mark.parametrize("target", ["reference", "auto"])
def test_available_targets(models: dict[str, Path], tmp_path: Path, target: str) -> None:
    r = effc("compile", models["mlp"], "-o", tmp_path / "o", "--target", target)
    assert r.code == 0, r
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["options"]["target"] == target


def test_disable_pass_is_recorded(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = effc("compile", models["mlp"], "-o", out, "--disable-pass", "fold_constants",
             "--disable-pass", "simplify")
    assert r.code == 0, r
    m = json.loads((out / "manifest.json").read_text())
    assert m["options"]["disable_passes"] == ["fold_constants", "simplify"]
    records = {p["name"]: p for p in json.loads((out / "passes" / "passes.json").read_text())}
    assert records["fold_constants"]["skipped"] and records["simplify"]["skipped"]
    assert not (out / "passes" / "01_simplify.txt").exists()


@pytest.mark.parametrize("case, args, fragment", [
    ("missing file", ["{tmp}/nope.onnx"], "no such file"),
    ("a folder", ["{tmp}"], "is a folder"),
    ("truncated", ["{truncated}"], "truncated.onnx"),
    ("not onnx", ["{text}"], "text.onnx"),
    ("unknown pass", ["{mlp}", "--disable-pass", "fuse_everything"], "unknown pass fuse_everything"),
    ("unknown target", ["{mlp}", "--target", "gpu"], "unknown target 'gpu'"),
])
def test_bad_input(models: dict[str, Path], tmp_path: Path, case: str, args: list[str],
                   fragment: str) -> None:
    fill = {k: str(v) for k, v in models.items()} | {"tmp": str(tmp_path)}
    out = tmp_path / "out"
    r = effc("compile", *[a.format(**fill) for a in args], "-o", out)
    assert_user_error(r, fragment)
    assert listing(tmp_path) == set()


def test_internal_errors_show_a_traceback_only_with_v(models: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(artifact, "write_into", broken)
    r = effc("compile", models["mlp"], "-o", tmp_path / "o")
    assert r.code == 1 and r.stderr.splitlines() == [
        "effc: internal error: ZeroDivisionError: a bug (run with -v for the traceback)"], r
    r = effc("-v", "compile", models["mlp"], "-o", tmp_path / "o")
    assert r.code == 1 and "Traceback" in r.stderr and "ZeroDivisionError: a bug" in r.stderr, r
    assert list(tmp_path.iterdir()) == []


def test_explain_lists_the_kernels_a_c_program_runs_in_python(tmp_path: Path) -> None:
    from onnx import TensorProto, helper
    from cli_util import save_model
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    axis = helper.make_tensor("axis", TensorProto.INT64, [], [1])
    nodes = [helper.make_node("Exp", ["x"], ["e"]), helper.make_node("CumSum", ["e", "axis"], ["y"])]
    model = save_model(helper.make_graph(nodes, "scan", [x], [y], [axis]), tmp_path / "scan.onnx")
    r = effc("explain", model, "--target", "c")
    assert r.code == 0, r
    assert "kernels run in Python" in r.stdout and "cumsum" in r.stdout
    r = effc("explain", model, "--target", "c", "--json")
    g = json.loads(r.stdout)["graphs"][0]
    assert any("cumsum" in k for k in g["python_kernels"]), g["python_kernels"]
