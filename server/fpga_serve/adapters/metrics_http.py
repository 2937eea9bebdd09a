"""The Prometheus /metrics endpoint, optionally behind the same bearer keys and TLS as gRPC."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from fpga_serve.adapters.auth import KeyRing

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log."""


_NO_KEY = (
    b"no API key: /metrics needs 'Authorization: Bearer <key>' with one of the server's keys"
    b" (or metrics_auth=false for a metrics port without keys)\n"
)


def _guarded(app: WSGIApp, keys: KeyRing) -> WSGIApp:
    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        presented = environ.get("HTTP_AUTHORIZATION")
        if not keys.check(presented):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
            )
            return [_NO_KEY if not presented else b"invalid API key\n"]
        return app(environ, start_response)

    return guarded


class MetricsHTTP:
    """Serves ``registry`` at /metrics on its own thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        keys: KeyRing | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        app: WSGIApp = make_wsgi_app(registry)
        if keys is not None and keys.enabled:
            app = _guarded(app, keys)
        self._httpd = make_server(host, port, app, _Server, handler_class=_QuietHandler)
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(certfile=str(tls[0]), keyfile=str(tls[1]))
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = int(self._httpd.server_port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
