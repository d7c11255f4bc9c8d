"""The one op table: aten op overload name -> converter into effc IR.

Both frontends use it: FX graphs from torch.compile name ops as ``aten.add.Tensor``, and the
ONNX path reaches the same names through torch-mlir's torch dialect. An op missing here
becomes an ``extern`` node that calls the torch op, never a compile failure.
"""

from __future__ import annotations

from .aten_elementwise import TABLE as _ELEMENTWISE
from .aten_layout import TABLE as _LAYOUT
from .aten_tensor import TABLE as _TENSOR
from .lowering import Converter

ATEN_TABLE: dict[str, Converter] = {**_ELEMENTWISE, **_TENSOR, **_LAYOUT}
