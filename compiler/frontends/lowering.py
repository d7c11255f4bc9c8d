"""The shared lowering context: what an op-table entry gets to build effc IR with.

Both frontends (FX from torch.compile, torch dialect from the ONNX importer) bind each aten
op's arguments to its schema names, then call the table entry
``fn(cx, a, out) -> Value | tuple[Value, ...]`` where ``a`` maps argument names to effc
values (tensors), python scalars, sympy sizes or lists of those, and ``out`` lists the output
types the framework recorded. An entry raises ``Unsupported`` to make the node an extern.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import sympy
import torch

from effc.ir import DType, GraphBuilder, Op, TensorType, Value

Args = Mapping[str, Any]
Converter = Callable[["Lowering", Args, Sequence[TensorType]], "Value | tuple[Value, ...]"]


class Unsupported(Exception):
    """The table entry cannot express this call in effc IR; the node becomes an extern."""


class _NotComputed:
    """Stands for an output effc does not compute (pooling indices, saved norm statistics);
    a node whose such output is used becomes an extern instead."""

    def __repr__(self) -> str:
        return "NOT_COMPUTED"


NOT_COMPUTED: Any = _NotComputed()


def bind_schema(op: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Name every argument of an aten OpOverload call, filling defaults."""
    out: dict[str, Any] = {}
    schema = op._schema
    for i, arg in enumerate(schema.arguments):
        if i < len(args) and not arg.kwarg_only:
            out[arg.name] = args[i]
        elif arg.name in kwargs:
            out[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
        else:
            raise Unsupported(f"missing argument {arg.name} of {op}")
    return out


def is_number(x: Any) -> bool:
    # sympy.Expr, not Basic minus Boolean: a plain Symbol is both an Expr and a Boolean
    return isinstance(x, (bool, int, float)) or isinstance(x, sympy.Expr)


class Lowering:
    def __init__(self, builder: GraphBuilder, device: torch.device | None = None) -> None:
        self.b = builder
        self.device = device  # where the graph's tensors live; None when unknown

    def op(self, op: Op, inputs: Sequence[Value], **attrs: Any) -> Value:
        return self.b.op(op, inputs, **attrs)

    def tensor(self, x: Any) -> Value:
        if not isinstance(x, Value):
            raise Unsupported(f"expected a tensor operand, got {type(x).__name__}")
        return x

    def operands(self, xs: Sequence[Any], out_dtype: DType | None) -> list[Value]:
        """Tensor operands of an elementwise op, with python scalars made rank-0 tensors.

        A scalar's dtype is chosen so that effc's promotion rule (zero-dim operands only
        promote across categories) reproduces torch's treatment of python scalars: the widest
        type of its own category when a tensor operand already has that category, else the
        op's result dtype.
        """
        tensors = [x for x in xs if isinstance(x, Value)]
        top = max((t.type.dtype.category for t in tensors), default=-1)
        out: list[Value] = []
        for x in xs:
            if isinstance(x, Value):
                out.append(x)
                continue
            if not is_number(x):
                raise Unsupported(f"operand {x!r} is neither a tensor nor a number")
            cat = 0 if isinstance(x, bool) else 2 if isinstance(x, float) or (
                isinstance(x, sympy.Basic) and not x.is_integer) else 1
            widest = {0: DType.BOOL, 1: DType.I64, 2: DType.F64}[cat]
            if cat <= top and out_dtype is not None and out_dtype.category == cat and all(
                    t.type.rank == 0 for t in tensors):
                dtype = out_dtype  # beside only rank-0 tensors, a wider scalar would promote
            elif cat <= top or out_dtype is None:
                dtype = widest
            else:
                dtype = out_dtype if out_dtype.category >= cat else widest
            out.append(self.b.scalar(x, dtype))
        return out

    def cast(self, x: Value, dtype: DType) -> Value:
        return x if x.type.dtype is dtype else self.op(Op.CAST, [x], dtype=dtype)


def dtype_arg(x: Any) -> DType | None:
    if x is None:
        return None
    if isinstance(x, DType):
        return x
    if isinstance(x, torch.dtype):
        return DType.from_torch(x)
    raise Unsupported(f"unknown dtype {x!r}")


def int_list(x: Any, n: int | None = None) -> tuple:
    """An int (broadcast to ``n`` entries) or a list of ints/sizes as a tuple."""
    if isinstance(x, (list, tuple)):
        if n is not None and len(x) == 1 and n > 1:  # torch repeats a one-entry list
            return tuple(x) * n
        return tuple(x)
    return tuple([x] * (n or 1))
