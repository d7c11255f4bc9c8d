"""The artifact folder ``effc compile`` writes, and reading it back.

    model.effc      the final IR text (what runs)
    source.effc     the IR as imported, before passes (for reading; its weights are not kept)
    passes/         the IR after every pass and passes.json (the pass manager's dumps)
    sources/        generated kernel sources (none for the reference target)
    weights.bin     the constants of model.effc: raw little-endian bytes, each at a 64-byte offset
    manifest.json   versions, the model file's sha256, options, inputs and outputs, the weights
                    index, and every other file with its size and sha256

[Note: artifact safety]
Nothing is pickled: weights are raw bytes located by the JSON index, IR is text read by the IR
parser, which never evaluates what it reads. Names from the model (inputs, outputs) live only
as JSON strings in the manifest; every file name in the folder is chosen by effc. Writing is
atomic: the folder is built in a temporary sibling and renamed into place at the end, so a
failure leaves nothing behind. Reading checks every listed file's size and sha256 before use,
and validates the manifest's shapes with the IR's size parser before anything computes with
them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from effc.errors import UserError
from effc.options import Options

if TYPE_CHECKING:
    import torch

    from effc.onnx_model import OnnxModel, TensorSpec

FORMAT = "effc-artifact"
FORMAT_VERSION = 1
ALIGN = 64
MANIFEST = "manifest.json"
MODEL_IR = "model.effc"
SOURCE_IR = "source.effc"
WEIGHTS = "weights.bin"
PASSES = "passes"
SOURCES = "sources"
_CHUNK = 1 << 20


class ArtifactError(UserError):
    """An artifact folder that is missing, damaged, tampered with or of another format."""


# ---------------------------------------------------------------------------------- writing

def compile_to(model_path: str | os.PathLike, out: str | os.PathLike, options: Options,
               *, force: bool = False) -> "OnnxModel":
    """Compile the ONNX file ``model_path`` and write its artifact folder at ``out``."""
    from effc.onnx_model import compile_onnx

    out = Path(out)
    check_destination(out, force)
    model_path = Path(model_path)
    with staging(out, force) as tmp:
        source = {"file": model_path.name, "sha256": file_sha256(model_path),
                  "bytes": model_path.stat().st_size}
        dumps = tmp / "_dumps"
        model = compile_onnx(model_path, options.replace(dump_dir=str(dumps)))
        write_into(tmp, model, options, source=source, pass_dumps=dumps)
    return model


def check_destination(out: Path, force: bool) -> None:
    """An existing ``out`` is an error, unless ``force`` and it is an artifact folder (or an
    empty one): ``--force`` must never delete a folder effc did not write."""
    if not os.path.lexists(out):
        return
    if not force:
        raise UserError(f"{out} already exists; pass --force to replace it")
    if out.is_symlink() or not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; refusing to replace it")
    if any(out.iterdir()) and not _is_artifact(out):
        raise UserError(f"{out} exists and is not an effc artifact folder; refusing to replace it")


@contextmanager
def staging(out: Path, force: bool) -> Iterator[Path]:
    """A temporary sibling of ``out`` to build in; renamed to ``out`` when the block succeeds,
    removed (with any parent folders it had to create) when it fails."""
    out = Path(os.path.abspath(out))
    created = _make_parents(out.parent)
    tmp: Path | None = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".effc-tmp", dir=out.parent))
        yield tmp
        _commit(tmp, out, force)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                break
        raise


def write_into(folder: Path, model: "OnnxModel", options: Options, *,
               source: Mapping[str, Any] | None, pass_dumps: Path | None) -> dict[str, Any]:
    """Write every file of the artifact into ``folder`` (manifest last) and return the manifest."""
    import torch

    from effc.ir import Op

    (folder / MODEL_IR).write_text(str(model.graph), encoding="utf-8")
    if model.source_graph is not None:
        (folder / SOURCE_IR).write_text(str(model.source_graph), encoding="utf-8")
    _collect_dumps(pass_dumps, folder / PASSES)
    (folder / SOURCES).mkdir()
    generated = getattr(getattr(getattr(model, "program", None), "program", None), "source", None)
    if isinstance(generated, str):   # the C target: the translation unit that was built
        (folder / SOURCES / "model.c").write_text(generated, encoding="utf-8")
    triton_kernels = getattr(getattr(getattr(model, "program", None), "program", None), "named_sources", None)
    if isinstance(triton_kernels, dict):   # the Triton target: one module per generated kernel
        for kname, text in triton_kernels.items():
            (folder / SOURCES / f"{kname}.py").write_text(text, encoding="utf-8")
    used = [n.attrs["name"] for n in model.graph.nodes if n.op is Op.CONSTANT]
    weights = {name: model.graph.constants[name] for name in dict.fromkeys(used)}
    index = _write_weights(folder / WEIGHTS, weights)
    target = model.report.target
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "effc_version": _effc_version(),
        "torch_version": torch.__version__,
        "model": dict(source) if source else None,
        "label": model.report.label,
        "options": options_json(options),
        "target": target,
        "inputs": [_spec_json(s) for s in model.inputs],
        "outputs": [_spec_json(s) for s in model.outputs],
        "ir": {"model": MODEL_IR, "source": SOURCE_IR if model.source_graph is not None else None,
               "source_note": "the imported IR before passes; its weights are not stored"},
        "passes": PASSES + "/",
        "sources": {"folder": SOURCES + "/", "files": sorted(p.name for p in (folder / SOURCES).iterdir()),
                    "note": f"the {target} target runs each IR node with a torch op and "
                            "generates no kernel sources" if target == "reference" else ""},
        "weights": {"file": WEIGHTS, "byte_order": "little", "alignment": ALIGN, "tensors": index},
        "files": _file_list(folder),
    }
    _write_json(folder / MANIFEST, manifest)
    return manifest


def options_json(options: Options) -> dict[str, Any]:
    """The options that shape the compiled result (the dump folder is a build detail)."""
    return {"target": options.target, "disable_passes": list(options.disable_passes),
            "training": options.training, "memory_budget": options.memory_budget}


def _write_weights(path: Path, tensors: Mapping[str, "torch.Tensor"]) -> list[dict[str, Any]]:
    from effc.ir import DType

    index: list[dict[str, Any]] = []
    offset = 0
    with open(path, "wb") as f:
        for name, t in tensors.items():
            data = tensor_bytes(t)
            pad = -offset % ALIGN
            f.write(b"\0" * pad)
            offset += pad
            f.write(data)
            index.append({"name": name, "dtype": DType.from_torch(t.dtype).value,
                          "shape": list(t.shape), "offset": offset, "nbytes": len(data)})
            offset += len(data)
    return index


def tensor_bytes(t: "torch.Tensor") -> bytes:
    """The tensor's elements as little-endian bytes, in row-major order."""
    import torch

    t = t.detach().cpu().contiguous()
    if t.numel() == 0:
        return b""
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    a = t.reshape(-1).view(as_int).numpy()
    return a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def _collect_dumps(dumps: Path | None, dest: Path) -> None:
    """Move the pass manager's dump files (named by effc: NN_<pass>.txt, passes.json) into
    ``dest``, dropping the <label>-<digest> folder level, whose label comes from the model."""
    dest.mkdir()
    if dumps is None or not dumps.is_dir():
        return
    folders = sorted(p for p in dumps.iterdir() if p.is_dir())
    if folders:
        for f in sorted(folders[0].iterdir()):
            if f.is_file() and not f.name.endswith(".tmp"):
                os.replace(f, dest / f.name)
    shutil.rmtree(dumps)


def _file_list(folder: Path) -> list[dict[str, Any]]:
    files = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files.append({"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size,
                          "sha256": file_sha256(p)})
    return files


def _commit(tmp: Path, out: Path, force: bool) -> None:
    _sync(tmp)
    if not os.path.lexists(out):
        os.rename(tmp, out)
        _sync_folder(out.parent)
        return
    check_destination(out, force)   # it may have appeared while we compiled
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".effc-old", dir=out.parent))
    old.rmdir()
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    _sync_folder(out.parent)
    shutil.rmtree(old, ignore_errors=True)


def _sync(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk, so that the rename that publishes
    it never exposes files a crash could leave empty."""
    for p in sorted(folder.rglob("*"), reverse=True):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        else:
            _sync_folder(p)
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _make_parents(parent: Path) -> list[Path]:
    missing: list[Path] = []
    p = parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
    except OSError as e:
        for d in reversed(created):
            d.rmdir()
        raise UserError(f"cannot create folder {d}: {e.strerror}") from None
    return created


def _is_artifact(folder: Path) -> bool:
    """An artifact folder, or a standalone C library folder (compiler/standalone.py)."""
    for name, fmt in ((MANIFEST, FORMAT), ("effc-standalone.json", "effc-standalone")):
        try:
            with open(folder / name, encoding="utf-8") as f:
                if json.load(f).get("format") == fmt:
                    return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="ascii") as f:
        json.dump(data, f, indent=2, ensure_ascii=True)
        f.write("\n")


def _spec_json(spec: "TensorSpec") -> dict[str, Any]:
    d = spec.to_json()
    d["shape"] = [x if isinstance(x, int) else str(x) for x in spec.shape]
    return d


def _effc_version() -> str:
    import effc
    return effc.__version__


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------- reading

def is_artifact_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest, after checking its format and every listed file's size and sha256."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is not a folder")
    try:
        with open(folder / MANIFEST, "rb") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder} is not an effc artifact folder (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{folder}/{MANIFEST} cannot be read: {_one_line(e)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{folder}/{MANIFEST} is not an effc artifact manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{folder} has artifact format version {version!r}; this effc reads "
                            f"version {FORMAT_VERSION} (recompile the model)")
    _verify_files(folder, manifest)
    return manifest


def load(folder: str | os.PathLike) -> tuple["OnnxModel", dict[str, Any]]:
    """A runnable model from an artifact folder; it runs model.effc exactly (no passes)."""
    from effc.ir.parser import ParseError, parse_graph
    from effc.onnx_model import from_graph
    from effc.passes import PASS_NAMES

    folder = Path(folder)
    m = read_manifest(folder)
    try:
        inputs = [_spec(d) for d in m["inputs"]]
        outputs = [_spec(d) for d in m["outputs"]]
        opts = m["options"]
        target = str(opts["target"])
        index = m["weights"]["tensors"]
        label = str(m.get("label") or "model")
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{folder}/{MANIFEST} is malformed: {_one_line(e)}") from None
    constants = _read_weights(folder / WEIGHTS, index)
    text = (folder / MODEL_IR).read_text(encoding="utf-8")
    try:
        graph = parse_graph(text, constants)
    except (ParseError, ValueError) as e:
        raise ArtifactError(f"{folder}/{MODEL_IR}: {_one_line(e)}") from None
    if len(graph.inputs) != len(inputs) or len(graph.outputs) != len(outputs):
        raise ArtifactError(f"{folder}: the manifest's inputs and outputs do not match {MODEL_IR}")
    # the IR is final: no pass may change it; the memory plan is made again for the program
    options = Options(target=target, disable_passes=tuple(p for p in PASS_NAMES if p != "plan_memory"))
    return from_graph(graph, inputs, outputs, options, label), m


def _verify_files(folder: Path, manifest: Mapping[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, list):
        raise ArtifactError(f"{folder}/{MANIFEST} lists no files")
    listed = set()
    root = folder.resolve()
    for entry in files:
        try:
            rel, size, digest = str(entry["path"]), int(entry["bytes"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{folder}/{MANIFEST}: malformed file entry") from None
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or "\\" in rel or not rel:
            raise ArtifactError(f"{folder}/{MANIFEST} names a file outside the folder: {rel!r}")
        path = root / pure
        if not path.is_file():
            raise ArtifactError(f"{folder} is damaged: {rel} is missing")
        if path.stat().st_size != size:
            raise ArtifactError(f"{folder} is damaged: {rel} has {path.stat().st_size} bytes, "
                                f"the manifest says {size} (truncated or modified)")
        if file_sha256(path) != digest:
            raise ArtifactError(f"{folder} is damaged: {rel} does not match its sha256 in the "
                                "manifest (modified after compiling)")
        listed.add(rel)
    for required in (MODEL_IR, WEIGHTS):
        if required not in listed:
            raise ArtifactError(f"{folder}/{MANIFEST} does not list {required}")


def _read_weights(path: Path, index: Any) -> dict[str, "torch.Tensor"]:
    import numpy as np
    import torch

    from effc.ir import DType

    data = path.read_bytes()
    out: dict[str, torch.Tensor] = {}
    if not isinstance(index, list):
        raise ArtifactError(f"{path}: the weights index is not a list")
    for e in index:
        try:
            name, dtype = str(e["name"]), DType(e["dtype"])
            shape = tuple(int(d) for d in e["shape"])
            offset, nbytes = int(e["offset"]), int(e["nbytes"])
            tdtype = dtype.to_torch()
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"{path}: malformed weights entry: {_one_line(err)}") from None
        numel = 1
        for d in shape:
            if d < 0:
                raise ArtifactError(f"{path}: weight {name!r} has a negative size")
            numel *= d
        itemsize = torch.empty((), dtype=tdtype).element_size()
        if nbytes != numel * itemsize or offset < 0 or offset % ALIGN or offset + nbytes > len(data):
            raise ArtifactError(f"{path}: weight {name!r} has an inconsistent offset or size")
        if name in out:
            raise ArtifactError(f"{path}: weight {name!r} appears twice")
        if numel == 0:
            out[name] = torch.empty(shape, dtype=tdtype)
            continue
        as_int = {1: "<u1", 2: "<i2", 4: "<i4", 8: "<i8"}[itemsize]
        a = np.frombuffer(data, dtype=as_int, count=numel, offset=offset)
        a = a.astype(a.dtype.newbyteorder("="))   # native order, and a writable copy
        out[name] = torch.from_numpy(a).view(tdtype).reshape(shape)
    return out


def _spec(d: Mapping[str, Any]) -> "TensorSpec":
    """A TensorSpec from manifest JSON, each symbolic size checked by the IR's size parser
    (TensorSpec later hands these strings to sympy, which must never see arbitrary text)."""
    from effc.ir import DType
    from effc.ir.parser import ParseError, parse_size
    from effc.onnx_model import TensorSpec, wire_type

    shape: list[int | str] = []
    for x in d["shape"]:
        if isinstance(x, bool) or not isinstance(x, (int, str)):
            raise ValueError(f"bad size {x!r}")
        if isinstance(x, str):
            try:
                parse_size(x)
            except ParseError:
                raise ValueError(f"bad size {x!r}") from None
        shape.append(x)
    if not isinstance(d["name"], str):
        raise ValueError("a name is not a string")
    return TensorSpec(d["name"], DType(d["dtype"]), tuple(shape), wire_type(d.get("wire")))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())

