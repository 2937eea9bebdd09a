"""The labels metadata is a tensorflow.TensorProto in its Any, so TF Serving's own clients read
it the way they read any TensorProto (Any.Unpack into TensorFlow's class, tf.make_ndarray)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from conftest import LABELS
from fpga_serve_client import PredictionClient, TensorConversionError, anytensor
from fpga_serve_client.protos import get_model_metadata_pb2, prediction_service_pb2_grpc
from google.protobuf import any_pb2


def test_tensorflow_unpacks_the_labels(tiny_server: Any) -> None:
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    with grpc.insecure_channel(tiny_server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        reply = stub.GetModelMetadata(
            get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["labels"]), timeout=30
        )
    packed = reply.metadata["labels"]
    assert packed.type_url == "type.googleapis.com/tensorflow.TensorProto"
    tensor = tensor_pb2.TensorProto()
    assert packed.Unpack(tensor)  # TensorFlow's own class accepts it
    assert [b.decode() for b in tf.make_ndarray(tensor)] == LABELS
    with PredictionClient(tiny_server.address) as client:
        assert client.labels() == LABELS


def test_unpack_refuses_another_type() -> None:
    with pytest.raises(TensorConversionError, match=r"got google\.protobuf\.Duration"):
        anytensor.unpack(any_pb2.Any(type_url="type.googleapis.com/google.protobuf.Duration"))
