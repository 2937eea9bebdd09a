"""Tensor descriptions shared by the zip manifest, the runtime and every protocol.

Data types are named as in the Open Inference Protocol (KServe v2): BYTES, FP32, INT8, ...
Shapes use -1 for a dimension of any size; dimension 0 is the batch dimension.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from fpga_serve.core.errors import InvalidInput, shown


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


BYTES_OVERHEAD = 32
"""Bytes a BYTES element costs beyond its length: its reference in the request's array and the
string header TensorFlow copies it into (a ``tstring`` is 24 bytes)."""


def shape_text(shape: Sequence[int], dims: int = 8) -> str:
    """A shape for an error message, the first ``dims`` dimensions and the rank beyond that."""
    if len(shape) <= dims:
        return str(list(shape))
    return f"[{', '.join(map(str, shape[:dims]))}, ... ({len(shape)} dimensions)]"


DEFAULT_IMAGE_PIXELS = 1 << 24
"""The server's default ``max_image_pixels`` (16 Mpx, 4096 x 4096)."""


@dataclass(frozen=True)
class RequestLimits:
    """What one request may declare. Built from the server's settings by
    ``ServerSettings.request_limits`` (``max_batch_size``, ``max_request_elements``,
    ``max_request_bytes``, ``max_image_pixels``); these defaults are the server's."""

    max_batch_size: int = 64
    """Items in the batch dimension of every input of one request (Triton's
    ``max_batch_size``); not the device batch, which is ``BatchingConfig.max_size``."""
    max_elements: int = 1 << 25
    """Elements over all inputs, and in any one dimension."""
    max_bytes: int = 128 << 20
    """Bytes the decoded inputs occupy (BYTES: their lengths + BYTES_OVERHEAD per element)."""
    max_image_pixels: int | None = DEFAULT_IMAGE_PIXELS
    """Pixels of any image as decoded, and as the preprocessing resizes it (None: no check)."""


@dataclass(frozen=True)
class BatchingConfig:
    """How a model's dynamic batcher forms device batches (runtime/batching.py), Triton's names
    where they exist. Built from the server's ``batch_*`` settings by
    ``ServerSettings.batching``; these defaults are the server's."""

    max_size: int = 8
    """Most items in one device batch (setting ``batch_max_size``); 1 turns batching off."""
    max_queue_delay_us: int = 0
    """Longest a request waits for others to join its batch (``batch_max_queue_delay_us``);
    0: batch only what queued while the previous batch ran, never delaying a lone request."""
    preferred_sizes: tuple[int, ...] = ()
    """Sizes dispatched at once when reached (``batch_preferred_sizes``)."""
    max_queue_size: int = 128
    """Requests waiting at most (``max_queue_size``); one more is refused RESOURCE_EXHAUSTED."""
    concurrency: int = 1
    """Batches executing at once, each on its own worker thread (``batch_concurrency``)."""

    def __post_init__(self) -> None:
        if (
            self.max_size < 1
            or self.max_queue_delay_us < 0
            or self.max_queue_size < 1
            or self.concurrency < 1
        ):
            raise InvalidInput(f"bad batching config {self}")


@dataclass(frozen=True)
class TensorHeader:
    """What a request declares about one input, read before its data is decoded."""

    dtype: str
    """A DType value; or the wire's own name of a type no model takes (UINT16, ...)."""
    shape: tuple[int, ...]
    payload_bytes: int
    """Bytes of the decoded values (BYTES: the sum of their lengths, an upper bound)."""

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """What decoding it allocates, as counted against ``max_bytes``."""
        extra = BYTES_OVERHEAD * self.elements if self.dtype == DType.BYTES.value else 0
        return self.payload_bytes + extra

    @classmethod
    def of(cls, array: np.ndarray) -> TensorHeader:
        """The header of an array given in process (SDK callers, tests)."""
        dtype = DType.from_numpy(array.dtype)
        if dtype is DType.BYTES:
            payload = sum(len(item) for item in array.reshape(-1) if hasattr(item, "__len__"))
        else:
            payload = int(array.nbytes)
        return cls(dtype.value, tuple(int(d) for d in array.shape), payload)


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

    def check_header(self, header: TensorHeader, limits: RequestLimits) -> None:
        """Raise InvalidInput naming the problem when a declared input does not fit this spec
        or the limits; nothing of its data has been decoded yet."""
        name = shown(self.name)
        if header.dtype != self.dtype.value:
            raise InvalidInput(
                f"input {name} has dtype {shown(header.dtype)}, expected {self.dtype.value}"
            )
        if not self.accepts_shape(header.shape):
            raise InvalidInput(
                f"input {name} has shape {shape_text(header.shape)}, expected {self.describe()}"
            )
        if header.shape and header.shape[0] > limits.max_batch_size:
            raise InvalidInput(
                f"input {name} has batch {header.shape[0]:,}, over the limit of "
                f"{limits.max_batch_size} (max_batch_size)"
            )
        for index, size in enumerate(header.shape):
            if size > limits.max_elements:
                raise InvalidInput(
                    f"input {name} dimension {index} is {size:,}, over the limit of "
                    f"{limits.max_elements:,} elements (max_request_elements)"
                )
        if header.shape and header.shape[0] == 0:
            raise InvalidInput(f"input {name} is empty (batch 0)")

    def check(self, array: np.ndarray, limits: RequestLimits | None = None) -> None:
        """Raise InvalidInput naming the problem when ``array`` does not fit this spec."""
        self.check_header(TensorHeader.of(array), limits or RequestLimits())
