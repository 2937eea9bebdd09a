"""Requests are checked as bytes before protobuf parses them, and services are registered with
that check.

Parsing builds an object per length-delimited field (string, bytes, nested message): ~24-64
bytes each however short, so a message of millions of empty dims, strings or v2 inputs costs
12-33x its size in memory before any of our checks sees it (a 64 MiB message: ~2 GiB). Before
parsing, the wire bytes are walked (without building anything) following the schema, and a
message with more than ``max_request_fields`` fields in all is refused INVALID_ARGUMENT. Small
messages are not walked: at most 33x of ``SCAN_FROM_BYTES`` is nothing to guard; nor is one
too short to hold more fields than the limit (every field takes two bytes at least: its key
and a one-byte varint or length, its contents apart), which parsing bounds just the same.

A message that is not valid protobuf is INVALID_ARGUMENT as well (gRPC answers a deserializer
error with INTERNAL "Exception deserializing request!"). The refusal is raised as InvalidInput
in the method's place, and answered like any other error (``calls.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError

from fpga_serve.core.errors import InvalidInput

SCAN_FROM_BYTES = 64 << 10
"""Messages smaller than this are parsed without the walk."""


@dataclass(frozen=True)
class Refused:
    """What the deserializer hands the handler instead of a request it will not parse."""

    message: str


class _Malformed(Exception):
    pass


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def count_fields(data: bytes, descriptor: Descriptor, limit: int) -> int | None:
    """Fields in ``data`` (a serialized ``descriptor`` message), nested messages included, as
    the schema says; None as soon as there are more than ``limit``. A packed repeated field
    counts once. Raises _Malformed on bytes that are not protobuf. Depth first: the stack holds
    the path to the current message only."""
    count = 0
    message = _MESSAGE
    stack: list[tuple[int, Descriptor | None]] = []  # (end, descriptor) of enclosing messages
    pos, end = 0, len(data)
    desc: Descriptor | None = descriptor
    while True:
        if pos >= end:
            if pos > end:
                raise _Malformed("a field runs past the end of its message")
            if not stack:
                return count
            end, desc = stack.pop()
            continue
        key, pos = _varint(data, pos, end)
        count += 1
        if count > limit:
            return None
        wire = key & 7
        if wire == 0:
            _, pos = _varint(data, pos, end)
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise _Malformed("a field runs past the end of its message")
            field = desc.fields_by_number.get(key >> 3) if desc is not None else None
            if field is not None and field.type == message:
                stack.append((end, desc))
                end, desc = pos + length, field.message_type
            else:
                pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise _Malformed(f"wire type {wire} (groups are not used by these protocols)")


_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def walked_from(max_fields: int) -> int:
    """The size from which a message is walked: ``SCAN_FROM_BYTES``, or the first size that
    can hold more than ``max_fields`` fields of two bytes each, whichever is larger."""
    return max(SCAN_FROM_BYTES, 2 * (max_fields + 1))


def guarded_deserializer(cls: Any, max_fields: int) -> Callable[[bytes], Any]:
    """``cls.FromString`` behind the field walk; returns ``Refused`` instead of raising."""
    name = cls.DESCRIPTOR.full_name
    walk_from = walked_from(max_fields)

    def deserialize(data: bytes) -> Any:
        try:
            if len(data) >= walk_from and count_fields(data, cls.DESCRIPTOR, max_fields) is None:
                return Refused(
                    f"the request has more than {max_fields:,} protobuf fields "
                    f"(max_request_fields): each costs ~50 bytes once parsed, however short"
                )
            return cls.FromString(data)
        except (_Malformed, DecodeError) as exc:
            return Refused(f"the request is not a valid {name}: {exc}")

    return deserialize


def add_service(
    server: grpc.Server | grpc.aio.Server,
    servicer: Any,
    service: ServiceDescriptor,
    max_fields: int,
) -> None:
    """Register every unary method of ``service`` on ``servicer`` (what the generated
    ``add_*Servicer_to_server`` does), with the guarded deserializer; a refused request is
    InvalidInput (INVALID_ARGUMENT) before the method runs."""
    handlers = {}
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            raise ValueError(f"{method.full_name} streams; add_service registers unary methods")
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _behaviour(getattr(servicer, method.name)),
            request_deserializer=guarded_deserializer(request_cls, max_fields),
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def _behaviour(impl: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """``impl`` behind the refusal, of its kind: a coroutine function stays one (grpc.aio
    runs it on its loop; a plain function runs on an RPC thread)."""
    if inspect.iscoroutinefunction(impl):

        async def on_loop(request: Any, context: Any) -> Any:
            if isinstance(request, Refused):
                raise InvalidInput(request.message)
            return await impl(request, context)

        return on_loop

    def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Refused):
            raise InvalidInput(request.message)
        return impl(request, context)

    return behaviour
