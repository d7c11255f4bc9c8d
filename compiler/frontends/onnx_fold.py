"""ONNX-level clean-up before torch-mlir sees a model: fold what is known, spell out what it lacks.

torch-mlir needs the axes of a reduction, the target of a reshape and similar arguments as
constants. Exporters (and ONNX's own function bodies) often compute them: ``Shape`` of a tensor
whose shape is static, then ``Gather``, ``Range``, ``Concat``... Here such chains are evaluated
once with ONNX's reference evaluator and replaced by initializers, then shape inference runs
again. An ``If`` on a condition known this way is replaced by the branch it takes, and a
``Transpose`` without ``perm`` gets the reversal written out.
``RMSNormalization`` (opset 23), which torch-mlir does not lower, is written out in the ops of
its ONNX function body with its axes as constants.

    Shape(x: f32[2, 3, 4]) -> s;  Slice(s, [1], [3]) -> t;  ReduceMean(y, t) -> m
  ->
    ReduceMean(y, t) -> m          with t = [3, 4] an initializer
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

# Evaluating is only worth it for the small tensors that configure other ops.
MAX_FOLDED_ELEMENTS = 4096
_NOT_FOLDED = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
               "Multinomial", "Bernoulli", "Dropout", "If", "Loop", "Scan", "SequenceConstruct"}


def rewrite(proto: Any) -> Any:
    """``proto`` (checked and shape-inferred) with RMSNormalization spelled out and constant
    chains folded; shape inference is run again when anything changed."""
    import onnx
    changed = _spell_out_rms_norm(proto)
    changed |= _fold(proto)
    changed |= _explicit_transpose_perm(proto)
    if not changed:
        return proto
    return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=False, data_prop=True)


def _shapes(proto: Any) -> dict[str, list[int | None]]:
    out: dict[str, list[int | None]] = {}
    g = proto.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for t in g.initializer:
        out[t.name] = list(t.dims)
    return out


def elem_types(proto: Any) -> dict[str, int]:
    g = proto.graph
    out = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.value_info) + list(g.output)
           if vi.type.HasField("tensor_type")}
    out.update({t.name: t.data_type for t in g.initializer})
    return out


def _explicit_transpose_perm(proto: Any) -> bool:
    """``perm`` written on each Transpose that leaves it out (torch-mlir does not lower the
    default, which reverses the axes, in every case)."""
    from onnx import helper
    shapes = _shapes(proto)
    changed = False
    for n in proto.graph.node:
        if (n.op_type == "Transpose" and n.domain in ("", "ai.onnx") and n.input[0] in shapes
                and not any(a.name == "perm" for a in n.attribute)):
            n.attribute.append(helper.make_attribute("perm", list(range(len(shapes[n.input[0]])))[::-1]))
            changed = True
    return changed


def _spell_out_rms_norm(proto: Any) -> bool:
    from onnx import helper, numpy_helper
    g = proto.graph
    if not any(n.op_type == "RMSNormalization" and n.domain in ("", "ai.onnx") for n in g.node):
        return False
    shapes, types = _shapes(proto), elem_types(proto)
    nodes: list[Any] = []
    changed = False
    for n in g.node:
        if n.op_type != "RMSNormalization" or n.domain not in ("", "ai.onnx") or n.input[0] not in shapes:
            nodes.append(n)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        rank = len(shapes[n.input[0]])
        axis = int(attrs.get("axis", -1)) % rank if rank else 0
        eps = float(attrs.get("epsilon", 1e-5))
        stash = int(attrs.get("stash_type", 1))
        x, scale, y = n.input[0], n.input[1], n.output[0]
        p = f"{n.name or 'rms'}__"
        g.initializer.extend([numpy_helper.from_array(np.arange(axis, rank, dtype=np.int64), p + "axes"),
                              numpy_helper.from_array(np.array(eps, dtype=np.float32 if stash == 1 else np.float64), p + "eps")])
        nodes += [helper.make_node("Cast", [x], [p + "xu"], to=stash),
                  helper.make_node("Mul", [p + "xu", p + "xu"], [p + "sq"]),
                  helper.make_node("ReduceMean", [p + "sq", p + "axes"], [p + "ms"], keepdims=1),
                  helper.make_node("Add", [p + "ms", p + "eps"], [p + "mse"]),
                  helper.make_node("Sqrt", [p + "mse"], [p + "rms"]),
                  helper.make_node("Div", [p + "xu", p + "rms"], [p + "norm"]),
                  helper.make_node("Cast", [p + "norm"], [p + "normt"], to=types.get(x, 1)),
                  helper.make_node("Mul", [p + "normt", scale], [y], name=n.name)]
        changed = True
    del g.node[:]
    g.node.extend(nodes)
    return changed


def _fold(proto: Any) -> bool:
    from onnx import numpy_helper
    g = proto.graph
    known: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if int(np.prod(t.dims)) <= MAX_FOLDED_ELEMENTS:
            known[t.name] = numpy_helper.to_array(t)
    shapes = _shapes(proto)
    outputs = {o.name for o in g.output}
    kept: list[Any] = []
    folded: dict[str, np.ndarray] = {}
    todo = deque(g.node)
    branched = False
    while todo:
        n = todo.popleft()
        if n.op_type == "If" and n.domain in ("", "ai.onnx") and n.input[0] in known:
            todo.extendleft(reversed(_branch_taken(n, bool(known[n.input[0]].reshape(-1)[0]), g, known)))
            branched = True
            continue
        value = None
        if n.domain in ("", "ai.onnx") and n.op_type not in _NOT_FOLDED and not any(
                a.type in (5, 10) for a in n.attribute):  # GRAPH, GRAPHS: subgraphs
            if n.op_type == "Shape" and all(d is not None for d in shapes.get(n.input[0], [None])):
                value = _shape_value(n, shapes[n.input[0]])
            elif n.op_type == "Size" and all(d is not None for d in shapes.get(n.input[0], [None])):
                value = [np.array(int(np.prod(shapes[n.input[0]], dtype=np.int64)), dtype=np.int64)]
            elif n.op_type == "Constant" or (n.input and all(i == "" or i in known for i in n.input)):
                value = _evaluate(n, known, proto.opset_import)
        if value is None or any(v is None or v.size > MAX_FOLDED_ELEMENTS for v in value) or any(o in outputs for o in n.output):
            kept.append(n)
            continue
        for name, v in zip(n.output, value):
            known[name] = v
            folded[name] = v
    if not folded and not branched:
        return False
    used = _inputs_read(kept) | outputs
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(numpy_helper.from_array(v, name) for name, v in folded.items() if name in used)
    return True


def _inputs_read(nodes: Any) -> set[str]:
    """Every name the nodes read, inside their subgraphs (which see the outer scope) too."""
    out: set[str] = set()
    for n in nodes:
        out.update(n.input)
        for a in n.attribute:
            if a.type in (5, 10):  # GRAPH, GRAPHS
                for sub in ([a.g] if a.type == 5 else list(a.graphs)):
                    out |= _inputs_read(sub.node)
    return out


def _branch_taken(n: Any, cond: bool, g: Any, known: dict[str, np.ndarray]) -> list[Any]:
    """The nodes of the branch an ``If`` on a known condition takes, writing the If's outputs;
    the branch's initializers move to the graph."""
    from onnx import helper, numpy_helper
    branch = next(helper.get_attribute_value(a) for a in n.attribute if a.name == ("then_branch" if cond else "else_branch"))
    for t in branch.initializer:
        g.initializer.append(t)
        if int(np.prod(t.dims)) <= MAX_FOLDED_ELEMENTS:
            known[t.name] = numpy_helper.to_array(t)
    nodes = list(branch.node)
    nodes += [helper.make_node("Identity", [b.name], [o], name=f"{n.name}__{o}") for b, o in zip(branch.output, n.output)]
    return nodes


def _shape_value(n: Any, shape: list[int | None]) -> list[np.ndarray]:
    from onnx import helper
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return [np.array(shape[start:end], dtype=np.int64)]


def _evaluate(n: Any, known: dict[str, np.ndarray], opsets: Any) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator
    try:
        ev = ReferenceEvaluator(_single_node_model(n, known, opsets))
        out = ev.run(None, {})
    except Exception:  # noqa: BLE001 - anything the evaluator cannot do stays a node
        return None
    return [np.asarray(o) for o in out] if all(isinstance(o, np.ndarray) or np.isscalar(o) for o in out) else None


def _single_node_model(n: Any, known: dict[str, np.ndarray], opsets: Any) -> Any:
    from onnx import helper, numpy_helper
    inits = [numpy_helper.from_array(known[i], i) for i in dict.fromkeys(n.input) if i]
    outs = [helper.make_empty_tensor_value_info(o) for o in n.output]
    graph = helper.make_graph([n], "fold", [], outs, inits)
    return helper.make_model(graph, opset_imports=list(opsets), ir_version=10)
