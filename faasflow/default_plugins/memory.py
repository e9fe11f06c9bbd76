"""``memory``: a StateStore and a DataStore that live in one process.

The default when nothing is configured. Every handle made by :meth:`scoped` shares one
dictionary and one lock, so requests served by the threads of one process coordinate exactly
as they would on a server; other processes see nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import ClassVar

import attrs

from faasflow.backends import Backend
from faasflow.errors import CompareFailed, KeyNotFound
from faasflow.hookspecs import hookimpl
from faasflow.interfaces import DataStore, Options, StateStore

__all__ = ["MemoryDataStore", "MemoryStateStore"]

_WHERE = "memory store"


@attrs.define(eq=False)
class _Shelf:
    """The dictionary every handle of one backend object shares."""

    values: dict[str, object] = attrs.field(factory=dict)
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def drop(self, namespace: str) -> None:
        with self.lock:
            for key in [k for k in self.values if k.startswith(namespace)]:
                del self.values[key]


@attrs.define(eq=False, slots=False)
class MemoryStateStore(StateStore):
    """Thread-safe, process-local StateStore."""

    atomic_transactions = True
    #: A scoped handle holds only its namespace: the engine may share one between threads.
    handles_shareable: ClassVar[bool] = True

    _shelf: _Shelf = attrs.field(factory=_Shelf, alias="shelf")

    @classmethod
    def from_options(cls, options: Options) -> MemoryStateStore:
        """The factory registered for the ``memory`` state store (it takes no options)."""
        return cls()

    def set(self, key: str, value: str) -> None:
        with self._shelf.lock:
            self._shelf.values[self._namespace + key] = value

    def get(self, key: str) -> str:
        value = self._shelf.values.get(self._namespace + key)
        if value is None:
            raise KeyNotFound(key, self._where)
        return str(value)

    def update(self, key: str, old_value: str, new_value: str) -> None:
        full = self._namespace + key
        with self._shelf.lock:
            current = self._shelf.values.get(full)
            if current is None:
                raise KeyNotFound(key, self._where)
            if current != old_value:
                raise CompareFailed(key, old_value, self._where)
            self._shelf.values[full] = new_value

    def create(self, key: str, value: str) -> bool:
        full = self._namespace + key
        with self._shelf.lock:
            if full in self._shelf.values:
                return False
            self._shelf.values[full] = value
            return True

    def delete(self, key: str) -> None:
        with self._shelf.lock:
            self._shelf.values.pop(self._namespace + key, None)

    def scan(self, prefix: str = "") -> dict[str, str]:
        start = self._namespace + prefix
        skip = len(self._namespace)
        with self._shelf.lock:
            return {
                k[skip:]: str(v) for k, v in self._shelf.values.items() if k.startswith(start)
            }

    def cleanup(self) -> None:
        self._shelf.drop(self._namespace)

    def transaction(
        self,
        compare: Mapping[str, str | None],
        put: Mapping[str, str] = {},
        delete: Iterable[str] = (),
    ) -> bool:
        ns = self._namespace
        doomed = [ns + key for key in delete]
        both = set(put) & {full[len(ns):] for full in doomed}
        if both:
            raise ValueError(
                f"transaction both puts and deletes {sorted(both)}; choose one per key"
            )
        with self._shelf.lock:
            values = self._shelf.values
            for key, expected in compare.items():
                current = values.get(ns + key)
                if (None if current is None else str(current)) != expected:
                    return False
            for key, value in put.items():
                values[ns + key] = value
            for full in doomed:
                values.pop(full, None)
            return True

    def increment(self, key: str, by: int = 1) -> int:
        full = self._namespace + key
        with self._shelf.lock:
            value = int(str(self._shelf.values.get(full, 0))) + by
            self._shelf.values[full] = str(value)
            return value

    @property
    def _where(self) -> str:
        return f"{_WHERE} {self._namespace}"


@attrs.define(eq=False, slots=False)
class MemoryDataStore(DataStore):
    """Thread-safe, process-local DataStore."""

    #: A scoped handle holds only its namespace: the engine may share one between threads.
    handles_shareable: ClassVar[bool] = True

    _shelf: _Shelf = attrs.field(factory=_Shelf, alias="shelf")

    @classmethod
    def from_options(cls, options: Options) -> MemoryDataStore:
        """The factory registered for the ``memory`` data store (it takes no options)."""
        return cls()

    def set(self, key: str, value: bytes) -> None:
        data = bytes(value)
        with self._shelf.lock:
            self._shelf.values[self._namespace + key] = data

    def get(self, key: str) -> bytes:
        value = self._shelf.values.get(self._namespace + key)
        if not isinstance(value, bytes):
            raise KeyNotFound(key, f"{_WHERE} {self._namespace}")
        return value

    def delete(self, key: str) -> None:
        with self._shelf.lock:
            self._shelf.values.pop(self._namespace + key, None)

    def cleanup(self) -> None:
        self._shelf.drop(self._namespace)


@hookimpl
def faasflow_state_stores() -> Iterable[Backend]:
    yield Backend(
        "memory",
        MemoryStateStore.from_options,
        summary="In-process state (one process, thread-safe); lost when the process exits.",
        shared="process",
    )


@hookimpl
def faasflow_data_stores() -> Iterable[Backend]:
    yield Backend(
        "memory",
        MemoryDataStore.from_options,
        summary="In-process data (one process, thread-safe); lost when the process exits.",
        shared="process",
    )
