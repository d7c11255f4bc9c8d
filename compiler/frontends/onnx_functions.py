"""ONNX ops expanded into the function bodies ONNX defines for them, and branches chosen.

torch-mlir has no lowering for some ONNX ops that ONNX defines as functions of other ops
(``AffineGrid``, ``Attention`` in some modes...). ``expand_functions`` writes such a node out
as its function body, here in the ONNX model, so that the body can be folded like the rest of
the graph (its ``If`` on a known size becomes the branch taken) before torch-mlir sees it.

A branch whose condition is read from the data of small inputs (an ``If`` on a ``size`` input)
is reported by ``data_dependent_branches``; the model is then compiled per value of those
inputs, which makes the condition known.
"""

from __future__ import annotations

from typing import Any

DOMAIN = "effc.expand"


class CannotExpand(Exception):
    pass


def expand_functions(proto: Any, ops: set[str]) -> Any:
    """``proto`` with every default-domain node whose op type is in ``ops`` replaced by its
    ONNX function body (attributes and input types bound); CannotExpand when ONNX has no
    body for an op at the model's opset."""
    import onnx
    import onnx.inliner
    from onnx import helper

    from .onnx_load import default_opset
    opset = default_opset(proto) or onnx.defs.onnx_opset_version()
    g = proto.graph
    types = {vi.name: vi.type for vi in list(g.input) + list(g.value_info) + list(g.output)}
    for t in g.initializer:
        types[t.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
    found = False
    for i, n in enumerate(g.node):
        if n.op_type not in ops or n.domain not in ("", "ai.onnx"):
            continue
        body = _body(n, opset, types)
        body.name, body.domain = f"{n.op_type}_{i}", DOMAIN
        n.op_type, n.domain = body.name, DOMAIN
        proto.functions.append(body)
        found = True
    if not found:
        return proto
    proto.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    try:  # a body written for an older opset is converted to the model's
        expanded = onnx.inliner.inline_local_functions(proto, convert_version=True)
    except Exception as e:  # noqa: BLE001 - the inliner and converter raise bare C++ errors
        raise CannotExpand(f"ONNX's inliner failed on {', '.join(sorted(ops))}: {e}") from None
    left = sorted({n.op_type for n in expanded.graph.node if n.domain == DOMAIN})
    if left:  # the inliner skips what it cannot inline, silently
        raise CannotExpand(f"ONNX's inliner left {', '.join(left)} as calls")
    kept = [o for o in expanded.opset_import if o.domain != DOMAIN]
    del expanded.opset_import[:]
    expanded.opset_import.extend(kept)
    return expanded


def _body(n: Any, opset: int, types: dict[str, Any]) -> Any:
    import onnx
    try:
        schema = onnx.defs.get_schema(n.op_type, opset, "")
    except Exception:  # noqa: BLE001 - SchemaError for an unknown op
        raise CannotExpand(f"ONNX has no schema for {n.op_type}") from None
    body = onnx.FunctionProto()
    if schema.has_function:
        versions = [v for v in schema.function_opset_versions if v <= opset]
        if versions:
            body.ParseFromString(_bytes(schema.get_function_with_opset_version(max(versions))))
            return body
    if schema.has_context_dependent_function:
        versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
        if versions:
            inputs = [(types[x] if x in types else onnx.TypeProto()).SerializeToString() if x else
                      onnx.TypeProto().SerializeToString() for x in n.input]
            data = schema.get_context_dependent_function_with_opset_version(max(versions), n.SerializeToString(), inputs)
            body.ParseFromString(_bytes(data))
            if body.node:
                return body
    raise CannotExpand(f"ONNX defines no function body for {n.op_type} at opset {opset}")


def _bytes(x: Any) -> bytes:
    return x if isinstance(x, bytes) else x.SerializeToString()


def data_dependent_branches(proto: Any) -> list[tuple[str, tuple[int, ...]]]:
    """Each ``If`` left in the graph whose condition is computed from the data of graph inputs:
    its node name and the positions (among the inputs that are not initializers) of those inputs."""
    g = proto.graph
    inits = {t.name for t in g.initializer}
    position = {vi.name: k for k, vi in enumerate(vi for vi in g.input if vi.name not in inits)}
    producer = {o: n for n in g.node for o in n.output}
    out = []
    for n in g.node:
        if n.op_type != "If" or n.domain not in ("", "ai.onnx"):
            continue
        sources: set[int] = set()
        seen: set[str] = set()
        stack = [n.input[0]]
        while stack:
            v = stack.pop()
            if v in seen or not v:
                continue
            seen.add(v)
            if v in position:
                sources.add(position[v])
            elif v in producer and producer[v].op_type not in ("Shape", "Size"):  # sizes are known
                stack.extend(producer[v].input)
        if sources:
            out.append((n.name, tuple(sorted(sources))))
    return out
