"""numpy <-> wire tensors, in to_/from_ pairs, shared by the client and the server's adapters.

TF Serving: ``TensorProto`` (tensor_content or typed ``*_val`` fields, TF's rule that one typed
value fills the whole shape). KServe v2: ``InferInputTensor``/``InferOutputTensor`` with typed
``contents`` or raw bytes (row-major little-endian; BYTES elements each prefixed by a 4-byte
little-endian length, as Triton lays them out). Strings are numpy object arrays of ``bytes``.
Every malformed message raises TensorConversionError naming the tensor and the problem.
"""

from __future__ import annotations

import math
import struct
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from fpga_serve_client.errors import TensorConversionError
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import tf_tensor_pb2

MAX_ELEMENTS = 1 << 31
"""Refuse shapes claiming more elements than this (in all, or in any one dimension) before
allocating anything; servers check their own, lower, limits from ``*_header`` first."""
MAX_RANK = 32
"""Most dimensions a shape may have (what a numpy 1.x array can hold)."""
NAME_CHARS = 64
"""Longest tensor name quoted whole in an error message."""


@dataclass(frozen=True)
class WireHeader:
    """What a wire tensor declares, read without decoding (or copying) its data."""

    datatype: str
    """The KServe v2 datatype name (also for TensorProto dtypes: DT_FLOAT is FP32)."""
    shape: tuple[int, ...]
    payload_bytes: int
    """Bytes its decoded values take: elements x item size; BYTES: the sum of the lengths (with
    TensorFlow's fill rule, elements x the one value's length), at most the message's size."""


def _label(name: str) -> str:
    """A tensor name for an error message, cut so that messages stay bounded."""
    if len(name) <= NAME_CHARS:
        return repr(name)
    return f"{name[:NAME_CHARS]!r}... ({len(name):,} characters)"


# numpy dtype name, TF DataType, KServe v2 datatype, TensorProto typed field, v2 contents field
_TYPES: list[tuple[str, int, str, str, str]] = [
    ("bool", tf_tensor_pb2.DT_BOOL, "BOOL", "bool_val", "bool_contents"),
    ("uint8", tf_tensor_pb2.DT_UINT8, "UINT8", "int_val", "uint_contents"),
    ("uint16", tf_tensor_pb2.DT_UINT16, "UINT16", "int_val", "uint_contents"),
    ("uint32", tf_tensor_pb2.DT_UINT32, "UINT32", "uint32_val", "uint_contents"),
    ("uint64", tf_tensor_pb2.DT_UINT64, "UINT64", "uint64_val", "uint64_contents"),
    ("int8", tf_tensor_pb2.DT_INT8, "INT8", "int_val", "int_contents"),
    ("int16", tf_tensor_pb2.DT_INT16, "INT16", "int_val", "int_contents"),
    ("int32", tf_tensor_pb2.DT_INT32, "INT32", "int_val", "int_contents"),
    ("int64", tf_tensor_pb2.DT_INT64, "INT64", "int64_val", "int64_contents"),
    ("float16", tf_tensor_pb2.DT_HALF, "FP16", "half_val", ""),
    ("float32", tf_tensor_pb2.DT_FLOAT, "FP32", "float_val", "fp32_contents"),
    ("float64", tf_tensor_pb2.DT_DOUBLE, "FP64", "double_val", "fp64_contents"),
    ("object", tf_tensor_pb2.DT_STRING, "BYTES", "string_val", "bytes_contents"),
]
_BY_NUMPY = {t[0]: t for t in _TYPES}
_KEY_OF_DTYPE = {np.dtype(t[0]): t[0] for t in _TYPES if t[0] != "object"}
"""Native-order numeric dtypes to their names (``dtype.name`` is slow: it is computed)."""
_LITTLE = sys.byteorder == "little"
_BY_TF = {t[1]: t for t in _TYPES}
_BY_V2 = {t[2]: t for t in _TYPES}


def _np_name(array: np.ndarray, name: str) -> str:
    known = _KEY_OF_DTYPE.get(array.dtype)
    if known is not None:
        return known
    kind = array.dtype.kind
    if kind in ("O", "S", "U"):
        return "object"
    key = str(array.dtype.name)
    if key not in _BY_NUMPY:
        raise TensorConversionError(f"tensor {_label(name)}: dtype {array.dtype} cannot be sent")
    return key


def _as_bytes_array(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "O":
        return array
    if array.dtype.kind == "U":
        return np.asarray(np.vectorize(lambda s: s.encode(), otypes=[object])(array))
    return np.asarray(np.vectorize(bytes, otypes=[object])(array))


def _declared_shape(dims: Any, rank: int, name: str) -> tuple[int, ...]:
    """The shape as declared (rank bounded, no negative sizes), not yet checked for size."""
    if rank > MAX_RANK:
        raise TensorConversionError(
            f"tensor {_label(name)}: {rank} dimensions, over the limit of {MAX_RANK}"
        )
    shape = tuple(map(int, dims))
    if shape and min(shape) < 0:
        raise TensorConversionError(
            f"tensor {_label(name)}: negative dimension in shape {_shape_text(shape)}"
        )
    return shape


def _checked_shape(shape: tuple[int, ...], name: str) -> int:
    """The element count, after checking every dimension and the product against MAX_ELEMENTS
    (a zero elsewhere does not excuse a huge dimension)."""
    if any(d > MAX_ELEMENTS for d in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise TensorConversionError(
            f"tensor {_label(name)}: shape {_shape_text(shape)} is too large"
        )
    return math.prod(shape)


def _shape_text(shape: tuple[int, ...]) -> str:
    if len(shape) <= 8:
        return str(list(shape))
    return f"[{', '.join(map(str, shape[:8]))}, ... ({len(shape)} dimensions)]"


def numpy_dtype_of_v2(datatype: str) -> np.dtype[Any]:
    """The numpy dtype for a KServe v2 datatype name."""
    if datatype not in _BY_V2:
        raise TensorConversionError(f"unknown datatype {_label(datatype)}")
    return np.dtype(_BY_V2[datatype][0])


def tf_datatype(datatype: str) -> int:
    """TensorFlow's DataType (DT_FLOAT, ...) for a KServe v2 datatype name (FP32, ...)."""
    if datatype not in _BY_V2:
        raise TensorConversionError(f"unknown datatype {_label(datatype)}")
    return _BY_V2[datatype][1]


def v2_datatype(array: np.ndarray) -> str:
    """The KServe v2 datatype name of an array."""
    return _BY_NUMPY[_np_name(array, "")][2]


# TF Serving TensorProto ------------------------------------------------------------------


def to_tensor_proto(array: Any, name: str = "") -> tf_tensor_pb2.TensorProto:
    """An array as a TensorProto: strings in string_val, numbers in tensor_content."""
    arr = np.asarray(array)
    key = _np_name(arr, name)
    proto = tf_tensor_pb2.TensorProto(dtype=_BY_NUMPY[key][1])  # type: ignore[arg-type]
    for d in arr.shape:
        proto.tensor_shape.dim.add(size=d)
    if key == "object":
        proto.string_val.extend(_as_bytes_array(arr).reshape(-1).tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(
            arr, dtype=arr.dtype.newbyteorder("<")
        ).tobytes()
    return proto


def _proto_type(proto: tf_tensor_pb2.TensorProto, name: str) -> tuple[str, int, str, str, str]:
    if proto.dtype not in _BY_TF:
        dtype_name = (
            tf_tensor_pb2.DataType.Name(proto.dtype)
            if proto.dtype in (tf_tensor_pb2.DataType.values())
            else str(proto.dtype)
        )
        raise TensorConversionError(f"tensor {_label(name)}: unsupported dtype {dtype_name}")
    if proto.tensor_shape.unknown_rank:
        raise TensorConversionError(f"tensor {_label(name)}: unknown rank")
    return _BY_TF[proto.dtype]


def _proto_shape(proto: tf_tensor_pb2.TensorProto, name: str) -> tuple[int, ...]:
    dims = proto.tensor_shape.dim
    return _declared_shape((d.size for d in dims), len(dims), name)


def tensor_proto_header(proto: tf_tensor_pb2.TensorProto, name: str = "") -> WireHeader:
    """A TensorProto's datatype, shape and decoded size, read without touching its values."""
    np_name, _, datatype, _, _ = _proto_type(proto, name)
    shape = _proto_shape(proto, name)
    count = math.prod(shape)
    if np_name != "object":
        return WireHeader(datatype, shape, count * np.dtype(np_name).itemsize)
    values = proto.string_val
    if len(values) == 1 and count > 1:  # TF's fill rule: the one value, count times
        return WireHeader(datatype, shape, count * len(values[0]))
    return WireHeader(datatype, shape, proto.ByteSize())  # the lengths sum to less


def from_tensor_proto(proto: tf_tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    """A TensorProto as an array (read-only when it wraps tensor_content).

    TensorFlow's rule that one typed value fills the whole shape applies (strings too, each
    element the same bytes object, trailing NULs kept); otherwise the count must match.
    """
    np_name, _, _, field, _ = _proto_type(proto, name)
    shape = _proto_shape(proto, name)
    count = _checked_shape(shape, name)
    if np_name == "object":
        if proto.tensor_content:
            raise TensorConversionError(f"tensor {_label(name)}: DT_STRING must use string_val")
        strings = proto.string_val
        _check_count(len(strings), count, shape, name, fill=True)
        if len(strings) == count:
            return _object_array(list(strings)).reshape(shape)
        filled = np.empty(shape, dtype=object)
        filled.fill(strings[0])  # not np.full: it would pass through a NUL-stripping 'S' array
        return filled
    dtype = np.dtype(np_name).newbyteorder("<")
    if proto.tensor_content:
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise TensorConversionError(
                f"tensor {_label(name)}: tensor_content has {len(proto.tensor_content)} bytes, "
                f"shape {_shape_text(shape)} of {np.dtype(np_name).name} needs "
                f"{count * dtype.itemsize}"
            )
        return (
            np.frombuffer(proto.tensor_content, dtype=dtype)
            .reshape(shape)
            .astype(np_name, copy=False)
        )
    typed = getattr(proto, field)
    _check_count(len(typed), count, shape, name, fill=True)
    values = _typed_values(typed, np_name, len(typed))
    if values.size == count:
        return values.reshape(shape)
    return np.full(shape, values[0], dtype=values.dtype)  # TF: one value fills the tensor


def _typed_values(typed: Any, np_name: str, n: int) -> np.ndarray:
    """A repeated scalar field as an array, without a Python list of all its values."""
    if np_name == "float16":  # half_val holds the bit patterns
        return np.fromiter(typed, dtype=np.uint16, count=n).view(np.float16)
    return np.fromiter(typed, dtype=np_name, count=n)


def _check_count(values: int, count: int, shape: tuple[int, ...], name: str, fill: bool) -> None:
    if values == count or (fill and values == 1 and count > 1):
        return
    raise TensorConversionError(
        f"tensor {_label(name)}: {values} values for shape {_shape_text(shape)} ({count} elements)"
    )


# KServe v2 ---------------------------------------------------------------------------------


def _raw_bytes(array: np.ndarray, key: str) -> bytes:
    if key == "object":
        parts = []
        for item in _as_bytes_array(array).reshape(-1):
            parts.append(struct.pack("<I", len(item)))
            parts.append(bytes(item))
        return b"".join(parts)
    if _LITTLE and array.dtype.isnative:
        return array.tobytes()  # C order, as it is
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _from_raw(raw: bytes, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    np_name = _BY_V2[datatype][0]
    count = _checked_shape(shape, name)
    if np_name == "object":
        items: list[bytes] = []
        view = memoryview(raw)
        offset = 0
        while offset < len(raw):
            if len(items) == count:
                raise TensorConversionError(
                    f"tensor {_label(name)}: more BYTES elements than shape "
                    f"{_shape_text(shape)} holds"
                )
            if offset + 4 > len(raw):
                raise TensorConversionError(f"tensor {_label(name)}: truncated BYTES length prefix")
            (length,) = struct.unpack_from("<I", view, offset)
            offset += 4
            if offset + length > len(raw):
                raise TensorConversionError(
                    f"tensor {_label(name)}: BYTES element {len(items)} claims {length} bytes, "
                    f"{len(raw) - offset} left"
                )
            items.append(bytes(view[offset : offset + length]))
            offset += length
        if len(items) != count:
            raise TensorConversionError(
                f"tensor {_label(name)}: {len(items)} BYTES elements for shape {_shape_text(shape)}"
            )
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    dtype = np.dtype(np_name).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise TensorConversionError(
            f"tensor {_label(name)}: raw contents have {len(raw)} bytes, shape "
            f"{_shape_text(shape)} of {datatype} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np_name, copy=False)


def _from_contents(
    contents: v2.InferTensorContents, datatype: str, shape: tuple[int, ...], name: str
) -> np.ndarray:
    np_name, _, _, _, field = _BY_V2[datatype]
    if not field:
        raise TensorConversionError(f"tensor {_label(name)}: {datatype} needs raw contents")
    typed = getattr(contents, field)
    count = _checked_shape(shape, name)
    _check_count(len(typed), count, shape, name, fill=False)  # v2 has no fill rule
    if np_name == "object":
        return _object_array(list(typed)).reshape(shape)
    return _typed_values(typed, np_name, count).reshape(shape)


def _v2_header(tensor: Any, name: str) -> tuple[str, tuple[int, ...]]:
    if tensor.datatype not in _BY_V2:
        raise TensorConversionError(
            f"tensor {_label(name)}: unknown datatype {_label(tensor.datatype)}"
        )
    return tensor.datatype, _declared_shape(tensor.shape, len(tensor.shape), name)


def infer_input_header(
    tensor: v2.ModelInferRequest.InferInputTensor, raw: bytes | None = None
) -> WireHeader:
    """A v2 input's datatype, shape and decoded size, read without touching its data."""
    datatype, shape = _v2_header(tensor, tensor.name)
    np_name = _BY_V2[datatype][0]
    if np_name != "object":
        return WireHeader(datatype, shape, math.prod(shape) * np.dtype(np_name).itemsize)
    size = len(raw) if raw is not None else tensor.contents.ByteSize()
    return WireHeader(datatype, shape, size)


def _v2_tensor_to_numpy(tensor: Any, raw: bytes | None) -> np.ndarray:
    name = tensor.name
    datatype, shape = _v2_header(tensor, name)
    has_contents = tensor.HasField("contents") and tensor.contents.ByteSize() > 0
    if raw is not None:
        if has_contents:
            raise TensorConversionError(f"tensor {_label(name)}: both raw and typed contents given")
        return _from_raw(raw, datatype, shape, name)
    return _from_contents(tensor.contents, datatype, shape, name)


def _to_v2(message: Any, name: str, array: Any, raw: bool) -> tuple[Any, bytes | None]:
    arr = np.asarray(array)
    key = _np_name(arr, name)
    tensor = message(name=name, datatype=_BY_NUMPY[key][2], shape=list(arr.shape))
    if raw:
        return tensor, _raw_bytes(arr, key)
    _set_contents(tensor.contents, arr, key, name)
    return tensor, None


def to_infer_input(
    name: str, array: Any, raw: bool = True
) -> tuple[v2.ModelInferRequest.InferInputTensor, bytes | None]:
    """An array as a v2 input tensor; with ``raw`` the data is returned separately, for
    ``raw_input_contents`` (in the same order as the inputs)."""
    return _to_v2(v2.ModelInferRequest.InferInputTensor, name, array, raw)


def from_infer_input(
    tensor: v2.ModelInferRequest.InferInputTensor, raw: bytes | None = None
) -> np.ndarray:
    return _v2_tensor_to_numpy(tensor, raw)


def to_infer_output(
    name: str, array: Any, raw: bool = True
) -> tuple[v2.ModelInferResponse.InferOutputTensor, bytes | None]:
    """An array as a v2 output tensor (raw data separately, for ``raw_output_contents``)."""
    return _to_v2(v2.ModelInferResponse.InferOutputTensor, name, array, raw)


def from_infer_output(
    tensor: v2.ModelInferResponse.InferOutputTensor, raw: bytes | None = None
) -> np.ndarray:
    return _v2_tensor_to_numpy(tensor, raw)


def _set_contents(contents: v2.InferTensorContents, arr: np.ndarray, key: str, name: str) -> None:
    field = _BY_NUMPY[key][4]
    if not field:
        raise TensorConversionError(f"tensor {_label(name)}: {arr.dtype} can only be sent raw")
    flat = _as_bytes_array(arr).reshape(-1) if key == "object" else arr.reshape(-1)
    getattr(contents, field).extend(flat.tolist())


def _object_array(values: list[bytes]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr
