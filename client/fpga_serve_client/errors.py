"""Errors the thin client raises."""

from __future__ import annotations

import grpc


class TensorConversionError(ValueError):
    """A tensor message does not describe a valid array (the message names the tensor)."""


class ServiceError(Exception):
    """A call failed; ``code`` is the gRPC status code, ``details`` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
