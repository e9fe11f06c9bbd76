"""A small HTTP/1.1 WSGI server for the flow app, the local gateway and its workers.

The standard library's ``wsgiref`` server answers one request per connection and writes the
headers and the body in separate sends; with a keep-alive client that meets Nagle's algorithm
and delayed ACKs (40 ms per request on loopback). This server keeps connections alive, sets
``TCP_NODELAY`` and writes each response in a single send.

Resources are bounded: a fixed pool of threads serves requests, and an idle keep-alive
connection holds no thread, only its socket, watched by one selector thread until its next
request arrives or its idle timeout passes. The number of open connections is capped below the
process's file limit; past the cap the oldest idle connection is closed, or new connections wait
in the listen backlog.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import logging
import queue
import resource
import select
import selectors
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import attrs

__all__ = [
    "DEFAULT_KEEPALIVE",
    "DEFAULT_THREADS",
    "MAX_BODY",
    "Server",
    "StartResponse",
    "WSGIApp",
    "peer_closed",
    "serve",
]

log = logging.getLogger("faasflow.runtime")

StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: Largest request body accepted (bytes); larger ones get 413.
MAX_BODY = 64 * 1024 * 1024
#: Threads serving requests at once.
DEFAULT_THREADS = 64
#: Seconds an idle keep-alive connection stays open (as OpenFaaS's own servers).
DEFAULT_KEEPALIVE = 75.0
#: Open connections at most (also capped below the process's open-file limit).
DEFAULT_MAX_CONNECTIONS = 1024
#: Seconds a request may take to arrive once its first byte came.
REQUEST_READ_TIMEOUT = 30.0
#: Key of the WSGI environ entry telling whether the client hung up (for streamed answers).
DISCONNECTED = "faasflow.disconnected"

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer"}
)
_FD_RESERVE = 64  # files kept free for databases, logs and upstream connections


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class _Handler(BaseHTTPRequestHandler):
    """Parses and answers requests on one connection; :class:`_HTTPServer` drives it one
    request at a time instead of the base class's blocking loop."""

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


class _Connection:
    """One accepted socket and the handler parsing it."""

    def __init__(self, sock: socket.socket, address: Any) -> None:
        self.sock = sock
        self.address = address
        self.handler: _Handler | None = None
        self.last_active = time.monotonic()
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.handler is not None:
            with contextlib.suppress(OSError, ValueError):
                self.handler.wfile.flush()
            with contextlib.suppress(OSError, ValueError):
                self.handler.rfile.close()
            with contextlib.suppress(OSError, ValueError):
                self.handler.wfile.close()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def has_buffered_request(self) -> bool:
        """True when bytes of a next (pipelined) request were already read into the buffer,
        where the selector cannot see them."""
        assert self.handler is not None
        try:
            self.sock.setblocking(False)
            try:
                return bool(self.handler.rfile.peek(1))  # type: ignore[attr-defined]
            finally:
                self.sock.settimeout(_Handler.timeout)
        except (BlockingIOError, OSError, ValueError):
            return False


class _HTTPServer:
    """The listening socket, the selector of idle connections and the request threads."""

    def __init__(self, address: tuple[str, int], app: WSGIApp, threads: int,
                 keepalive: float, max_connections: int) -> None:
        self.app = app
        self.keepalive = keepalive
        self.threads = max(1, threads)
        self.max_connections = max(8, min(max_connections, _open_file_budget()))
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socket.bind(address)
            self.socket.listen(256)
            self.socket.setblocking(False)
        except BaseException:
            self.socket.close()
            raise
        self.server_address: tuple[Any, ...] = self.socket.getsockname()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._returned: collections.deque[_Connection] = collections.deque()
        self._idle: dict[int, _Connection] = {}
        self._open = 0
        self._work: queue.SimpleQueue[_Connection | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._accepting = False
        self._emfile_logged = 0.0
        self._closed = False
        self._busy = 0

    # -- the selector thread -------------------------------------------------------------------

    def serve_forever(self) -> None:
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._set_accepting(True)
        next_sweep = time.monotonic() + self._sweep_every()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for key, _ in self._selector.select(max(0.0, min(1.0, next_sweep - now))):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        conn: _Connection = key.data
                        self._selector.unregister(conn.sock)
                        self._idle.pop(conn.sock.fileno(), None)
                        self._submit(conn)
                self._take_returned()
                if time.monotonic() >= next_sweep:
                    self._close_expired()
                    next_sweep = time.monotonic() + self._sweep_every()
        finally:
            self._stopped.set()

    def _sweep_every(self) -> float:
        return max(0.05, min(1.0, self.keepalive / 4))

    def _set_accepting(self, on: bool) -> None:
        if on and not self._accepting:
            self._selector.register(self.socket, selectors.EVENT_READ, "accept")
        elif not on and self._accepting:
            self._selector.unregister(self.socket)
        self._accepting = on

    def _accept(self) -> None:
        while True:
            if self._open >= self.max_connections and not self._evict_idle():
                self._set_accepting(False)  # the rest wait in the listen backlog
                return
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_files(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            with self._lock:
                self._open += 1
            self._submit(_Connection(sock, address))

    def _out_of_files(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._emfile_logged > 10:
            self._emfile_logged = now
            log.warning("cannot accept connections: %s (%d open); waiting for some to close",
                        exc.strerror, self._open)
        if not self._evict_idle():
            self._set_accepting(False)

    def _evict_idle(self) -> bool:
        if not self._idle:
            return False
        oldest = min(self._idle.values(), key=lambda c: c.last_active)
        self._forget(oldest)
        return True

    def _forget(self, conn: _Connection) -> None:
        """Close an idle connection the selector watches."""
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        self._idle.pop(conn.sock.fileno(), None)
        self._closed_one(conn)

    def _closed_one(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.close()
        with self._lock:
            self._open -= 1
        if not self._accepting and not self._stop.is_set():
            self._wake()  # the selector thread starts accepting again

    def _close_expired(self) -> None:
        limit = time.monotonic() - self.keepalive
        for conn in [c for c in self._idle.values() if c.last_active < limit]:
            self._forget(conn)
        if not self._accepting and self._open < self.max_connections:
            self._set_accepting(True)

    def _take_returned(self) -> None:
        while self._returned:
            conn = self._returned.popleft()
            if self._stop.is_set():
                self._closed_one(conn)
                continue
            try:
                self._selector.register(conn.sock, selectors.EVENT_READ, conn)
            except (ValueError, OSError):
                self._closed_one(conn)
                continue
            self._idle[conn.sock.fileno()] = conn
        if not self._accepting and self._open < self.max_connections:
            self._set_accepting(True)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    # -- the request threads -------------------------------------------------------------------

    def _submit(self, conn: _Connection) -> None:
        with self._lock:
            # threads start on demand, up to the bound, when none is free for this one
            if len(self._workers) < self.threads and \
                    self._busy + self._work.qsize() >= len(self._workers):
                self._spawn_worker()
        self._work.put(conn)

    def _spawn_worker(self) -> None:
        thread = threading.Thread(target=self._work_loop, daemon=True,
                                  name=f"faasflow-http-{self.server_address[1]}-"
                                       f"{len(self._workers)}")
        self._workers.append(thread)
        thread.start()

    def _work_loop(self) -> None:
        while True:
            conn = self._work.get()
            if conn is None:
                return
            with self._lock:
                self._busy += 1
            try:
                self._serve(conn)
            finally:
                with self._lock:
                    self._busy -= 1

    def _serve(self, conn: _Connection) -> None:
        try:
            if conn.handler is None:
                conn.handler = _Handler(conn.sock, conn.address, self)  # type: ignore[arg-type]
            while True:
                conn.handler.handle_one_request()
                conn.handler.wfile.flush()
                if conn.handler.close_connection or self._stop.is_set():
                    self._closed_one(conn)
                    return
                if not conn.has_buffered_request():
                    break
        except (ConnectionError, TimeoutError, ValueError):
            self._closed_one(conn)
            return
        except OSError:
            self._closed_one(conn)
            return
        except Exception:
            log.exception("error on connection from %s", conn.address)
            self._closed_one(conn)
            return
        conn.last_active = time.monotonic()
        self._returned.append(conn)
        self._wake()

    # -- stopping ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self._stop.set()
        self._wake()
        self._stopped.wait(5)

    def server_close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with contextlib.suppress(OSError):
            self.socket.close()
        for conn in list(self._idle.values()):
            conn.close()
        self._idle.clear()
        for _ in self._workers:
            self._work.put(None)
        with contextlib.suppress(Exception):
            self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


def _open_file_budget() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(8, int(soft) - _FD_RESERVE)


@attrs.define
class Server:
    """A running server; :meth:`close` stops it."""

    _server: _HTTPServer
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

    @property
    def busy(self) -> int:
        """Requests being served now."""
        return self._server._busy

    @property
    def threads(self) -> int:
        """Request threads started so far (at most the configured number)."""
        return len(self._server._workers)

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`close` is called from another one."""
        self._serving.set()
        self._server.serve_forever()

    def start(self) -> Server:
        """Serve in a background thread and return at once."""
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"faasflow-http-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting connections, close idle ones and release the port; requests being
        served finish on their threads."""
        if self._serving.is_set():
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def serve(
    app: WSGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    threads: int = DEFAULT_THREADS,
    keepalive: float = DEFAULT_KEEPALIVE,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> Server:
    """Bind ``app`` to ``host:port`` (``0``: any free port); call ``start()`` or
    ``serve_forever()`` on the result. ``threads`` requests are served at once; an idle
    keep-alive connection is closed after ``keepalive`` seconds."""
    return Server(_HTTPServer((host, port), app, threads, keepalive, max_connections))
