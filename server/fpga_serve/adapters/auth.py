"""Bearer keys for gRPC and /metrics: primary and secondary, constant-time, rotatable live.

Keys come from ``api_keys`` (environment ``FPGA_SERVE_API_KEYS``, a JSON list) and/or
``api_keys_file`` (one key per line; re-read whenever the file changes, so a rotated Kubernetes
Secret takes effect without a restart). Clients send ``authorization: Bearer <key>``; the bare key
(what the early Brainwave client sent) is accepted too. Keys never reach a log line.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

# Orchestrator probes (kubelet's gRPC probe) cannot send keys: health stays open.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


class KeyRing:
    """The accepted keys; ``check`` is constant-time in the key compared."""

    def __init__(self, keys: Sequence[str] = (), key_file: Path | None = None) -> None:
        self._static = [k.strip().encode() for k in keys if k.strip()]
        self._file = key_file
        self._file_keys: list[bytes] = []
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._reload()

    @property
    def enabled(self) -> bool:
        return bool(self._static or self._file is not None)

    def _reload(self) -> None:
        if self._file is None:
            return
        try:
            st = os.stat(self._file)
        except OSError as exc:
            # Keep the last good keys: a Secret being swapped can vanish for a moment.
            log.warning("cannot read the API key file %s: %s", self._file, exc.strerror)
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        lines = self._file.read_text().splitlines()
        self._file_keys = [
            ln.strip().encode() for ln in lines if ln.strip() and not ln.startswith("#")
        ]
        self._stamp = stamp
        log.info("API keys loaded from %s (%d keys)", self._file, len(self._file_keys))

    def check(self, presented: str | None) -> bool:
        if not self.enabled:
            return True
        if not presented:
            return False
        token = presented.strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        candidate = token.encode()
        with self._lock:
            self._reload()
            keys = self._static + self._file_keys
        # Compare against every key, without stopping early, so timing reveals nothing.
        ok = False
        for key in keys:
            ok |= hmac.compare_digest(candidate, key)
        return ok


def _denied(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid key with UNAUTHENTICATED (health stays open)."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    async def intercept_service(  # type: ignore[override]  # grpc-stubs: never None
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        presented = metadata.get("authorization")
        if isinstance(presented, bytes):
            presented = presented.decode("utf-8", "replace")
        if self.keys.check(presented):
            return handler
        return _denied(handler)
