"""The Consul KV StateStore.

Consul has no compare-on-value, so ``update`` reads the key, compares, and writes with
``?cas=<ModifyIndex>``: the write lands only if nobody wrote the key since it was read, and a
lost race reads again. (faas-flow's Consul store compared and then wrote unconditionally, so two
writers could both "win".) ``create`` is a write with ``?cas=0``, ``scan`` one ``?recurse`` read
and ``cleanup`` one recursive delete. ``transaction`` reads the compared keys, then sends one
``PUT /v1/txn`` that checks each one's ModifyIndex (``check-index``, or ``check-not-exists``
for an absent one) before its sets and deletes; a check that fails means another writer got
in between, so it reads again.

Keys are escaped before they reach Consul: HTTP clients and servers normalise ``.``/``..`` path
segments and empty segments, which would move a key such as ``../x`` out of its request's
namespace. Every ``%``, ``/`` and ``.`` inside a flow name, request id or key is
percent-encoded; the escaping is character by character, so prefixes stay prefixes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import attrs
import consul
import requests
import urllib3.exceptions

from faasflow.errors import BackendError, CompareFailed, ConfigurationError, KeyNotFound
from faasflow.interfaces import Options, StateStore
from faasflow_consul import OPTIONS

__all__ = ["ConsulConfig", "ConsulStateStore", "escape_key"]

T = TypeVar("T")

DEFAULT_ADDRESS = "127.0.0.1:8500"
DEFAULT_PORT = 8500
DEFAULT_TIMEOUT = 5.0

#: Conflicting writers an ``update`` or ``increment`` outlasts before giving up; every conflict
#: means another writer succeeded.
MAX_CONFLICTS = 10_000

#: Operations one Consul transaction may hold (Consul refuses more with 413).
MAX_TXN_OPS = 64

_CLIENT_ERRORS = (consul.ConsulException, requests.RequestException)


def escape_key(text: str) -> str:
    """``text`` with everything but letters, digits, ``_``, ``-`` and ``~`` percent-encoded."""
    return quote(text, safe="").replace(".", "%2E")


def _bool(raw: str, option: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(
        f"FAASFLOW_CONSUL_{option.upper()}={raw!r} is not a boolean; use true or false"
    )


@attrs.frozen
class ConsulConfig:
    """Where and how to reach the Consul agent, resolved from the backend options."""

    host: str
    port: int
    scheme: str = "http"
    token: str | None = attrs.field(default=None, repr=False)
    verify: bool | str = True
    cert: tuple[str, str] | str | None = None
    datacenter: str | None = None
    consistency: str = "consistent"
    timeout: float = DEFAULT_TIMEOUT

    @property
    def url(self) -> str:
        """The agent's base URL, as error messages show it."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @classmethod
    def from_options(cls, options: Options) -> ConsulConfig:
        """Check and resolve ``FAASFLOW_CONSUL_*`` options; raise ConfigurationError naming
        the variable at fault."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown consul option(s) {', '.join(unknown)} (from FAASFLOW_CONSUL_"
                f"{unknown[0].upper()}); valid options: {', '.join(OPTIONS)}"
            )
        address = (options.get("address") or DEFAULT_ADDRESS).strip()
        parts = urlsplit(address if "://" in address else f"//{address}")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            port = -1
        scheme = parts.scheme.lower()
        if not parts.hostname or port < 0 or scheme not in {"", "http", "https"} or (
            parts.path not in {"", "/"}
        ):
            raise ConfigurationError(
                f"Consul address {address!r} is not host:port or http(s)://host:port "
                "(FAASFLOW_CONSUL_ADDRESS / CONSUL_HTTP_ADDR)"
            )
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        if options.get("ssl"):
            scheme = "https" if _bool(options["ssl"], "ssl") else "http"
        scheme = scheme or "http"

        token = options.get("token") or None
        token_file = options.get("token_file") or None
        if token is None and token_file is not None:
            try:
                token = Path(token_file).read_text().strip() or None
            except OSError as exc:
                raise ConfigurationError(
                    f"FAASFLOW_CONSUL_TOKEN_FILE={token_file!r} cannot be read: {exc.strerror}"
                ) from None

        ca_cert = options.get("ca_cert") or None
        client_cert = options.get("client_cert") or None
        client_key = options.get("client_key") or None
        for name, path in (
            ("ca_cert", ca_cert), ("client_cert", client_cert), ("client_key", client_key)
        ):
            if path is not None and not Path(path).is_file():
                raise ConfigurationError(f"FAASFLOW_CONSUL_{name.upper()}={path!r}: no such file")
        if client_key is not None and client_cert is None:
            raise ConfigurationError(
                "FAASFLOW_CONSUL_CLIENT_KEY is set without FAASFLOW_CONSUL_CLIENT_CERT"
            )
        verify: bool | str = _bool(options["ssl_verify"], "ssl_verify") if options.get(
            "ssl_verify"
        ) else True
        if verify and ca_cert is not None:
            verify = ca_cert
        cert: tuple[str, str] | str | None = (
            (client_cert, client_key) if client_cert and client_key else client_cert
        )

        consistency = (options.get("consistency") or "consistent").strip().lower()
        if consistency not in {"consistent", "default"}:
            raise ConfigurationError(
                f"FAASFLOW_CONSUL_CONSISTENCY={consistency!r}: use consistent or default "
                "(stale reads would break fan-in, which must see every write at once)"
            )
        timeout_raw = options.get("timeout") or str(DEFAULT_TIMEOUT)
        try:
            timeout = float(timeout_raw)
        except ValueError:
            timeout = 0.0
        if timeout <= 0:
            raise ConfigurationError(
                f"FAASFLOW_CONSUL_TIMEOUT={timeout_raw!r} must be a positive number of seconds"
            )
        return cls(
            host=host,
            port=port,
            scheme=scheme,
            token=token,
            verify=verify,
            cert=cert,
            datacenter=options.get("datacenter") or None,
            consistency=consistency,
            timeout=timeout,
        )

    def client(self) -> Any:
        """A py-consul client for this configuration."""
        client = consul.Consul(
            host=self.host.strip("[]"),
            port=self.port,
            scheme=self.scheme,
            consistency=self.consistency,
            dc=self.datacenter,
            verify=self.verify,
            cert=self.cert,
            connections_timeout=self.timeout,
        )
        # py-consul lets CONSUL_HTTP_TOKEN in os.environ override the token it is given;
        # faasflow's settings already resolved the token (FAASFLOW_CONSUL_TOKEN first)
        client.token = self.token
        return client


def _not_delivered(exc: BaseException) -> bool:
    """True when the agent certainly did not get the request (the connection never opened)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0] if exc.args else None, "reason", None)
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


def _describe(exc: BaseException, config: ConsulConfig, *, ambiguous: bool) -> str:
    if isinstance(exc, consul.ACLPermissionDenied):
        text = (
            f"permission denied ({exc}); check FAASFLOW_CONSUL_TOKEN (or CONSUL_HTTP_TOKEN) "
            "and the token's key_prefix policy for faasflow/"
        )
    elif isinstance(exc, requests.Timeout) and not _not_delivered(exc):
        text = f"no answer within {config.timeout:g} s (FAASFLOW_CONSUL_TIMEOUT)"
    elif isinstance(exc, requests.ConnectionError):
        text = (
            f"cannot reach the Consul agent ({type(exc).__name__}: {exc}); is it running? "
            "Set FAASFLOW_CONSUL_ADDRESS (or CONSUL_HTTP_ADDR)"
        )
    else:
        text = f"{type(exc).__name__}: {exc}"
    if ambiguous:
        text += " (the connection broke after the request was sent: it may have been applied)"
    return text


@attrs.frozen
class _Entry:
    value: str
    index: int


@attrs.define(slots=False, eq=False)
class ConsulStateStore(StateStore):
    """A :class:`~faasflow.StateStore` on Consul's KV HTTP API (through ``py-consul``)."""

    atomic_transactions = True
    handles_shareable = True  # a scoped handle holds only its namespace

    config: ConsulConfig
    _client: Any = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # a requests.Session inside: one connection pool shared by every scoped handle
        self._client = self.config.client()

    @classmethod
    def from_options(cls, options: Options) -> ConsulStateStore:
        """Build the store from ``FAASFLOW_CONSUL_*`` options (see
        :data:`faasflow_consul.OPTIONS`); nothing connects until the first operation."""
        return cls(ConsulConfig.from_options(options))

    @property
    def prefix(self) -> str:
        """The Consul key prefix of this request: the namespace, escaped."""
        return f"faasflow/{escape_key(self.flow_name)}/{escape_key(self.request_id)}/"

    # -- StateStore ---------------------------------------------------------------------------

    def set(self, key: str, value: str) -> None:
        name = self._key(key)
        written = self._call(
            "set", key, lambda kv: kv.put(name, value.encode()), idempotent=True
        )
        if not written:
            raise BackendError("consul", f"set {name!r}", self.config.url, "the agent refused")

    def get(self, key: str) -> str:
        entry = self._read("get", key)
        if entry is None:
            raise KeyNotFound(key, self._where)
        return entry.value

    def update(self, key: str, old_value: str, new_value: str) -> None:
        name = self._key(key)
        for _ in range(MAX_CONFLICTS):
            entry = self._read("update", key)
            if entry is None:
                raise KeyNotFound(key, self._where)
            if entry.value != old_value:
                raise CompareFailed(key, old_value, self._where)
            if self._cas("update", key, name, new_value, entry.index):
                return
        raise self._gave_up("update", key)

    def create(self, key: str, value: str) -> bool:
        return self._cas("create", key, self._key(key), value, 0)

    def delete(self, key: str) -> None:
        name = self._key(key)
        self._call("delete", key, lambda kv: kv.delete(name), idempotent=True)

    def scan(self, prefix: str = "") -> dict[str, str]:
        start = self.prefix
        _, items = self._call(
            "scan",
            prefix,
            lambda kv: kv.get(start + escape_key(prefix), recurse=True),
            idempotent=True,
        )
        return {
            unquote(item["Key"][len(start):]): _text(item.get("Value")) for item in items or ()
        }

    def cleanup(self) -> None:
        start = self.prefix
        self._call("cleanup", "", lambda kv: kv.delete(start, recurse=True), idempotent=True)

    def increment(self, key: str, by: int = 1) -> int:
        name = self._key(key)
        for _ in range(MAX_CONFLICTS):
            entry = self._read("increment", key)
            if entry is None:
                if self._cas("increment", key, name, str(by), 0):
                    return by
                continue
            current = int(entry.value)
            if by == 0:
                return current
            if self._cas("increment", key, name, str(current + by), entry.index):
                return current + by
        raise self._gave_up("increment", key)

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
        writes: list[dict[str, Any]] = [
            {"Verb": "set", "Key": self._key(k), "Value": base64.b64encode(v.encode()).decode()}
            for k, v in put.items()
        ]
        writes += [{"Verb": "delete", "Key": self._key(k)} for k in doomed]
        if len(compare) + len(writes) > MAX_TXN_OPS:
            raise BackendError(
                "consul",
                "transaction",
                self.config.url,
                f"{len(compare) + len(writes)} operations exceed Consul's {MAX_TXN_OPS} per "
                "transaction",
            )
        label = next(iter(compare), "")
        for _ in range(MAX_CONFLICTS):
            checks: list[dict[str, Any]] = []
            for key, expected in compare.items():
                entry = self._read("transaction", key)
                if expected is None:
                    if entry is not None:
                        return False
                    checks.append({"Verb": "check-not-exists", "Key": self._key(key)})
                else:
                    if entry is None or entry.value != expected:
                        return False
                    checks.append(
                        {"Verb": "check-index", "Key": self._key(key), "Index": entry.index}
                    )
            ops = [{"KV": op} for op in checks + writes]

            def send(_kv: Any, ops: list[dict[str, Any]] = ops) -> tuple[int, str]:
                return self._send_txn(ops)

            status, body = self._call("transaction", label, send, idempotent=False)
            if status == 200:
                return True
            failed = {e.get("OpIndex") for e in (json.loads(body).get("Errors") or ())}
            if not failed or not failed <= set(range(len(checks))):
                raise BackendError(
                    "consul", "transaction", self.config.url, f"the agent refused: {body}"
                )
            # a compared key changed between our read and the txn: read again
        raise self._gave_up("transaction", label)

    def close(self) -> None:
        self._client.http.session.close()

    # -- internals ----------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"consul {self.namespace}"

    def _key(self, key: str) -> str:
        return self.prefix + escape_key(key)

    def _read(self, operation: str, key: str) -> _Entry | None:
        name = self._key(key)
        _, item = self._call(operation, key, lambda kv: kv.get(name), idempotent=True)
        if item is None:
            return None
        return _Entry(_text(item.get("Value")), int(item["ModifyIndex"]))

    def _cas(self, operation: str, key: str, name: str, value: str, index: int) -> bool:
        return bool(
            self._call(
                operation,
                key,
                lambda kv: kv.put(name, value.encode(), cas=index),
                idempotent=False,
            )
        )

    def _send_txn(self, ops: list[dict[str, Any]]) -> tuple[int, str]:
        """``PUT /v1/txn``: ``(200, body)`` when applied, ``(409, body)`` when rolled back."""
        client = self._client

        def answer(response: Any) -> tuple[int, str]:
            if response.code not in (200, 409):
                consul.callback.CB._status(response)
                raise consul.ConsulException(f"{response.code} {response.body}")
            body = response.body
            return response.code, body.decode() if isinstance(body, bytes) else str(body)

        params = [("dc", client.dc)] if client.dc else None
        result: tuple[int, str] = client.http.put(
            answer,
            "/v1/txn",
            params=params,
            data=json.dumps(ops),
            headers=client.prepare_headers(),
        )
        return result

    def _call(self, operation: str, key: str, call: Callable[[Any], T], *, idempotent: bool) -> T:
        """Run ``call`` on the KV endpoint; retry once when the request never reached the agent
        or repeating it is harmless (requests reopens dropped keep-alive connections itself)."""
        kv = self._client.kv
        try:
            return call(kv)
        except _CLIENT_ERRORS as exc:
            transient = isinstance(exc, requests.ConnectionError | requests.Timeout)
            if not (_not_delivered(exc) or (idempotent and transient)):
                raise self._error(operation, key, exc, ambiguous=transient) from exc
        try:
            return call(kv)
        except _CLIENT_ERRORS as exc:
            transient = isinstance(exc, requests.ConnectionError | requests.Timeout)
            ambiguous = not idempotent and transient and not _not_delivered(exc)
            raise self._error(operation, key, exc, ambiguous=ambiguous) from exc

    def _error(
        self, operation: str, key: str, exc: BaseException, *, ambiguous: bool
    ) -> BackendError:
        return BackendError(
            "consul",
            f"{operation} {self.namespace + key!r}",
            self.config.url,
            _describe(exc, self.config, ambiguous=ambiguous),
        )

    def _gave_up(self, operation: str, key: str) -> BackendError:
        return BackendError(
            "consul",
            f"{operation} {self.namespace + key!r}",
            self.config.url,
            f"gave up after {MAX_CONFLICTS} conflicting writes",
        )


def _text(value: bytes | str | None) -> str:
    # Consul returns an empty value as null
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
