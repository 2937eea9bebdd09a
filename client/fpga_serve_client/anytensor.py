"""TensorProtos inside ``google.protobuf.Any`` under TensorFlow's own type name.

The stubs define TensorFlow's TensorProto as ``fpga_serve.tfcompat.TensorProto`` (so the server
can import TensorFlow beside them, see docs/architecture.md); the bytes are TensorFlow's, but
``Any.Pack`` would name our type, and TF Serving's clients, which unpack into
``tensorflow.TensorProto``, would refuse it. So tensors in an Any (the ``labels`` metadata) are
packed under ``type.googleapis.com/tensorflow.TensorProto``, and either name is read back.
"""

from __future__ import annotations

from google.protobuf import any_pb2

from fpga_serve_client.errors import TensorConversionError
from fpga_serve_client.protos import tf_tensor_pb2

TYPE_URL = "type.googleapis.com/tensorflow.TensorProto"
_ACCEPTED = ("tensorflow.TensorProto", tf_tensor_pb2.TensorProto.DESCRIPTOR.full_name)


def pack(tensor: tf_tensor_pb2.TensorProto) -> any_pb2.Any:
    """An Any holding ``tensor`` as a ``tensorflow.TensorProto``."""
    return any_pb2.Any(type_url=TYPE_URL, value=tensor.SerializeToString())


def unpack(packed: any_pb2.Any) -> tf_tensor_pb2.TensorProto:
    """The TensorProto in ``packed`` (TensorFlow's type name or this package's)."""
    name = packed.type_url.rsplit("/", 1)[-1]
    if name not in _ACCEPTED:
        raise TensorConversionError(f"expected a tensorflow.TensorProto, got {name or 'nothing'}")
    tensor = tf_tensor_pb2.TensorProto()
    tensor.ParseFromString(packed.value)
    return tensor
