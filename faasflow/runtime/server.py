"""A small HTTP/1.1 WSGI server for the flow app, the local gateway and its workers.

The standard library's ``wsgiref`` server answers one request per connection and writes the
headers and the body in separate sends; with a keep-alive client that meets Nagle's algorithm
and delayed ACKs (40 ms per request on loopback). This server keeps connections alive, sets
``TCP_NODELAY`` and writes each response in a single send.

Resources are bounded: a fixed pool of threads serves requests, and an idle keep-alive
connection holds no thread, only its socket, watched by one selector thread until its next
request arrives or its idle timeout passes. The number of open connections is capped below the
process's file limit; past the cap the oldest idle connection is closed, or new connections wait
in the listen backlog. Parsing and answering one request is :mod:`faasflow.runtime.http11`'s.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import queue
import resource
import selectors
import socket
import threading
import time
from typing import Any

import attrs

from faasflow.runtime.http11 import (
    DISCONNECTED,
    MAX_BODY,
    Handler,
    StartResponse,
    WSGIApp,
    peer_closed,
)

__all__ = [
    "DEFAULT_KEEPALIVE",
    "DEFAULT_THREADS",
    "DISCONNECTED",
    "MAX_BODY",
    "Server",
    "StartResponse",
    "WSGIApp",
    "peer_closed",
    "serve",
]

log = logging.getLogger("faasflow.runtime")

#: Threads serving requests at once.
DEFAULT_THREADS = 64
#: Seconds an idle keep-alive connection stays open (as OpenFaaS's own servers).
DEFAULT_KEEPALIVE = 75.0
#: Open connections at most (also capped below the process's open-file limit).
DEFAULT_MAX_CONNECTIONS = 1024
_FD_RESERVE = 64  # files kept free for databases, logs and upstream connections
#: Seconds requests may wait with every thread busy before more threads start.
STARVED = 1.0
_MAX_THREADS = 512


class _Connection:
    """One accepted socket and the handler parsing it."""

    def __init__(self, sock: socket.socket, address: Any) -> None:
        self.sock = sock
        self.address = address
        self.handler: Handler | None = None
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
                self.sock.settimeout(Handler.timeout)
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
        # past `threads`, more are started only when requests have waited STARVED seconds
        # with no thread free: every thread is blocked on a nested call (a flow calling a
        # function through this same gateway), and waiting would never end
        self.max_threads = max(self.threads, min(self.max_connections, _MAX_THREADS))
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
        self._last_taken = time.monotonic()
        self._starved_logged = 0.0

    # -- the selector thread -------------------------------------------------------------------

    def serve_forever(self) -> None:
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._set_accepting(True)
        next_sweep = time.monotonic() + self._sweep_every()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                wait = max(0.0, min(1.0, next_sweep - now))
                if not self._work.empty():
                    wait = min(wait, STARVED / 4)
                for key, _ in self._selector.select(wait):
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
                self._relieve_starvation()
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

    def _relieve_starvation(self) -> None:
        waiting = self._work.qsize()
        if not waiting or time.monotonic() - self._last_taken < STARVED:
            return
        with self._lock:
            extra = min(waiting, self.max_threads - len(self._workers))
            for _ in range(extra):
                self._spawn_worker()
            self._last_taken = time.monotonic()
        now = time.monotonic()
        if extra and now - self._starved_logged > 60:
            self._starved_logged = now
            log.warning("port %s: all %d request threads were busy for %.0fs with %d requests "
                        "waiting (calls waiting on nested calls?); started %d more (at most %d)",
                        self.server_address[1], len(self._workers) - extra, STARVED, waiting,
                        extra, self.max_threads)

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
                self._last_taken = time.monotonic()
            try:
                self._serve(conn)
            finally:
                with self._lock:
                    self._busy -= 1

    def _serve(self, conn: _Connection) -> None:
        try:
            if conn.handler is None:
                conn.handler = Handler(conn.sock, conn.address, self)  # type: ignore[arg-type]
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
        if self._stop.is_set():
            self._closed_one(conn)
            return
        self._returned.append(conn)
        self._wake()
        if self._closed:  # closed meanwhile: no selector takes it back any more
            self._close_returned()

    def _close_returned(self) -> None:
        while True:
            try:
                conn = self._returned.popleft()
            except IndexError:
                return
            self._closed_one(conn)

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
        self._close_returned()
        while True:  # connections no request thread took yet
            try:
                queued = self._work.get_nowait()
            except queue.Empty:
                break
            if queued is not None:
                self._closed_one(queued)
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
        """Where a client on this machine reaches the server (a wildcard address is served
        on loopback too)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

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
