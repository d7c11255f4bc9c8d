"""Element types of effc tensors, and torch's type-promotion rules over them."""

from __future__ import annotations

import enum

import torch


class DType(enum.Enum):
    """An element type. The value is the short name used in IR text (``f32``)."""

    F64 = "f64"
    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"
    I64 = "i64"
    I32 = "i32"
    I16 = "i16"
    I8 = "i8"
    U8 = "u8"
    BOOL = "bool"
    # Two 4-bit integers packed in one byte; reserved for weight-only quantization.
    I4 = "i4"

    def __str__(self) -> str:
        return self.value

    @property
    def bits(self) -> int:
        return _BITS[self]

    @property
    def itemsize(self) -> int:
        """Bytes per element (a packed int4 element counts as half a byte, rounded up)."""
        return max(1, self.bits // 8)

    @property
    def is_float(self) -> bool:
        return self in (DType.F64, DType.F32, DType.F16, DType.BF16)

    @property
    def is_int(self) -> bool:
        return self in (DType.I64, DType.I32, DType.I16, DType.I8, DType.U8, DType.I4)

    @property
    def is_bool(self) -> bool:
        return self is DType.BOOL

    @property
    def category(self) -> int:
        """0 for bool, 1 for integers, 2 for floating point (torch's promotion categories)."""
        return 2 if self.is_float else (1 if self.is_int else 0)

    def to_torch(self) -> torch.dtype:
        if self is DType.I4:
            raise TypeError("packed int4 has no torch dtype; it is stored as uint8 pairs")
        return _TO_TORCH[self]

    @staticmethod
    def from_torch(dtype: torch.dtype) -> "DType":
        try:
            return _FROM_TORCH[dtype]
        except KeyError:
            raise TypeError(f"torch dtype {dtype} has no effc equivalent") from None

    @staticmethod
    def parse(name: str) -> "DType":
        try:
            return DType(name)
        except ValueError:
            raise ValueError(f"unknown dtype {name!r}") from None


_BITS = {
    DType.F64: 64, DType.F32: 32, DType.F16: 16, DType.BF16: 16, DType.I64: 64, DType.I32: 32,
    DType.I16: 16, DType.I8: 8, DType.U8: 8, DType.BOOL: 8, DType.I4: 4,
}
_TO_TORCH = {
    DType.F64: torch.float64, DType.F32: torch.float32, DType.F16: torch.float16,
    DType.BF16: torch.bfloat16, DType.I64: torch.int64, DType.I32: torch.int32,
    DType.I16: torch.int16, DType.I8: torch.int8, DType.U8: torch.uint8, DType.BOOL: torch.bool,
}
_FROM_TORCH = {v: k for k, v in _TO_TORCH.items()}

DEFAULT_FLOAT = DType.F32
DEFAULT_INT = DType.I64


def promote_types(a: DType, b: DType) -> DType:
    """torch.promote_types: the smallest type both values fit in."""
    return DType.from_torch(torch.promote_types(a.to_torch(), b.to_torch()))


def result_type(dimensioned: list[DType], zero_dim: list[DType]) -> DType:
    """torch.result_type over tensor operands.

    Zero-dimensional tensors take part only when their category (bool < int < float) is higher
    than that of every dimensioned operand; python scalars reach the IR as zero-dim tensors
    whose dtype the frontend chose so that this rule gives torch's answer.
    """
    if not dimensioned and not zero_dim:
        raise ValueError("result_type needs at least one operand")
    dim = _promote_all(dimensioned)
    zero = _promote_all(zero_dim)
    if dim is None:
        assert zero is not None
        return zero
    if zero is None or zero.category <= dim.category:
        return dim
    return zero


def _promote_all(types: list[DType]) -> DType | None:
    out: DType | None = None
    for t in types:
        out = t if out is None else promote_types(out, t)
    return out
