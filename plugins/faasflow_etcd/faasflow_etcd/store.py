"""The etcd v3 StateStore.

Every operation is one etcd request: compare-and-swap and create-if-absent are single
transactions (the failure branch reads the key back, so a failed CAS tells a missing key from a
changed value without a second round trip), ``scan`` is one range read and ``cleanup`` one range
delete. ``increment`` first tries to create the counter and otherwise swaps on the key's
``mod_revision``; a lost race returns the fresh value in the same round trip.

All handles of one backend share a single :class:`~faasflow_etcd.connection.Connection` (one
gRPC channel, thread-safe), which also decides when a failed call is tried again; the options
are resolved by :mod:`faasflow_etcd.config`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import pyetcd
from pyetcd.utils import prefix_range_end

from faasflow.errors import BackendError, CompareFailed, KeyNotFound
from faasflow.interfaces import Options, StateStore
from faasflow_etcd.config import EtcdConfig
from faasflow_etcd.connection import Connection

__all__ = ["EtcdConfig", "EtcdStateStore"]

T = TypeVar("T")

#: Conflicting writers an ``increment`` outlasts before giving up; every conflict means another
#: writer succeeded, so reaching this needs thousands of concurrent writers on one counter.
MAX_CONFLICTS = 10_000

_TX = pyetcd.Transactions()


@attrs.define(slots=False, eq=False)
class EtcdStateStore(StateStore):
    """A :class:`~faasflow.StateStore` on etcd's v3 API (through the ``pyetcd`` client)."""

    atomic_transactions = True
    pages_walk_the_range = True  # a limited range read still walks the index to range_end
    handles_shareable = True  # a scoped handle holds only its namespace

    config: EtcdConfig
    _connection: Connection = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._connection = Connection(self.config)

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
        self, operation: str, key: str, request: Callable[[Any], T], *, idempotent: bool
    ) -> T:
        where = key if key.startswith(self.namespace) else self.namespace + key
        return self._connection.call(operation, where, request, idempotent=idempotent)
