"""A small HTTP client for calling functions: the invokers' hot path.

Built directly on urllib3 (requests' own connection pool) because requests adds about 0.5 ms
per call on loopback, more than the function call itself. One :class:`HttpClient` holds one
``PoolManager`` shared by every thread: connections are kept alive, ``TCP_NODELAY`` is set,
every call has a connect and a read timeout, and nothing is retried (retries belong to the
operation, which knows whether a call may be repeated).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from faasflow.errors import FunctionError
from faasflow.interfaces import Response

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_TIMEOUT", "FunctionTimeout", "HttpClient"]

#: Seconds to wait for an answer when the caller gives no timeout.
DEFAULT_TIMEOUT = 300.0
#: Seconds to wait for a connection (capped by the call's timeout).
DEFAULT_CONNECT_TIMEOUT = 10.0

_SOCKET_OPTIONS = [
    *HTTPConnection.default_socket_options,  # TCP_NODELAY
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
]


class FunctionTimeout(FunctionError):
    """A function or endpoint did not answer within the timeout."""

    timeout = True


class HttpClient:
    """Pooled keep-alive HTTP/1.1 calls that return :class:`~faasflow.Response`.

    Thread-safe. After a ``fork`` the child gets fresh connections on its first call.
    """

    def __init__(
        self,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        maxsize: int = 64,
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._pid = -1
        self._pool: urllib3.PoolManager | None = None
        self._timeouts: dict[float | None, urllib3.Timeout] = {}

    def _manager(self) -> urllib3.PoolManager:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = urllib3.PoolManager(
                    num_pools=32,
                    maxsize=self.maxsize,
                    block=False,
                    retries=False,
                    socket_options=_SOCKET_OPTIONS,
                )
                self._pid = os.getpid()
            return self._pool

    def _timeout(self, seconds: float | None) -> urllib3.Timeout:
        cached = self._timeouts.get(seconds)
        if cached is None:
            connect = self.connect_timeout
            if seconds is not None:
                connect = min(seconds, connect)
            cached = urllib3.Timeout(connect=connect, read=seconds)
            self._timeouts[seconds] = cached
        return cached

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

        A non-2xx status is returned, not raised. Raises :class:`FunctionTimeout` when no answer
        came within ``timeout`` seconds (default: the client's) and
        :class:`~faasflow.FunctionError` when the endpoint cannot be reached.
        """
        seconds = self.timeout if timeout is None else timeout
        try:
            answer = self._manager().urlopen(
                method,
                url,
                body=body,
                headers=dict(headers) if headers else {},
                retries=False,
                redirect=False,
                timeout=self._timeout(seconds),
                preload_content=True,
            )
        except NewConnectionError as exc:
            # Checked first: urllib3 2 still derives it from ConnectTimeoutError.
            raise FunctionError(
                f"{method} {url} failed: cannot connect ({_reason(exc)}); check that the "
                "endpoint is running and the URL (gateway) is right",
                url=url,
            ) from exc
        except Urllib3Timeout as exc:
            raise FunctionTimeout(
                f"{method} {url} did not answer within {seconds:g} s; raise the timeout or "
                "check that the function is not stuck",
                url=url,
            ) from exc
        except (HTTPError, OSError) as exc:
            raise FunctionError(
                f"{method} {url} failed: {_reason(exc)}; check that the endpoint is running "
                "and the URL (gateway) is right",
                url=url,
            ) from exc
        return Response(answer.status, answer.data, dict(answer.headers), url)

    def close(self) -> None:
        """Close every pooled connection (the client stays usable)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.clear()


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"
