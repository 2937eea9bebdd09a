"""One error base for the whole server; adapters map ``Status`` to protocol codes in one place."""

from __future__ import annotations

from enum import Enum

NAME_CHARS = 64
"""Longest name (model, version, input, output, member) echoed whole in an error message."""
MESSAGE_CHARS = 1024
"""Longest error message answered; gRPC sends it as metadata, and clients refuse metadata over
8-16 KiB (non-ASCII characters are sent percent-encoded, 3 bytes each)."""


def shown(name: object, limit: int = NAME_CHARS) -> str:
    """``repr(name)`` for an error message, cut to ``limit`` characters (with the full length)
    so that a client-chosen name cannot make the message unbounded."""
    text = name if isinstance(name, str) else str(name)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def bounded(message: str, limit: int = MESSAGE_CHARS) -> str:
    """The message cut to ``limit`` characters, saying so."""
    if len(message) <= limit:
        return message
    return message[: limit - 16] + " ... (truncated)"


class Status(Enum):
    """Protocol-neutral status, named after the gRPC codes they map to."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    ABORTED = "ABORTED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    DATA_LOSS = "DATA_LOSS"
    INTERNAL = "INTERNAL"


class FpgaServeError(Exception):
    """Base of every error fpga-serve raises on purpose; ``status`` says how to answer it."""

    status: Status = Status.INTERNAL

    def __init__(self, message: str, status: Status | None = None) -> None:
        message = bounded(message)
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class InvalidInput(FpgaServeError):
    """A request (or a value given to the SDK) is malformed: wrong name, dtype, shape, bytes."""

    status = Status.INVALID_ARGUMENT


class ModelNotFound(FpgaServeError):
    """No loaded model (or version) has the requested name."""

    status = Status.NOT_FOUND


class ModelLoadError(FpgaServeError):
    """A model archive could not be validated or loaded; nothing of it was used."""

    status = Status.FAILED_PRECONDITION


class CompileError(FpgaServeError):
    """A model cannot be lowered to the overlay (unsupported layer, bad weights, ...)."""

    status = Status.INVALID_ARGUMENT


class DeviceError(FpgaServeError):
    """The accelerator (or its twin) failed; the affected requests fail, the server lives on."""

    status = Status.UNAVAILABLE


class Overloaded(FpgaServeError):
    """A bounded queue is full."""

    status = Status.RESOURCE_EXHAUSTED


class Unauthenticated(FpgaServeError):
    """Missing or wrong credentials."""

    status = Status.UNAUTHENTICATED


class DeadlineExceeded(FpgaServeError):
    """The request's deadline passed before it could run."""

    status = Status.DEADLINE_EXCEEDED


class ModelRetired(FpgaServeError):
    """The model version was unloaded or replaced after the request picked it; retry resolves
    the current version (the data plane does that once, so swaps fail no request)."""

    status = Status.UNAVAILABLE


class ShuttingDown(FpgaServeError):
    """The server is stopping: it takes no new calls, and cuts off what has not finished at
    the end of its shutdown grace; retryable (on another replica)."""

    status = Status.UNAVAILABLE
