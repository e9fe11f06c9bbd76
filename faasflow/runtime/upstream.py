"""Keep-alive HTTP connections from the local gateway to one worker process.

A pooled connection can be dead when it is taken: the worker closed it after its idle timeout,
or the worker was killed. Such a connection is detected before use (it polls readable and a
peek reads end-of-file) and thrown away, and a connection older than the worker's idle timeout
is never reused, so the race with the worker's own close cannot happen. When a request fails
anyway, it is sent again on a fresh connection only when that cannot run it twice: the request
was not completely sent (the worker reads a whole request before running anything), or it is
idempotent and no byte of the answer came.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Mapping

from faasflow.errors import FaasflowError
from faasflow.runtime.server import peer_closed

__all__ = ["IDEMPOTENT", "Upstream", "WorkerUnreachable"]

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
#: Seconds before the worker's idle timeout at which a pooled connection is retired.
_IDLE_MARGIN = 0.5


class WorkerUnreachable(FaasflowError):
    """A worker process could not be reached."""


class _NotSent(Exception):
    """The request did not reach the worker whole: sending it again cannot run it twice."""


class Upstream:
    """A pool of keep-alive connections to ``127.0.0.1:<port>``; thread-safe."""

    def __init__(self, port: int, timeout: float, keepalive: float) -> None:
        self.port = port
        self.timeout = timeout
        self.max_idle = max(0.1, keepalive - _IDLE_MARGIN, keepalive * 0.5)
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()
        self.in_flight = 0
        self.stale_dropped = 0
        """Pooled connections found closed by the worker and thrown away before use."""

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes,
        timeout: float | None = None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send one request; raise :class:`WorkerUnreachable` when the worker cannot answer it
        within ``timeout`` seconds (default: the pool's)."""
        for attempt in range(3):
            conn, reused = self._take()
            conn.timeout = self.timeout if timeout is None else timeout
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            try:
                return self._exchange(conn, method, path, headers, body)
            except _NotSent as exc:
                conn.close()
                if attempt < 2:
                    continue
                raise WorkerUnreachable(f"worker on port {self.port}: {exc.__cause__}") from \
                    exc.__cause__
            except (http.client.RemoteDisconnected, ConnectionResetError) as exc:
                conn.close()
                # no byte of the answer came: a replay is safe only for idempotent methods
                if reused and method in IDEMPOTENT and attempt < 2:
                    continue
                raise WorkerUnreachable(f"worker on port {self.port}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise WorkerUnreachable(f"worker on port {self.port}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(self, conn: http.client.HTTPConnection, method: str, path: str,
                  headers: Mapping[str, str], body: bytes
                  ) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            conn.request(method, path, body=body, headers=dict(headers))
        except (OSError, http.client.HTTPException) as exc:
            raise _NotSent(str(exc)) from exc
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append((time.monotonic(), conn))
        return response.status, list(response.getheaders()), data

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        """A live pooled connection, or a new one (``reused`` False)."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    break
                since, conn = self._idle.pop()
            if now - since < self.max_idle and conn.sock is not None and \
                    not peer_closed(conn.sock):
                return conn, True
            if now - since < self.max_idle:
                self.stale_dropped += 1
            conn.close()
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout), False

    def idle(self) -> int:
        """Pooled connections waiting for a request."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()
