"""The field walk before parsing (adapters/wire.py): a message is refused exactly when it holds
more than the limit's fields, though messages too short to hold that many are not walked."""

from __future__ import annotations

from fpga_serve.adapters import wire
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2

LIMIT = 40_000
"""Large enough that the two-bytes-a-field size, not SCAN_FROM_BYTES, decides the walk."""


def _empty_inputs(count: int) -> bytes:
    """The densest message: ``count`` empty inputs, two bytes each (key, length 0)."""
    request = v2.ModelInferRequest()
    for _ in range(count):
        request.inputs.add()
    return request.SerializeToString()


def test_a_message_is_refused_exactly_when_it_holds_more_fields_than_the_limit() -> None:
    assert wire.walked_from(LIMIT) > wire.SCAN_FROM_BYTES
    deserialize = wire.guarded_deserializer(v2.ModelInferRequest, LIMIT)
    skipped = 0
    for fields in range(LIMIT - 4, LIMIT + 4):
        data = _empty_inputs(fields)
        refused = isinstance(deserialize(data), wire.Refused)
        assert refused == (fields > LIMIT), (fields, len(data))
        assert (wire.count_fields(data, v2.ModelInferRequest.DESCRIPTOR, LIMIT) is None) == refused
        skipped += len(data) < wire.walked_from(LIMIT)
    assert skipped  # some of these were parsed without the walk


def test_small_messages_are_not_walked() -> None:
    assert wire.walked_from(1024) == wire.SCAN_FROM_BYTES
