"""Wire converters: round trips for every dtype, TF's typed fields, and every malformed case."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from fpga_serve_client import (
    TensorConversionError,
    from_infer_input,
    from_infer_output,
    from_tensor_proto,
    to_infer_input,
    to_infer_output,
    to_tensor_proto,
)
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import tf_tensor_pb2

DTYPES = [
    "bool",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
]


def sample(dtype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    rng = np.random.default_rng(0)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


def strings() -> np.ndarray:
    arr = np.empty((2, 2), dtype=object)
    arr[:] = [[b"", b"\x00\xff"], [b"jpeg bytes", b"x" * 1000]]
    return arr


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_proto_round_trip(dtype: str) -> None:
    array = sample(dtype)
    back = from_tensor_proto(to_tensor_proto(array, "t"), "t")
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_v2_round_trip(dtype: str, raw: bool) -> None:
    array = sample(dtype)
    if dtype == "float16" and not raw:
        with pytest.raises(TensorConversionError, match="only be sent raw"):
            to_infer_input("t", array, raw=False)
        return
    tensor, data = to_infer_input("t", array, raw=raw)
    back = from_infer_input(tensor, data)
    np.testing.assert_array_equal(back, array)
    assert back.dtype == array.dtype
    out, out_raw = to_infer_output("t", array, raw=raw)
    np.testing.assert_array_equal(from_infer_output(out, out_raw), array)


def test_strings_round_trip_both_protocols() -> None:
    array = strings()
    back = from_tensor_proto(to_tensor_proto(array, "s"), "s")
    assert back.dtype == object and back.tolist() == array.tolist()
    for raw in (True, False):
        tensor, data = to_infer_input("s", array, raw=raw)
        assert tensor.datatype == "BYTES"
        assert from_infer_input(tensor, data).tolist() == array.tolist()
    _, data = to_infer_input("s", array, raw=True)
    assert data is not None and data[:4] == struct.pack("<I", 0)  # Triton's length prefix


def test_typed_fields_and_single_value_broadcast() -> None:
    proto = tf_tensor_pb2.TensorProto(dtype=tf_tensor_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=2)
    proto.float_val.extend([1, 2, 3, 4])
    np.testing.assert_array_equal(from_tensor_proto(proto), [[1, 2], [3, 4]])
    del proto.float_val[:]
    proto.float_val.append(7)  # TF: one value fills the shape
    np.testing.assert_array_equal(from_tensor_proto(proto), np.full((2, 2), 7, np.float32))
    ints = tf_tensor_pb2.TensorProto(dtype=tf_tensor_pb2.DT_INT8, int_val=[-3, 4])
    ints.tensor_shape.dim.add(size=2)
    assert from_tensor_proto(ints).tolist() == [-3, 4] and from_tensor_proto(ints).dtype == np.int8
    half = to_tensor_proto(np.array([1.5, -2], np.float16))
    typed = tf_tensor_pb2.TensorProto(
        dtype=tf_tensor_pb2.DT_HALF,
        tensor_shape=half.tensor_shape,
        half_val=np.array([1.5, -2], np.float16).view(np.uint16),
    )
    np.testing.assert_array_equal(from_tensor_proto(typed), from_tensor_proto(half))


def _proto(dtype: int, dims: list[int]) -> tf_tensor_pb2.TensorProto:
    proto = tf_tensor_pb2.TensorProto(dtype=dtype)  # type: ignore[arg-type]
    for d in dims:
        proto.tensor_shape.dim.add(size=d)
    return proto


def test_malformed_tensor_protos_name_the_problem() -> None:
    bad_size = _proto(tf_tensor_pb2.DT_FLOAT, [3])
    bad_size.tensor_content = b"\x00" * 8
    with pytest.raises(TensorConversionError, match=r"'img'.*8 bytes.*needs 12"):
        from_tensor_proto(bad_size, "img")
    with pytest.raises(TensorConversionError, match="negative dimension"):
        from_tensor_proto(_proto(tf_tensor_pb2.DT_FLOAT, [-2]), "t")
    with pytest.raises(TensorConversionError, match="unsupported dtype DT_RESOURCE"):
        from_tensor_proto(_proto(tf_tensor_pb2.DT_RESOURCE, [1]), "t")
    count = _proto(tf_tensor_pb2.DT_STRING, [3])
    count.string_val.extend([b"a", b"b"])
    with pytest.raises(TensorConversionError, match="2 values for shape"):
        from_tensor_proto(count, "t")
    with pytest.raises(TensorConversionError, match="too large"):
        from_tensor_proto(_proto(tf_tensor_pb2.DT_FLOAT, [1 << 20, 1 << 20]), "t")
    with pytest.raises(TensorConversionError, match="cannot be sent"):
        to_tensor_proto(np.array([1 + 2j]), "c")


def test_malformed_v2_tensors_name_the_problem() -> None:
    tensor = v2.ModelInferRequest.InferInputTensor(name="images", datatype="BYTES", shape=[2])
    with pytest.raises(TensorConversionError, match="claims 100 bytes"):
        from_infer_input(tensor, struct.pack("<I", 100) + b"abc")
    with pytest.raises(TensorConversionError, match="1 BYTES elements"):
        from_infer_input(tensor, struct.pack("<I", 1) + b"a")
    with pytest.raises(TensorConversionError, match="truncated"):
        from_infer_input(tensor, struct.pack("<I", 1) + b"a" + b"\x01")
    fp = v2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[2])
    with pytest.raises(TensorConversionError, match="needs 8"):
        from_infer_input(fp, b"\x00" * 7)
    fp.contents.fp32_contents.extend([1.0, 2.0])
    with pytest.raises(TensorConversionError, match="both raw and typed"):
        from_infer_input(fp, b"\x00" * 8)
    with pytest.raises(TensorConversionError, match="unknown datatype 'FP8'"):
        from_infer_input(v2.ModelInferRequest.InferInputTensor(name="x", datatype="FP8"), b"")
    few = v2.ModelInferRequest.InferInputTensor(name="x", datatype="INT32", shape=[3])
    few.contents.int_contents.extend([1])
    with pytest.raises(TensorConversionError, match="1 values for shape"):
        from_infer_input(few)


def test_headers_are_read_without_decoding_and_count_the_fill_rule() -> None:
    from fpga_serve_client.convert import infer_input_header, tensor_proto_header

    filled = _proto(tf_tensor_pb2.DT_STRING, [1 << 27])
    filled.string_val.append(b"x" * 10)
    header = tensor_proto_header(filled, "s")
    assert (header.datatype, header.shape, header.payload_bytes) == ("BYTES", (1 << 27,), 10 << 27)
    floats = _proto(tf_tensor_pb2.DT_DOUBLE, [1 << 40, 0])
    floats.double_val.append(1.0)
    assert tensor_proto_header(floats).payload_bytes == 0  # the server bounds each dimension
    assert tensor_proto_header(_proto(tf_tensor_pb2.DT_HALF, [3, 2])).datatype == "FP16"
    tensor = v2.ModelInferRequest.InferInputTensor(name="b", datatype="BYTES", shape=[2, 3])
    assert infer_input_header(tensor, b"\x00" * 40).payload_bytes == 40
    fp = v2.ModelInferRequest.InferInputTensor(name="x", datatype="FP64", shape=[5, 7])
    assert infer_input_header(fp).payload_bytes == 5 * 7 * 8
    with pytest.raises(TensorConversionError, match="33 dimensions, over the limit of 32"):
        tensor_proto_header(_proto(tf_tensor_pb2.DT_FLOAT, [1] * 33), "t")


def test_one_string_fills_the_shape_exactly() -> None:
    for value in (b"ab\0\0", b"\0", b"\xff" * 3, b""):
        proto = _proto(tf_tensor_pb2.DT_STRING, [2, 2])
        proto.string_val.append(value)
        array = from_tensor_proto(proto, "s")
        assert array.dtype == object and array.shape == (2, 2)
        assert all(item == value for item in array.reshape(-1)), array


def test_a_zero_does_not_excuse_a_huge_dimension() -> None:
    with pytest.raises(TensorConversionError, match="too large"):
        from_tensor_proto(_proto(tf_tensor_pb2.DT_FLOAT, [0, 1 << 62]), "t")
    for dims in ([0, 1 << 62], [0, 1 << 40, 1 << 40], [1 << 62, 0]):
        tensor = v2.ModelInferRequest.InferInputTensor(name="t", datatype="BYTES", shape=dims)
        with pytest.raises(TensorConversionError, match="too large"):
            from_infer_input(tensor, b"")
    extra = v2.ModelInferRequest.InferInputTensor(name="t", datatype="BYTES", shape=[1])
    with pytest.raises(TensorConversionError, match="more BYTES elements than shape"):
        from_infer_input(extra, struct.pack("<I", 1) + b"a" + struct.pack("<I", 0))


def test_messages_quote_long_names_cut_short() -> None:
    name = "n" * 20_000
    with pytest.raises(TensorConversionError) as err:
        from_tensor_proto(_proto(tf_tensor_pb2.DT_RESOURCE, [1]), name)
    assert len(str(err.value)) < 200 and "20,000 characters" in str(err.value)


def test_big_endian_and_strided_arrays_go_out_little_endian_in_c_order() -> None:
    """The wire is little-endian, row-major: a big-endian or a transposed array is sent as the
    same bytes as its native, contiguous copy (the fast path is only for native arrays)."""
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    for array in (base.astype(">f4"), base.T, base.astype(">f4").T, base[:, ::2]):
        want = np.ascontiguousarray(array, dtype="<f4")
        _, raw = to_infer_output("y", array, raw=True)
        assert raw == want.tobytes()
        assert to_tensor_proto(array).tensor_content == want.tobytes()
        tensor, raw = to_infer_output("y", array, raw=True)
        np.testing.assert_array_equal(from_infer_output(tensor, raw), want)
