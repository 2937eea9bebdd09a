"""Tensor descriptions shared by the zip manifest, the runtime and every protocol.

Data types are named as in the Open Inference Protocol (KServe v2): BYTES, FP32, INT8, ...
Shapes use -1 for a dimension of any size; dimension 0 is the batch dimension.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from fpga_serve.core.errors import InvalidInput


class DType(str, Enum):
    """Element types a pipeline can take or return."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @property
    def numpy(self) -> np.dtype[Any]:
        """The numpy dtype holding this type (object for BYTES)."""
        return np.dtype(_NUMPY[self])

    @classmethod
    def from_numpy(cls, dtype: Any) -> DType:
        """The DType of a numpy dtype; raises InvalidInput for types no protocol carries."""
        dt = np.dtype(dtype)
        if dt.kind in ("S", "O", "U"):
            return cls.BYTES
        found = _FROM_NUMPY.get(dt)
        if found is None:
            raise InvalidInput(f"unsupported tensor dtype {dt}")
        return found


_NUMPY: dict[DType, str] = {
    DType.BOOL: "bool",
    DType.UINT8: "uint8",
    DType.INT8: "int8",
    DType.INT16: "int16",
    DType.INT32: "int32",
    DType.INT64: "int64",
    DType.FP16: "float16",
    DType.FP32: "float32",
    DType.FP64: "float64",
    DType.BYTES: "object",
}
_FROM_NUMPY: dict[np.dtype[Any], DType] = {
    np.dtype(name): member for member, name in _NUMPY.items() if member is not DType.BYTES
}


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of one stage or pipeline tensor (-1: any size)."""

    name: str
    dtype: DType
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype.value, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        try:
            name = data["name"]
            dtype = DType(data["dtype"])
            shape = tuple(int(d) for d in data["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"bad tensor spec {dict(data)!r}: {exc}") from exc
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"bad tensor spec {dict(data)!r}: name must be a non-empty string")
        if any(d < -1 for d in shape):
            raise InvalidInput(f"bad tensor spec {name!r}: dimensions must be -1 or >= 0")
        return cls(name=name, dtype=dtype, shape=shape)

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        """True when a concrete (or -1 wildcard) shape fits this spec."""
        if len(shape) != len(self.shape):
            return False
        return all(a == -1 or b in (-1, a) for a, b in zip(self.shape, shape, strict=True))

    def feeds(self, other: TensorSpec) -> bool:
        """True when a tensor described by ``self`` can be the input described by ``other``."""
        return self.dtype == other.dtype and other.accepts_shape(self.shape)

    def describe(self) -> str:
        dims = ",".join("?" if d == -1 else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.value}[{dims}]"

    def check(self, array: np.ndarray, max_batch: int | None = None) -> None:
        """Raise InvalidInput naming the problem when ``array`` does not fit this spec."""
        got = DType.from_numpy(array.dtype)
        if got != self.dtype:
            raise InvalidInput(
                f"input {self.name!r} has dtype {got.value}, expected {self.dtype.value}"
            )
        if not self.accepts_shape(array.shape):
            raise InvalidInput(
                f"input {self.name!r} has shape {list(array.shape)}, expected {self.describe()}"
            )
        if max_batch is not None and array.ndim > 0 and array.shape[0] > max_batch:
            raise InvalidInput(
                f"input {self.name!r} has batch {array.shape[0]}, over the limit of {max_batch}"
            )
        if array.ndim > 0 and array.shape[0] == 0:
            raise InvalidInput(f"input {self.name!r} is empty (batch 0)")
