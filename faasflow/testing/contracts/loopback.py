"""A loopback HTTP server that plays an OpenFaaS gateway, for invoker tests."""

from __future__ import annotations

import base64
import json
import queue
import socket
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import attrs


@attrs.frozen
class Received:
    """One request the loopback server received."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that timed out on purpose hangs up before the answer: not an error
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class LoopbackServer:
    """A small threaded HTTP server on 127.0.0.1 that plays an OpenFaaS gateway.

    ``/function/<name>`` routes: ``echo`` (body back), ``inspect`` (JSON of the request),
    ``headers`` (sets ``X-Contract: yes``), ``status-<code>``, ``fail`` (500), ``slow``
    (answers after ``slow_seconds``). ``/async-function/...`` records the request in
    ``forwarded`` and answers ``forward_status``. Any other path answers like ``inspect``.
    """

    slow_seconds = 3.0

    def __init__(self) -> None:
        self.forwarded: queue.Queue[Received] = queue.Queue()
        self.forward_status = 202
        self._stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        """Stop serving and release the socket."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        received = Received(
            handler.command,
            parts.path,
            parts.query,
            {k.lower(): v for k, v in handler.headers.items()},
            body,
        )
        status, headers, answer = self._route(received)
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)

    def _route(self, received: Received) -> tuple[int, dict[str, str], bytes]:
        path = received.path
        if path.startswith("/async-function/"):
            self.forwarded.put(received)
            return self.forward_status, {}, b""
        name = path[len("/function/"):] if path.startswith("/function/") else ""
        if name == "echo":
            return 200, {"Content-Type": "application/octet-stream"}, received.body
        if name == "headers":
            return 200, {"X-Contract": "yes"}, b"ok"
        if name == "fail":
            return 500, {}, b"boom"
        if name.startswith("status-"):
            code = int(name.split("-", 1)[1])
            return code, {}, f"status {code}".encode()
        if name == "slow":
            self._stopping.wait(self.slow_seconds)
            return 200, {}, b"late"
        inspect = {
            "method": received.method,
            "path": received.path,
            "query": received.query,
            "headers": dict(received.headers),
            "body": base64.b64encode(received.body).decode(),
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(inspect).encode()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
