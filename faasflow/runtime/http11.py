"""One connection's HTTP/1.1: parsing a request, calling the WSGI app, writing the answer.

:mod:`faasflow.runtime.server` owns the sockets and threads and drives a :class:`Handler` one
request at a time. Each answer goes out in a single send (headers and body together), so
Nagle's algorithm and delayed ACKs never add 40 ms; an answer of unknown length (a generator
app without a Content-Length) is streamed chunked. Bad framing or garbage instead of HTTP is
answered with the project's ``[ Failed ] ...`` text, never an HTML page.
"""

from __future__ import annotations

import contextlib
import io
import logging
import select
import socket
import sys
import types
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from faasflow.runtime.server import _HTTPServer

__all__ = ["DISCONNECTED", "MAX_BODY", "Handler", "StartResponse", "WSGIApp", "peer_closed"]

log = logging.getLogger("faasflow.runtime")

StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: Largest request body accepted (bytes); larger ones get 413.
MAX_BODY = 64 * 1024 * 1024
#: Seconds a request may take to arrive once its first byte came.
REQUEST_READ_TIMEOUT = 30.0
#: Key of the WSGI environ entry telling whether the client hung up (for streamed answers).
DISCONNECTED = "faasflow.disconnected"

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer"}
)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class Handler(BaseHTTPRequestHandler):
    """Parses and answers requests on one connection; the server drives it one request at a
    time (``handle_one_request``) instead of the base class's blocking loop."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = REQUEST_READ_TIMEOUT
    server_version = "faasflow"
    sys_version = ""
    server: _HTTPServer  # type: ignore[assignment]

    def handle(self) -> None:
        self.close_connection = True  # until a request says otherwise

    def finish(self) -> None:
        pass  # the connection outlives this call; _Connection.close ends it

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # Bad framing or garbage instead of HTTP: the project's `[ Failed ]` text, not the
        # standard library's HTML page. The stream position is unknown afterwards: close.
        short = self.responses.get(code, ("Error", ""))[0]
        self.close_connection = True
        self.log_message("%d %s", code, message or short)
        with contextlib.suppress(OSError):
            self._send(f"{code} {short}", [("Content-Type", "text/plain; charset=utf-8")],
                       f"[ Failed ] {message or short}\n".encode())

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
            if size < 0:
                raise _BadRequest(400, "malformed chunked request body")
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
            DISCONNECTED: self._disconnected,
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

    def _disconnected(self) -> bool:
        return peer_closed(self.connection)

    def _head(self, status: str, headers: list[tuple[str, str]], length: int | None) -> bytes:
        """The status line and headers; ``length`` ``None``: chunked on HTTP/1.1, else the
        body ends with the connection."""
        head = [f"HTTP/1.1 {status}\r\n"]
        for name, value in headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP or lower == "content-length":
                continue
            head.append(f"{name}: {value}\r\n")
        if length is not None:
            head.append(f"Content-Length: {length}\r\n")
        elif self.request_version == "HTTP/1.1":
            head.append("Transfer-Encoding: chunked\r\n")
        else:
            self.close_connection = True
        if self.close_connection:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        return "".join(head).encode("latin-1")

    def _send(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        payload = self._head(status, headers, len(body))
        if self.command != "HEAD":
            payload += body
        self.wfile.write(payload)  # one send: see the module docstring

    def _stream(self, status: str, headers: list[tuple[str, str]], chunks: Iterable[bytes]
                ) -> None:
        """Send an answer of unknown length as it is produced (log following)."""
        self.wfile.write(self._head(status, headers, None))
        chunked = not self.close_connection
        for chunk in chunks:
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

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
            if isinstance(result, types.GeneratorType) and "status" not in response:
                first = next(result, None)  # a generator app starts its response lazily
                result = _prepend(first, result)
            if "status" in response and _streams(result, response["headers"]):
                response["sent"] = True
                try:
                    self._stream(response["status"], response["headers"], result)
                finally:
                    _close(result)
                return
            try:
                chunks.extend(result)
            finally:
                _close(result)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception:
            log.exception("unhandled error serving %s %s", self.command, self.path)
            if response.get("sent"):
                self.close_connection = True
                return
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


def _streams(result: Iterable[bytes], headers: list[tuple[str, str]]) -> bool:
    """A generator without a Content-Length is sent as it is produced; anything else whole."""
    if isinstance(result, (list, tuple)):
        return False
    return not any(name.lower() == "content-length" for name, _ in headers)


def _prepend(first: bytes | None, rest: Iterable[bytes]) -> Iterable[bytes]:
    if first is not None:
        yield first
    yield from rest


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def peer_closed(sock: socket.socket) -> bool:
    """True when the peer closed ``sock`` (readable, and a peek reads end-of-file)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True
