"""The connection to etcd every handle of a backend shares, and when a failed call may be
tried again.

A call is retried once, on a fresh connection, when etcd certainly did not get it (connection
refused, expired auth token) or, for reads, puts and deletes, after any broken or timed-out
call. A transaction is never repeated after it may have been sent: applied once, it would
answer False the second time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pyetcd
from pyetcd import exceptions as etcd_errors

from faasflow.errors import BackendError
from faasflow_etcd.config import EtcdConfig

__all__ = ["CLIENT_ERRORS", "Connection", "describe", "not_delivered", "transient"]

T = TypeVar("T")

_GRPC_OPTIONS = [
    # a request namespace read by scan() can exceed gRPC's default 4 MiB message limit
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # come back quickly after a restart instead of gRPC's default 1 s..120 s backoff
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

CLIENT_ERRORS = (etcd_errors.Etcd3Exception, grpc.RpcError)


class Connection:
    """One etcd client shared by every handle of a backend.

    pyetcd marks an endpoint failed on the first connection error and gRPC waits out a backoff
    before it dials again, so after a server restart the old client keeps failing for a while.
    :meth:`reconnect` replaces it with a client on a fresh channel (on the next endpoint when
    there are several) so the very next call reaches the restarted server.
    """

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._client: Any = None
        self._index = 0
        self._credentials: Any = None

    @property
    def endpoint(self) -> str:
        """The endpoint in use (the others in brackets)."""
        label = self.config.label(self._index)
        others = [self.config.label(i) for i in range(len(self.config.endpoints))]
        others.remove(label)
        return f"{label} (also {', '.join(others)})" if others else label

    def client(self) -> Any:
        """The shared client, connected on first use."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
                client = self._client
        return client

    def reconnect(self, stale: Any) -> Any:
        """Replace ``stale`` (unless another thread already did) and return the new client."""
        with self._lock:
            if self._client is stale or self._client is None:
                # Not closed: other threads may still be finishing calls on its channel; gRPC
                # closes the channel once the last reference is gone.
                self._client = None
                self._index = (self._index + 1) % len(self.config.endpoints)
                self._client = self._connect()
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def call(
        self, operation: str, where: str, request: Callable[[Any], T], *, idempotent: bool
    ) -> T:
        """Run ``request`` on the shared client; on a connection failure, retry once on a fresh
        connection when the request was not delivered or repeating it is harmless. A failure
        raises :class:`~faasflow.BackendError` naming ``operation``, ``where`` and the
        endpoint."""
        client = None
        try:
            client = self.client()
            return request(client)
        except CLIENT_ERRORS as exc:
            retry = not_delivered(exc) or (idempotent and transient(exc))
            if not retry:
                raise self._error(operation, where, exc, ambiguous=transient(exc)) from exc
        try:
            return request(self.reconnect(client))
        except CLIENT_ERRORS as exc:
            ambiguous = not idempotent and transient(exc) and not not_delivered(exc)
            raise self._error(operation, where, exc, ambiguous=ambiguous) from exc

    def _error(
        self, operation: str, where: str, exc: BaseException, *, ambiguous: bool
    ) -> BackendError:
        return BackendError(
            "etcd",
            f"{operation} {where!r}",
            self.endpoint,
            describe(exc, self.config.timeout, ambiguous=ambiguous),
        )

    def _connect(self) -> Any:
        config = self.config
        host, port = config.endpoints[self._index]
        endpoint = pyetcd.Endpoint(
            host,
            port,
            secure=config.tls,
            creds=self._tls_credentials() if config.tls else None,
            # pyetcd would refuse a failed endpoint for 300 s; retrying is decided here instead
            time_retry=0.0,
            opts=_GRPC_OPTIONS,
        )
        # with user and password set, this authenticates (one call) and keeps the token
        client = pyetcd.MultiEndpointEtcd3Client(
            endpoints=[endpoint],
            timeout=config.timeout,
            user=config.user,
            password=config.password,
        )
        # pyetcd sends the token twice, as metadata and as call credentials; gRPC refuses call
        # credentials on a plain-text channel, and the metadata alone is what etcd reads
        client.call_credentials = None
        return client

    def _tls_credentials(self) -> Any:
        if self._credentials is None:
            config = self.config

            def read(path: str | None) -> bytes | None:
                return None if path is None else Path(path).read_bytes()

            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=read(config.ca_cert),
                private_key=read(config.key),
                certificate_chain=read(config.cert),
            )
        return self._credentials


def rpc_error(exc: BaseException) -> grpc.RpcError | None:
    """The gRPC error behind ``exc`` (pyetcd re-raises its own exception type from it)."""
    for candidate in (exc, exc.__context__, exc.__cause__):
        if isinstance(candidate, grpc.RpcError) and hasattr(candidate, "code"):
            return candidate
    return None


def not_delivered(exc: BaseException) -> bool:
    """True when etcd certainly did not apply the request (it never got it, or refused it)."""
    rpc = rpc_error(exc)
    if rpc is None:
        return isinstance(exc, etcd_errors.NoServerAvailableError)
    code, details = rpc.code(), (rpc.details() or "").lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        return "failed to connect" in details or "connection refused" in details
    # simple auth tokens expire (5 min of idleness by default): a new client logs in again
    return code == grpc.StatusCode.UNAUTHENTICATED and "invalid auth token" in details


def transient(exc: BaseException) -> bool:
    """True when a new connection may succeed where this one failed."""
    if not_delivered(exc):
        return True
    rpc = rpc_error(exc)
    return rpc is not None and rpc.code() in {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }


def describe(exc: BaseException, timeout: float, *, ambiguous: bool) -> str:
    """What went wrong, in words that name the option to check."""
    rpc = rpc_error(exc)
    if rpc is None:
        text = str(exc) or type(exc).__name__
    else:
        code, details = rpc.code(), rpc.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            text = (
                f"cannot reach etcd ({details}); is it running there? "
                "Set FAASFLOW_ETCD_ENDPOINTS (or ETCDCTL_ENDPOINTS)"
            )
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            text = f"no answer within {timeout:g} s (FAASFLOW_ETCD_TIMEOUT)"
        elif code in {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED} or (
            "authentication" in details.lower()
        ):
            text = f"{details}; check FAASFLOW_ETCD_USER and FAASFLOW_ETCD_PASSWORD"
        else:
            text = f"{code.name}: {details}"
    if ambiguous:
        text += " (the connection broke after the request was sent: it may have been applied)"
    return text
