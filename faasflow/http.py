"""A small HTTP client for calling functions: the invokers' hot path.

One :class:`HttpClient` keeps a pool of keep-alive HTTP/1.1 connections per host, shared by
every thread: ``TCP_NODELAY`` is set, every call has a connect and a read timeout, and nothing
is retried (retries belong to the operation, which knows whether a call may be repeated).

It sits directly on :mod:`http.client`. Measured on loopback (``bench/invoker.py``), a urllib3
``PoolManager`` added about 0.2 ms per call to http.client's 0.22 ms (and requests about
1 ms); this pool adds a few hundredths of a millisecond.
"""

from __future__ import annotations

import functools
import http.client
import os
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

from faasflow.errors import FunctionError, FunctionTimeout
from faasflow.interfaces import Response

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_TIMEOUT", "FunctionTimeout", "HttpClient"]

#: Seconds to wait for an answer when the caller gives no timeout.
DEFAULT_TIMEOUT = 300.0
#: Seconds to wait for a connection (capped by the call's timeout).
DEFAULT_CONNECT_TIMEOUT = 10.0

_NO_BODY = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_Origin = tuple[str, str, int]


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> tuple[_Origin, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("not an http(s) URL")
    port = parts.port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return (scheme, parts.hostname, port), path


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when an idle connection was closed by the server (it became readable)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class HttpClient:
    """Pooled keep-alive HTTP/1.1 calls that return :class:`~faasflow.Response`.

    Thread-safe. After a ``fork`` the child opens fresh connections on its first call.
    """

    def __init__(
        self,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        maxsize: int = 64,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.maxsize = maxsize
        self._ssl_context = ssl_context
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}

    def _checkout(self, origin: _Origin) -> http.client.HTTPConnection | None:
        with self._lock:
            if self._pid != os.getpid():
                # Sockets inherited through fork belong to the parent; leave them alone.
                self._idle = {}
                self._pid = os.getpid()
            idle = self._idle.get(origin)
            while idle:
                conn = idle.pop()
                if not _dropped(conn):
                    return conn
                conn.close()
        return None

    def _checkin(self, origin: _Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self.maxsize and self._pid == os.getpid():
                idle.append(conn)
                return
        conn.close()

    def _connect(self, origin: _Origin, seconds: float | None) -> http.client.HTTPConnection:
        scheme, host, port = origin
        connect = self.connect_timeout if seconds is None else min(seconds, self.connect_timeout)
        conn: http.client.HTTPConnection
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            conn = http.client.HTTPSConnection(
                host, port, timeout=connect, context=self._ssl_context
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=connect)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return conn

    def request(
        self,
        method: str,
        url: str,
        body: bytes = b"",
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and read the whole answer.

        A non-2xx status is returned, not raised; redirects are not followed. Raises
        :class:`FunctionTimeout` when no answer came within ``timeout`` seconds (default: the
        client's) and :class:`~faasflow.FunctionError` when the endpoint cannot be reached.
        """
        seconds = self.timeout if timeout is None else timeout
        try:
            origin, path = _target(url)
        except ValueError:
            raise FunctionError(
                f"cannot call {url!r}: not an http:// or https:// URL", url=url
            ) from None
        conn: http.client.HTTPConnection | None = None
        try:
            conn = self._checkout(origin) or self._connect(origin, seconds)
            if conn.timeout != seconds:
                conn.timeout = seconds
                assert conn.sock is not None
                conn.sock.settimeout(seconds)
            payload = None if not body and method in _NO_BODY else body
            conn.request(method, path, payload, dict(headers) if headers else {})
            answer = conn.getresponse()
            data = answer.read()
        except TimeoutError as exc:
            if conn is not None:
                conn.close()
            raise FunctionTimeout(
                f"{method} {url} did not answer within {seconds:g} s; raise the timeout or "
                "check that the function is not stuck",
                url=url,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            if conn is not None:
                conn.close()
            raise FunctionError(
                f"{method} {url} failed: {type(exc).__name__}: {exc}; check that the endpoint "
                "is running and the URL (gateway) is right",
                url=url,
            ) from exc
        received: dict[str, str] = {}
        for name, value in answer.getheaders():
            received[name] = f"{received[name]}, {value}" if name in received else value
        if answer.will_close:
            conn.close()
        else:
            self._checkin(origin, conn)
        return Response(answer.status, data, received, url)

    def close(self) -> None:
        """Close every idle connection (the client stays usable)."""
        with self._lock:
            idle, self._idle = self._idle, {}
            mine = self._pid == os.getpid()
        if mine:
            for connections in idle.values():
                for conn in connections:
                    conn.close()
