"""The C target's whole-program cache ([Note: C program cache]): a second compile of the same
model, in a fresh process or not, loads the stored program instead of running the passes;
anything that changes the result misses; a damaged entry is rebuilt; the standalone export
is the same from a hit as from a compile."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import effc
import effc.program
from effc import debug
from effc.backends.c import program_cache
from effc.backends.c.build import compiler_available
from effc.backends.cache import BLOCK, prune, weights_digest
from effc.ir import DType, GraphBuilder, Op, TensorType, size_symbol
from effc.options import Options
from effc.passes import plan_memory

pytestmark = pytest.mark.skipif(not compiler_available(), reason="no C compiler")

SMALLNET = Path(__file__).resolve().parents[2] / "examples" / "smallnet.onnx"


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for this module: the shared objects built by one test serve the next."""
    return tmp_path_factory.mktemp("xdg")


@pytest.fixture
def cache(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The whole-program cache's folder, empty; counts the pipeline runs in ``runs``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    root = program_cache.cache_root()
    if root.exists():
        for entry in root.iterdir():
            program_cache.discard(entry, root)
    torch._dynamo.reset()
    return root


def entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 16)).eval()


def compile_c(model: torch.nn.Module, x: torch.Tensor, **options: object) -> tuple[torch.Tensor, object]:
    """Compile ``model`` for the C target with the cache on; its output on ``x`` and report."""
    torch._dynamo.reset()
    m = effc.compile(model, [x], target="c", cache=True, **options)
    return m(x), m.explain().graphs[-1]


X = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))

CHILD = """
import json, sys, torch, effc, effc.program as P
runs = []
run_pipeline = P.run_pipeline
P.run_pipeline = lambda *a, **k: runs.append(1) or run_pipeline(*a, **k)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 16)).eval()
x = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
m = effc.compile(model, [x], target="c", cache=True)
y = m(x)
ex = m.explain()
g = ex.graphs[-1]
passes = [dict(p.to_json(), seconds=None) for p in g.passes]
print(json.dumps({"y": y.tolist(), "runs": len(runs), "cache": g.cache, "passes": passes,
                  "text": str(ex), "fusion": g.fusion, "memory": g.memory, "ops": g.ops,
                  "python_kernels": g.python_kernels, "nodes": [g.nodes_in, g.nodes_out]}))
"""


def run_child(cache_home: Path) -> dict:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_home), EFFC_LOG="error")
    p = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_a_fresh_process_loads_the_program_without_running_the_passes(cache: Path, cache_home: Path) -> None:
    first = run_child(cache_home)
    assert first["runs"] == 1 and first["cache"]["hit"] is False
    assert Path(first["cache"]["entry"]).is_dir()
    second = run_child(cache_home)
    assert second["runs"] == 0, "a hit runs no pass"
    assert second["cache"]["hit"] is True and second["cache"]["key"] == first["cache"]["key"]
    assert second["y"] == first["y"]            # the same program: the same bits
    # the report is the first compile's, and says where it came from
    for k in ("passes", "fusion", "memory", "ops", "python_kernels", "nodes"):
        assert second[k] == first[k], k
    assert "loaded from cache" in second["text"] and "loaded from cache" not in first["text"]
    assert second["cache"]["first_compile_seconds"] > 0


def test_changing_one_weight_value_misses_and_computes_with_the_new_weight(cache: Path) -> None:
    model = mlp()
    y0, g0 = compile_c(model, X)
    assert g0.cache["hit"] is False
    y1, g1 = compile_c(model, X)
    assert g1.cache["hit"] is True and torch.equal(y0, y1)
    with torch.no_grad():
        w = model[2].weight
        w[3, 5] = torch.nextafter(w[3, 5], torch.tensor(1.0))    # the smallest possible change
        expected = model(X)
    y2, g2 = compile_c(model, X)
    assert g2.cache["hit"] is False and g2.cache["key"] != g0.cache["key"]
    torch.testing.assert_close(y2, expected)
    assert len(entries(cache)) == 2


def test_an_option_or_an_input_shape_misses(cache: Path) -> None:
    model = mlp()
    _, base = compile_c(model, X)
    _, again = compile_c(model, X, verify=False, explain=True)      # change nothing compiled
    assert again.cache["hit"] is True
    _, other = compile_c(model, X, disable_passes=["eliminate_common_subexpressions"])
    assert other.cache["hit"] is False
    x = torch.randn(6, 32)
    y, shaped = compile_c(model, x)
    assert shaped.cache["hit"] is False
    with torch.no_grad():
        torch.testing.assert_close(y, model(x))
    assert len({base.cache["key"], other.cache["key"], shaped.cache["key"]}) == 3


def test_the_cache_can_be_turned_off(cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch._dynamo.reset()
    m = effc.compile(mlp(), [X], target="c", cache=False)
    assert m.explain().graphs[-1].cache == {} and not entries(cache)
    monkeypatch.setattr(debug, "CACHE", False)    # what EFFC_CACHE=0 sets
    assert Options().cache is False
    monkeypatch.setattr(debug, "CACHE", True)
    assert Options().cache is True
    # dumps need the passes to run: a dump folder bypasses the cache
    torch._dynamo.reset()
    m = effc.compile(mlp(), [X], target="c", cache=True, dump_dir=str(tmp_path / "dumps"))
    assert m.explain().graphs[-1].cache == {} and not entries(cache)
    assert any((tmp_path / "dumps").iterdir())


def _truncate(entry: Path) -> None:
    w = entry / "weights.bin"
    w.write_bytes(w.read_bytes()[:-100])


def _zero_weights(entry: Path) -> None:
    w = entry / "weights.bin"
    w.write_bytes(bytes(w.stat().st_size))


def _garble_program(entry: Path) -> None:
    p = entry / "program.pkl"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def _drop_stamp(entry: Path) -> None:
    (entry / "stamp.json").unlink()


def _bad_pickle_good_stamp(entry: Path) -> None:
    """A program that passes the stamp check but does not load."""
    import hashlib
    data = pickle.dumps({"graph": None})
    (entry / "program.pkl").write_bytes(data)
    stamp = json.loads((entry / "stamp.json").read_text())
    stamp["program_sha256"] = hashlib.sha256(data).hexdigest()
    (entry / "stamp.json").write_text(json.dumps(stamp))


@pytest.mark.parametrize("damage", [_truncate, _zero_weights, _garble_program, _drop_stamp, _bad_pickle_good_stamp])
def test_a_damaged_entry_is_rebuilt(cache: Path, damage) -> None:
    model = mlp()
    y0, g0 = compile_c(model, X)
    entry = Path(g0.cache["entry"])
    assert (entry / "weights.bin").stat().st_size > 0, "the packed weights are stored"
    damage(entry)
    y1, g1 = compile_c(model, X)
    assert g1.cache["hit"] is False and g1.cache["entry"] == str(entry)
    assert torch.equal(y0, y1)
    y2, g2 = compile_c(model, X)
    assert g2.cache["hit"] is True and torch.equal(y0, y2)


def test_an_unwritable_cache_only_costs_the_next_compile(cache: Path, cache_home: Path) -> None:
    shutil.rmtree(cache, ignore_errors=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("not a folder")       # the programs folder cannot be made
    try:
        y, g = compile_c(mlp(), X)
        assert g.cache["hit"] is False and g.cache["entry"] is None
        with torch.no_grad():
            torch.testing.assert_close(y, mlp()(X))
    finally:
        cache.unlink()


def test_the_standalone_export_is_the_same_from_a_hit(cache: Path, tmp_path: Path) -> None:
    from effc.standalone import write_standalone
    options = Options(target="c", cache=True)
    write_standalone(SMALLNET, tmp_path / "a", options, embed_weights=False, force=False)
    assert len(entries(cache)) == 1
    entry = entries(cache)[0]
    stamp_time = (entry / "stamp.json").stat().st_mtime_ns
    write_standalone(SMALLNET, tmp_path / "b", options, embed_weights=False, force=False)
    assert (entry / "stamp.json").stat().st_mtime_ns >= stamp_time and len(entries(cache)) == 1
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_an_onnx_model_with_symbolic_sizes_hits(cache: Path) -> None:
    from effc.onnx_model import compile_onnx
    options = Options(target="c", cache=True)
    x = torch.randn(3, 3, 32, 32).numpy()
    first = compile_onnx(SMALLNET, options)
    second = compile_onnx(SMALLNET, options)
    assert first.report.cache["hit"] is False and second.report.cache["hit"] is True
    assert second.graph.symbols(), "the batch size stays a symbol"
    a, b = first.run({"image": x}), second.run({"image": x})
    assert all((a[k] == b[k]).all() for k in a)


# -- the key ----------------------------------------------------------------------------------

def _graph(shape: tuple = (8, 16), weight: torch.Tensor | None = None, name: str = "w"):
    b = GraphBuilder()
    x = b.input("x", TensorType(DType.F32, shape))
    w = b.constant(torch.arange(16 * 4, dtype=torch.float32).reshape(16, 4) if weight is None else weight, name)
    return b.build([b.op(Op.RELU, [b.op(Op.MATMUL, [x, w])])])


def test_the_key_covers_graph_weights_and_options_but_not_debug_switches() -> None:
    opts = Options(target="c")
    key = program_cache.program_key(_graph(), opts)
    assert program_cache.program_key(_graph(), opts) == key
    assert program_cache.program_key(_graph(), opts.replace(verify=not opts.verify, explain=True, cache=False)) == key
    w = torch.arange(16 * 4, dtype=torch.float32).reshape(16, 4)
    w[15, 3] = 63.000004
    # the values count, not how they are laid out in memory
    assert program_cache.program_key(_graph(weight=w.t().contiguous().t()), opts) == \
        program_cache.program_key(_graph(weight=w), opts)
    others = [
        program_cache.program_key(_graph(weight=w), opts),
        program_cache.program_key(_graph(name="v"), opts),
        program_cache.program_key(_graph(shape=(9, 16)), opts),
        program_cache.program_key(_graph(shape=(size_symbol("s0"), 16)), opts),
        program_cache.program_key(_graph(), opts.replace(size_hints={"s0": 3})),
        program_cache.program_key(_graph(), opts.replace(memory_budget="1MiB")),
        program_cache.program_key(_graph(), opts.replace(disable_passes=("fuse",))),
    ]
    assert len({key, *others}) == len(others) + 1


def test_weights_digest_sees_every_block_and_the_layout() -> None:
    big = torch.zeros(BLOCK // 4 * 2 + 7)          # three blocks, the last one short
    base = weights_digest({"a": big})
    for at in (0, BLOCK // 4 - 1, BLOCK // 4, big.numel() - 1):
        changed = big.clone()
        changed[at] = 1e-30
        assert weights_digest({"a": changed}) != base, at
    assert weights_digest({"a": big.view(torch.int32)}) != base
    assert weights_digest({"a": big[:-1]}) != base
    assert weights_digest({"b": big}) != base
    assert weights_digest({"a": big.clone()}) == base
    assert weights_digest({"a": torch.zeros(2, 3)}) != weights_digest({"a": torch.zeros(3, 2)})
    assert weights_digest({"a": torch.tensor(1.5)}) == weights_digest({"a": torch.tensor(1.5)})
    assert weights_digest({"a": torch.zeros(0)}) != weights_digest({"a": torch.zeros(0, 2)})


# -- pieces -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(8, 16), (size_symbol("s0"), 16)])
def test_a_memory_plan_pickles_with_its_evaluator(shape: tuple) -> None:
    g = _graph(shape)
    p = plan_memory.plan(g, {size_symbol("s0"): 8})
    q = pickle.loads(pickle.dumps(p))
    env = {s: 5 for s in p.symbols}
    assert q.evaluate(env) == p.evaluate(env) and q.strategy == p.strategy
    assert q.buffer_of(q.graph.nodes[-1].output).index == p.buffer_of(g.nodes[-1].output).index


def test_prune_removes_the_least_recently_used_entries(tmp_path: Path) -> None:
    now = time.time()
    for i, name in enumerate(["old", "mid", "new"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights.bin").write_bytes(bytes(1000))
        (tmp_path / name / "stamp.json").write_text("{}")
        os.utime(tmp_path / name / "stamp.json", (now - 100 + i, now - 100 + i))
    (tmp_path / ".tmp-building").mkdir()          # a staging folder is not an entry
    removed = prune(tmp_path, 2500, keep=tmp_path / "old")
    assert [p.name for p in removed] == ["mid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-building", "new", "old"]
    assert prune(tmp_path, 10_000) == []
