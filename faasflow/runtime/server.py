"""A small threaded HTTP/1.1 WSGI server for the flow app, the local gateway and its workers.

The standard library's ``wsgiref`` server answers one request per connection and writes the
headers and the body in separate sends; with a keep-alive client that meets Nagle's algorithm
and delayed ACKs (40 ms per request on loopback). This server keeps connections alive, sets
``TCP_NODELAY`` and writes each response in a single send.
"""

from __future__ import annotations

import io
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import attrs

__all__ = ["MAX_BODY", "Server", "WSGIApp", "serve"]

log = logging.getLogger("faasflow.runtime")

StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: Largest request body accepted (bytes); larger ones get 413.
MAX_BODY = 64 * 1024 * 1024
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer"}
)
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 75  # idle keep-alive connections end instead of holding a thread forever
    server_version = "faasflow"
    sys_version = ""
    server: _WSGIServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise _BadRequest(400, f"invalid Content-Length {raw!r}") from None
        if length < 0:
            raise _BadRequest(400, f"invalid Content-Length {raw!r}")
        if length > MAX_BODY:
            raise _BadRequest(413, f"request body of {length} bytes is over {MAX_BODY}")
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BadRequest(400, "request body shorter than its Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024).strip()
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise _BadRequest(400, "malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise _BadRequest(413, f"request body is over {MAX_BODY} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)

    def _environ(self, body: bytes) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        if path.startswith(("http://", "https://")):  # absolute-form request target
            path = "/" + path.split("/", 3)[-1] if path.count("/") >= 3 else "/"
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "RAW_URI": self.path,
            "QUERY_STRING": query,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        content_type = self.headers.get("Content-Type")
        if content_type is not None:
            environ["CONTENT_TYPE"] = content_type
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                continue
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _send(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        head = [f"HTTP/1.1 {status}\r\n"]
        has_length = False
        for name, value in headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                continue
            if lower == "content-length":
                has_length = True
                head.append(f"{name}: {len(body)}\r\n")
                continue
            head.append(f"{name}: {value}\r\n")
        if not has_length:
            head.append(f"Content-Length: {len(body)}\r\n")
        if self.close_connection:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        payload = "".join(head).encode("latin-1")
        if self.command != "HEAD":
            payload += body
        self.wfile.write(payload)  # one send: see the module docstring

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except _BadRequest as exc:
            self.close_connection = True
            phrase = "Payload Too Large" if exc.status == 413 else "Bad Request"
            self._send(f"{exc.status} {phrase}", [("Content-Type", "text/plain; charset=utf-8")],
                       f"[ Failed ] {exc}\n".encode())
            return
        environ = self._environ(body)
        response: dict[str, Any] = {}

        def start_response(
            status: str,
            headers: list[tuple[str, str]],
            exc_info: tuple[type[BaseException], BaseException, TracebackType] | None = None,
        ) -> Callable[[bytes], object]:
            if exc_info is not None and response.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])
            response["status"] = status
            response["headers"] = headers
            return chunks.append

        chunks: list[bytes] = []
        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            log.exception("unhandled error serving %s %s", self.command, self.path)
            self._send("500 Internal Server Error", [("Content-Type", "text/plain")],
                       b"[ Failed ] internal server error\n")
            return
        if "status" not in response:
            self._send("500 Internal Server Error", [("Content-Type", "text/plain")],
                       b"[ Failed ] the application did not start a response\n")
            return
        response["sent"] = True
        self._send(response["status"], response["headers"], b"".join(chunks))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class _WSGIServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], app: WSGIApp) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # a client went away; nothing to report
        log.exception("error on connection from %s", client_address)


@attrs.define
class Server:
    """A running server; :meth:`close` stops it."""

    _server: _WSGIServer
    _thread: threading.Thread | None = None
    _serving: threading.Event = attrs.field(factory=threading.Event)

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`close` is called from another one."""
        self._serving.set()
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> Server:
        """Serve in a background thread and return at once."""
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"faasflow-http-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting connections and release the port."""
        if self._serving.is_set():
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def serve(app: WSGIApp, host: str = "127.0.0.1", port: int = 0) -> Server:
    """Bind ``app`` to ``host:port`` (``0``: any free port); call ``start()`` or
    ``serve_forever()`` on the result."""
    return Server(_WSGIServer((host, port), app))
