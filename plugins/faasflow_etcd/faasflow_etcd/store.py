"""The etcd v3 StateStore.

Every operation is one etcd request: compare-and-swap and create-if-absent are single
transactions (the failure branch reads the key back, so a failed CAS tells a missing key from a
changed value without a second round trip), ``scan`` is one range read and ``cleanup`` one range
delete. ``increment`` first tries to create the counter and otherwise swaps on the key's
``mod_revision``; a lost race returns the fresh value in the same round trip.

All handles of one backend share a single :class:`_Connection` (one gRPC channel, thread-safe).
After a connection failure the connection is rebuilt on the next endpoint and the operation is
tried once more, when that cannot apply it twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
import grpc
import pyetcd
from pyetcd import exceptions as etcd_errors
from pyetcd.utils import prefix_range_end

from faasflow.errors import BackendError, CompareFailed, ConfigurationError, KeyNotFound
from faasflow.interfaces import Options, StateStore
from faasflow_etcd import OPTIONS

__all__ = ["EtcdConfig", "EtcdStateStore"]

T = TypeVar("T")

DEFAULT_ENDPOINT = "127.0.0.1:2379"
DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0

#: Conflicting writers an ``increment`` outlasts before giving up; every conflict means another
#: writer succeeded, so reaching this needs thousands of concurrent writers on one counter.
MAX_CONFLICTS = 10_000

_GRPC_OPTIONS = [
    # a request namespace read by scan() can exceed gRPC's default 4 MiB message limit
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # come back quickly after a restart instead of gRPC's default 1 s..120 s backoff
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

_TX = pyetcd.Transactions()
_CLIENT_ERRORS = (etcd_errors.Etcd3Exception, grpc.RpcError)


def _bool(raw: str, option: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigurationError(
        f"FAASFLOW_ETCD_{option.upper()}={raw!r} is not a boolean; use true or false"
    )


def _host_port(raw: str) -> tuple[str, int, str]:
    """``(host, port, scheme)`` of one endpoint written as a URL or ``host[:port]``."""
    text = raw.strip()
    parts = urlsplit(text if "://" in text else f"//{text}")
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = -1
    if not parts.hostname or port < 0 or scheme not in {"", "http", "https"} or parts.path:
        raise ConfigurationError(
            f"etcd endpoint {raw!r} is not host:port or http(s)://host:port "
            "(FAASFLOW_ETCD_ENDPOINTS / ETCDCTL_ENDPOINTS)"
        )
    host = parts.hostname
    return (f"[{host}]" if ":" in host else host), port, scheme


@attrs.frozen
class EtcdConfig:
    """Where and how to reach etcd, resolved from the backend options."""

    endpoints: tuple[tuple[str, int], ...]
    tls: bool = False
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_options(cls, options: Options) -> EtcdConfig:
        """Check and resolve ``FAASFLOW_ETCD_*`` options; raise ConfigurationError naming the
        variable at fault."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown etcd option(s) {', '.join(unknown)} (from FAASFLOW_ETCD_"
                f"{unknown[0].upper()}); valid options: {', '.join(OPTIONS)}"
            )
        raw = [e for e in (options.get("endpoints") or DEFAULT_ENDPOINT).split(",") if e.strip()]
        parsed = [_host_port(e) for e in raw] or [_host_port(DEFAULT_ENDPOINT)]
        schemes = {scheme for _, _, scheme in parsed if scheme}
        if len(schemes) > 1:
            raise ConfigurationError(
                "etcd endpoints mix http:// and https:// (FAASFLOW_ETCD_ENDPOINTS); "
                "use one scheme for every member"
            )
        ca_cert, cert, key = (options.get(n) or None for n in ("ca_cert", "cert", "key"))
        tls = (
            schemes == {"https"}
            or ca_cert is not None
            or cert is not None
            or _bool(options.get("tls", ""), "tls")
        )
        if schemes == {"http"} and tls:
            raise ConfigurationError(
                "etcd endpoints use http:// but TLS options are set; use https:// endpoints"
            )
        if (cert is None) != (key is None):
            raise ConfigurationError(
                "etcd mutual TLS needs both FAASFLOW_ETCD_CERT and FAASFLOW_ETCD_KEY"
            )
        for name, path in (("ca_cert", ca_cert), ("cert", cert), ("key", key)):
            if path is not None and not Path(path).is_file():
                raise ConfigurationError(
                    f"FAASFLOW_ETCD_{name.upper()}={path!r}: no such file"
                )
        user = options.get("user") or None
        password = options.get("password") or None
        if user is not None and password is None and ":" in user:
            user, password = user.split(":", 1)  # etcdctl's --user user:password form
        if (user is None) != (password is None):
            raise ConfigurationError(
                "etcd authentication needs both FAASFLOW_ETCD_USER and FAASFLOW_ETCD_PASSWORD"
            )
        timeout_raw = options.get("timeout") or str(DEFAULT_TIMEOUT)
        try:
            timeout = float(timeout_raw)
        except ValueError:
            timeout = 0.0
        if timeout <= 0:
            raise ConfigurationError(
                f"FAASFLOW_ETCD_TIMEOUT={timeout_raw!r} must be a positive number of seconds"
            )
        return cls(
            endpoints=tuple((host, port) for host, port, _ in parsed),
            tls=tls,
            ca_cert=ca_cert,
            cert=cert,
            key=key,
            user=user,
            password=password,
            timeout=timeout,
        )

    def label(self, index: int) -> str:
        """The URL of endpoint ``index``, as error messages show it."""
        host, port = self.endpoints[index]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"


class _Connection:
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


def _rpc_error(exc: BaseException) -> grpc.RpcError | None:
    """The gRPC error behind ``exc`` (pyetcd re-raises its own exception type from it)."""
    for candidate in (exc, exc.__context__, exc.__cause__):
        if isinstance(candidate, grpc.RpcError) and hasattr(candidate, "code"):
            return candidate
    return None


def _not_delivered(exc: BaseException) -> bool:
    """True when etcd certainly did not apply the request (it never got it, or refused it)."""
    rpc = _rpc_error(exc)
    if rpc is None:
        return isinstance(exc, etcd_errors.NoServerAvailableError)
    code, details = rpc.code(), (rpc.details() or "").lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        return "failed to connect" in details or "connection refused" in details
    # simple auth tokens expire (5 min of idleness by default): a new client logs in again
    return code == grpc.StatusCode.UNAUTHENTICATED and "invalid auth token" in details


def _transient(exc: BaseException) -> bool:
    """True when a new connection may succeed where this one failed."""
    if _not_delivered(exc):
        return True
    rpc = _rpc_error(exc)
    return rpc is not None and rpc.code() in {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }


def _describe(exc: BaseException, timeout: float, *, ambiguous: bool) -> str:
    rpc = _rpc_error(exc)
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


@attrs.define(slots=False, eq=False)
class EtcdStateStore(StateStore):
    """A :class:`~faasflow.StateStore` on etcd's v3 API (through the ``pyetcd`` client)."""

    atomic_transactions = True
    pages_walk_the_range = True  # a limited range read still walks the index to range_end

    config: EtcdConfig
    _connection: _Connection = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._connection = _Connection(self.config)

    @classmethod
    def from_options(cls, options: Options) -> EtcdStateStore:
        """Build the store from ``FAASFLOW_ETCD_*`` options (see :data:`faasflow_etcd.OPTIONS`);
        nothing connects until the first operation."""
        return cls(EtcdConfig.from_options(options))

    @property
    def endpoint(self) -> str:
        """The etcd endpoint in use."""
        return self._connection.endpoint

    # -- StateStore ---------------------------------------------------------------------------

    def set(self, key: str, value: str) -> None:
        name = self._key(key)
        self._call("set", key, lambda c: c.put(name, value.encode()), idempotent=True)

    def get(self, key: str) -> str:
        name = self._key(key)
        value, meta = self._call("get", key, lambda c: c.get(name), idempotent=True)
        if meta is None:
            raise KeyNotFound(key, self._where)
        return bytes(value).decode()

    def update(self, key: str, old_value: str, new_value: str) -> None:
        name = self._key(key)
        ok, found = self._txn(
            "update",
            key,
            [_TX.value(name) == old_value.encode()],
            [_TX.put(name, new_value.encode())],
            [_TX.get(name)],
        )
        if ok:
            return
        if not found[0]:
            raise KeyNotFound(key, self._where)
        raise CompareFailed(key, old_value, self._where)

    def create(self, key: str, value: str) -> bool:
        name = self._key(key)
        ok, _ = self._txn(
            "create", key, [_TX.create(name) == 0], [_TX.put(name, value.encode())], []
        )
        return bool(ok)

    def delete(self, key: str) -> None:
        name = self._key(key)
        self._call("delete", key, lambda c: c.delete(name), idempotent=True)

    def scan(self, prefix: str = "") -> dict[str, str]:
        namespace = self.namespace
        start = len(namespace)
        found = self._call(
            "scan",
            prefix,
            lambda c: list(c.get_prefix(namespace + prefix)),
            idempotent=True,
        )
        return {bytes(meta.key).decode()[start:]: bytes(value).decode() for value, meta in found}

    def scan_page(
        self, prefix: str, start_after: str = "", limit: int = 100, end_before: str | None = None
    ) -> list[tuple[str, str]]:
        if limit <= 0:
            return []
        namespace = self.namespace
        low = (namespace + prefix).encode()
        after = (namespace + start_after).encode()
        start = after + b"\0" if after >= low else low  # the first key after start_after
        end = prefix_range_end(low)
        if end_before is not None:
            end = min(end, (namespace + end_before).encode())
        if start >= end:
            return []
        # no sort order: etcd answers in key order anyway, and asking for one makes it read
        # the whole range before it applies the limit
        found = self._call(
            "scan_page",
            prefix,
            lambda c: list(c.get_range(start, end, limit=limit)),
            idempotent=True,
        )
        skip = len(namespace)
        return [(bytes(meta.key).decode()[skip:], bytes(value).decode()) for value, meta in found]

    def cleanup(self) -> None:
        namespace = self.namespace
        self._call("cleanup", namespace, lambda c: c.delete_prefix(namespace), idempotent=True)

    def transaction(
        self,
        compare: Mapping[str, str | None],
        put: Mapping[str, str] = {},
        delete: Iterable[str] = (),
    ) -> bool:
        doomed = list(delete)
        both = set(put) & set(doomed)
        if both:
            raise ValueError(
                f"transaction both puts and deletes {sorted(both)}; choose one per key"
            )
        checks = [
            _TX.version(self._key(key)) == 0
            if expected is None
            else _TX.value(self._key(key)) == expected.encode()
            for key, expected in compare.items()
        ]
        success = [_TX.put(self._key(key), value.encode()) for key, value in put.items()]
        success += [_TX.delete(self._key(key)) for key in doomed]
        # One etcd txn (at most --max-txn-ops operations, 128 by default). Not retried on an
        # ambiguous failure: a txn that was applied would answer False the second time.
        ok, _ = self._txn("transaction", next(iter(compare), ""), checks, success, [])
        return ok

    def increment(self, key: str, by: int = 1) -> int:
        name = self._key(key)
        current: tuple[int, int] | None = None  # (value, mod_revision) as last read
        for _ in range(MAX_CONFLICTS):
            if current is None:
                ok, found = self._txn(
                    "increment",
                    key,
                    [_TX.create(name) == 0],
                    [_TX.put(name, str(by).encode())],
                    [_TX.get(name)],
                )
                if ok:
                    return by
            else:
                value, revision = current
                ok, found = self._txn(
                    "increment",
                    key,
                    [_TX.mod(name) == revision],
                    [_TX.put(name, str(value + by).encode())],
                    [_TX.get(name)],
                )
                if ok:
                    return value + by
            current = None
            if found[0]:
                raw, meta = found[0][0]
                current = (int(bytes(raw).decode()), meta.mod_revision)
                if by == 0:
                    return current[0]
        raise BackendError(
            "etcd",
            f"increment {key!r}",
            self.endpoint,
            f"gave up after {MAX_CONFLICTS} conflicting writes",
        )

    def close(self) -> None:
        self._connection.close()

    # -- internals ----------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"etcd {self.namespace}"

    def _key(self, key: str) -> bytes:
        return (self.namespace + key).encode()

    def _txn(
        self,
        operation: str,
        key: str,
        compare: Sequence[Any],
        success: Sequence[Any],
        failure: Sequence[Any],
    ) -> tuple[bool, list[Any]]:
        ok, responses = self._call(
            operation,
            key,
            lambda c: c.transaction(compare=compare, success=success, failure=failure),
            idempotent=False,
        )
        return bool(ok), list(responses)

    def _call(
        self, operation: str, key: str, call: Callable[[Any], T], *, idempotent: bool
    ) -> T:
        """Run ``call`` on the shared client; on a connection failure, retry once on a fresh
        connection when the request was not delivered or repeating it is harmless."""
        connection = self._connection
        client = None
        try:
            client = connection.client()
            return call(client)
        except _CLIENT_ERRORS as exc:
            retry = _not_delivered(exc) or (idempotent and _transient(exc))
            if not retry:
                raise self._error(operation, key, exc, ambiguous=_transient(exc)) from exc
        try:
            return call(connection.reconnect(client))
        except _CLIENT_ERRORS as exc:
            ambiguous = not idempotent and _transient(exc) and not _not_delivered(exc)
            raise self._error(operation, key, exc, ambiguous=ambiguous) from exc

    def _error(
        self, operation: str, key: str, exc: BaseException, *, ambiguous: bool
    ) -> BackendError:
        where = key if key.startswith(self.namespace) else self.namespace + key
        return BackendError(
            "etcd",
            f"{operation} {where!r}",
            self.endpoint,
            _describe(exc, self.config.timeout, ambiguous=ambiguous),
        )

