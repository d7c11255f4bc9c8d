"""ONNX frontend: a loaded ONNX model into effc IR, through torch-mlir.

torch-mlir's ONNX importer turns the graph into ``torch.operator "onnx.*"`` ops; its
``torch-onnx-to-torch-backend-pipeline`` lowers those to aten ops on value tensors (the same
vocabulary AOT autograd produces), and ``torch_dialect.py`` converts that into effc IR with the
op table the FX frontend uses. torch-mlir is imported only here, and only when an ONNX model is
compiled, and runs in a forked child (``isolate.py``) because it crashes on some models. Ops
neither torch-mlir nor effc can run are reported together in one error naming each op and node.
Dynamic input sizes (``dim_param``) become effc size symbols.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import torch

from effc.errors import UserError
from effc.ir import TensorType
from effc.ir.graph import sanitize_name
from effc.ir.types import dim_str, size_symbol

from .fx import Imported, OutSpec
from .lowering import Unsupported
from .onnx_load import ModelError, dtype_of, type_name
from .isolate import in_child
from .onnx_fold import rewrite
from .onnx_functions import CannotExpand, data_dependent_branches, expand_functions
from .onnx_ops import rename_own_ops
from .torch_dialect import ConversionFailed, Converted, Failure, TorchDialectImporter

# Ops torch-mlir would otherwise decompose, kept whole because effc's op table (and the
# torch.compile path, through its decomposition list) keeps them whole too.
LEGAL_OPS = ("aten.softmax.int", "aten.log_softmax.int", "aten.gelu", "aten.silu", "aten.hardswish",
             "aten.hardsigmoid", "aten.layer_norm", "aten.native_layer_norm", "aten.rms_norm",
             "aten.linear", "aten.elu", "aten.leaky_relu", "aten.hardtanh", "aten.mean.dim",
             "aten.adaptive_avg_pool2d", "aten.max_pool2d", "aten.avg_pool2d",
             "aten.scaled_dot_product_attention", "aten.group_norm", "aten.native_group_norm")
PIPELINE = f"builtin.module(torch-onnx-to-torch-backend-pipeline{{backend-legal-ops={','.join(LEGAL_OPS)}}})"
_MAX_LISTED = 12


class UnsupportedOpsError(UserError):
    """The model uses ops effc cannot compile; ``failures`` lists each with its node."""

    def __init__(self, failures: list[Failure]) -> None:
        self.failures = failures
        groups: dict[str, list[str]] = {}
        for f in failures:
            groups.setdefault(f.op, []).append(f.node)
        parts = []
        for op, nodes in list(groups.items())[:_MAX_LISTED]:
            shown = ", ".join(repr(n) for n in nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
            parts.append(f"{op} (node {shown})")
        more = f"; and {len(groups) - _MAX_LISTED} more ops" if len(groups) > _MAX_LISTED else ""
        first = failures[0].reason
        super().__init__(f"cannot compile {len(failures)} node(s): {'; '.join(parts)}{more} "
                         f"(first reason: {first})")

    def __reduce__(self) -> tuple:  # travels back from the import's child process
        return (UnsupportedOpsError, (self.failures,))

    def value_inputs(self, inputs: list[tuple[str, TensorType]]) -> tuple[int, ...]:
        """When every failure reads the data of small graph inputs (an ``axes``, ``shape`` or
        ``pads`` input: static, at most ``MAX_VALUE_INPUT`` elements), the positions of those
        inputs; a model compiled per value of them would compile. Never the model's real data."""
        if not all(f.needs for f in self.failures):
            return ()
        needs = sorted({i for f in self.failures for i in f.needs})
        for i in needs:
            t = inputs[i][1]
            if not t.is_static or t.numel() > MAX_VALUE_INPUT:
                return ()
        return tuple(needs)


MAX_VALUE_INPUT = 16


def _torch_mlir() -> Any:
    try:
        from torch_mlir import ir, passmanager
        from torch_mlir.dialects import torch as torch_d
        from torch_mlir.extras import onnx_importer
    except ImportError:
        raise UserError("compiling ONNX models needs torch-mlir: pip install 'effc[onnx]'") from None
    return ir, passmanager, torch_d, onnx_importer


def io_specs(proto: Any) -> tuple[list[tuple[str, TensorType]], list[Any], list[Any]]:
    """The model's runtime inputs (graph inputs that are not initializers) as IR names and
    types, and the input and output specs under the model's own names."""
    from effc.onnx_model import TensorSpec
    from .onnx_unsigned import wire_types
    inits = {t.name for t in proto.graph.initializer}
    wires = wire_types(proto)
    ir_inputs: list[tuple[str, TensorType]] = []
    in_specs, out_specs = [], []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        t = _value_type(vi, f"input {vi.name!r}")
        ir_inputs.append((sanitize_name(vi.name), t))
        in_specs.append(TensorSpec(vi.name, t.dtype, _spec_shape(t.shape), wires.get(vi.name)))
    for vi in proto.graph.output:
        out_specs.append(vi)
    return ir_inputs, in_specs, out_specs


def _value_type(vi: Any, what: str) -> TensorType:
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tt is None:
        raise ModelError(f"{what} is not a tensor")
    dtype = dtype_of(tt.elem_type)
    if dtype is None:
        raise ModelError(f"{what} has unsupported element type {type_name(tt.elem_type)}")
    if not tt.HasField("shape"):
        raise ModelError(f"{what} has no declared rank; effc needs the rank of every input")
    dims: list[Any] = []
    for axis, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(size_symbol(_symbol_name(d.dim_param)))
        else:
            dims.append(size_symbol(_symbol_name(f"{vi.name}_{axis}")))
    return TensorType(dtype, tuple(dims))


def _symbol_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and (s[0].isalpha() or s[0] == "_") else "d_" + s


def _spec_shape(shape: tuple) -> tuple:
    return tuple(d if isinstance(d, int) else dim_str(d) for d in shape)


def import_onnx(proto: Any) -> tuple[Imported, list[Any], list[Any]]:
    """A checked, shape-inferred ModelProto (``onnx_load.load_model``) as effc IR, with the
    input and output specs under the model's own names."""
    from effc.onnx_model import TensorSpec

    from .onnx_unsigned import wire_types
    ir_inputs, in_specs, out_vis = io_specs(proto)
    _name_nodes(proto)
    _torch_mlir()  # imported here, once, rather than in every child
    conv = in_child(lambda: _convert(proto, ir_inputs), "torch-mlir's ONNX import")
    graph = conv.graph
    wires = wire_types(proto)
    out_specs = [TensorSpec(vi.name, v.type.dtype, _spec_shape(v.type.shape), wires.get(vi.name))
                 for vi, v in zip(out_vis, graph.outputs)]
    imported = Imported(graph, list(range(len(graph.inputs))),
                        [OutSpec("ir", i) for i in range(len(graph.outputs))],
                        conv.externs, conv.extern_reasons)
    return imported, in_specs, out_specs


def _convert(proto: Any, ir_inputs: list[tuple[str, TensorType]]) -> Converted:
    """torch-mlir import and lowering, then conversion into effc IR (run in a child process).

    An ONNX op torch-mlir has no lowering for, but which ONNX defines as a function of other
    ops (Attention, RMSNormalization, Swish, ...), is expanded into that function's body and
    the import retried; only ops that need it are expanded, so the others keep their one-op
    lowerings."""
    rename_own_ops(proto.graph)  # the child's own copy of the model
    expand: set[str] = set()      # expanded here, in the ONNX model
    in_importer: set[str] = set()  # expanded by torch-mlir's importer (ONNX cannot here)
    while True:
        try:
            _check_branches(proto)
            func, blobs, keep = _lower(proto, in_importer)
            try:
                return TorchDialectImporter(func, ir_inputs, blobs).run()
            finally:
                del keep
        except ConversionFailed as e:
            err: UserError = UnsupportedOpsError(e.failures)
        except Unsupported as e:
            raise ModelError(str(e)) from None
        except UnsupportedOpsError as e:
            err = e
        more = {f.op[len("onnx."):] for f in err.failures  # type: ignore[attr-defined]
                if f.op.startswith("onnx.") and _has_function(proto, f.op[len("onnx."):])} - expand - in_importer
        if not more or len(expand | in_importer) >= _MAX_EXPANDED:
            raise err
        for op in more:
            try:
                proto = rewrite(expand_functions(proto, {op}))
                expand.add(op)
            except CannotExpand:
                in_importer.add(op)


_MAX_EXPANDED = 16


def _check_branches(proto: Any) -> None:
    """An ``If`` whose condition reads input data fails here, naming those inputs, so that the
    model is compiled per value of them (when they are small) and the branch becomes known."""
    branches = data_dependent_branches(proto)
    if branches:
        raise UnsupportedOpsError([Failure("onnx.If", name, "a branch on a condition read from input data", needs)
                                   for name, needs in branches])


def _has_function(proto: Any, op_type: str) -> bool:
    import onnx
    from .onnx_load import default_opset
    try:
        schema = onnx.defs.get_schema(op_type, default_opset(proto) or onnx.defs.onnx_opset_version(), "")
    except Exception:  # noqa: BLE001 - onnx.defs raises SchemaError for unknown ops
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


def _name_nodes(proto: Any) -> None:
    """Give unnamed nodes a name (op type and index) so that errors can point at them."""
    taken = {n.name for n in proto.graph.node if n.name}
    for i, n in enumerate(proto.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)


def _lower(proto: Any, expand: set[str]) -> tuple[Any, dict[str, torch.Tensor], Any]:
    """Import with torch-mlir (expanding the ONNX functions named in ``expand``) and lower to
    its backend contract; returns the function, the initializer tensors by resource key, and
    the MLIR objects that must outlive the function."""
    ir, passmanager, torch_d, onnx_importer = _torch_mlir()
    ctx = ir.Context()
    torch_d.register_dialect(ctx)
    cache = _ResourceCache(ctx, onnx_importer, ir)
    config = onnx_importer.Config()
    config.function_expansion_allowlists_by_domain = {"": {"MeanVarianceNormalization"} | expand}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = onnx_importer.ModelInfo(proto, config=config)
            module = info.create_module(context=ctx).operation
            imp = onnx_importer.NodeImporter.define_function(info.main_graph, module, context_cache=cache)
            imp.import_all()
    except onnx_importer.OnnxImportError as e:
        raise ModelError(f"torch-mlir cannot import the model: {_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - the importer's own bugs (KeyError, AssertionError...)
        raise ModelError(f"torch-mlir cannot import the model: {type(e).__name__}: {_line(e)}") from None
    try:
        pm = passmanager.PassManager.parse(PIPELINE, context=ctx)
        pm.run(module)
    except ir.MLIRError as e:
        raise UnsupportedOpsError(_diagnostic_failures(e)) from None
    funcs = [op for op in module.regions[0].blocks[0].operations if op.operation.name == "func.func"]
    main = [f for f in funcs if "sym_visibility" not in f.attributes]
    if len(main) != 1:
        raise ModelError(f"expected one main function after lowering, found {len(main)}")
    blobs = {k: _to_tensor(tp) for k, tp in cache.blobs.items()}
    return main[0], blobs, (ctx, module, cache, proto)


class _ResourceCache:
    """torch-mlir's ContextCache, with initializer data kept under keys we choose, so that a
    ``dense_resource<key>`` literal after lowering maps back to its ONNX tensor."""

    def __new__(cls, ctx: Any, onnx_importer: Any, ir: Any) -> Any:
        base = onnx_importer.ContextCache

        class Cache(base):  # type: ignore[misc, valid-type]
            def __init__(self, context: Any) -> None:
                super().__init__(context)
                self.blobs: dict[str, Any] = {}

            def tensor_proto_to_attr(self, tp: Any) -> Any:
                if tp.HasField("raw_data"):
                    key = f"effc_blob_{len(self.blobs)}"
                    self.blobs[key] = tp
                    return ir.DenseResourceElementsAttr.get_from_buffer(
                        tp.raw_data, key, self.tensor_proto_to_builtin_type(tp), alignment=8)
                return super().tensor_proto_to_attr(tp)

        return Cache(ctx)


def _to_tensor(tp: Any) -> torch.Tensor:
    from onnx import numpy_helper
    arr = numpy_helper.to_array(tp)
    if arr.dtype == np.dtype("object"):
        raise ModelError(f"initializer {tp.name!r} does not hold numbers")
    return torch.from_numpy(np.array(arr, order="C", copy=True))


def _diagnostic_failures(e: Any) -> list[Failure]:
    out: list[Failure] = []
    for d in getattr(e, "error_diagnostics", []) or []:
        msg = str(d.message)
        node = re.search(r'loc\("([^"]*)"', str(d.location))
        m = re.search(r'name = "(onnx\.[A-Za-z0-9_]+)"', msg) or re.search(r"'(torch\.[a-z_.0-9]+)'", msg)
        for note in getattr(d, "notes", []) or []:
            m = m or re.search(r'name = "(onnx\.[A-Za-z0-9_]+)"', str(note.message))
        op = m.group(1) if m else "?"
        out.append(Failure(op, node.group(1) if node else "?", _line(msg.split(":")[0] if "legalize" in msg else msg)))
    if not out:
        out.append(Failure("?", "?", _line(e)))
    return out


def _line(e: Any) -> str:
    text = " ".join(str(e).split())
    return text[:240] + ("..." if len(text) > 240 else "")


