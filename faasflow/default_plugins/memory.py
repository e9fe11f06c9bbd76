"""``memory``: a StateStore and a DataStore that live in one process.

The default when nothing is configured. Every handle made by :meth:`scoped` shares one
dictionary and one lock, so requests served by the threads of one process coordinate exactly
as they would on a server; other processes see nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from faasflow.backends import Backend
from faasflow.errors import CompareFailed, KeyNotFound
from faasflow.hookspecs import hookimpl
from faasflow.interfaces import DataStore, Decide, Options, StateStore
from faasflow.parking import ParkingLock

__all__ = ["MemoryDataStore", "MemoryStateStore"]

_WHERE = "memory store"


class _Shelf(ParkingLock):
    """The dictionaries every handle of one backend object shares, one per request namespace
    (a handle finds its own without joining strings, and lists or drops it without walking the
    keys of every other request), and the lock they share: ``with shelf:``.

    The lock is a :class:`~faasflow.parking.ParkingLock`: with many pool workers on few cores
    a plain one convoys. The calls every branch makes take and give it inline
    (``lock.acquire(False)`` or :meth:`wait`; ``lock.release()``, then :meth:`wake` if
    ``parked``): a ``with`` costs a microsecond more."""

    __slots__ = ("spaces",)

    def __init__(self) -> None:
        super().__init__()
        self.spaces: dict[str, dict[str, object]] = {}

    @property
    def values(self) -> dict[str, object]:
        """Every value by its full key (namespace and key): a copy, for looking at."""
        with self:
            return {ns + k: v for ns, space in self.spaces.items() for k, v in space.items()}

    def space(self, namespace: str) -> dict[str, object]:
        """The namespace's dictionary, made when missing (call with the lock held)."""
        space = self.spaces.get(namespace)
        if space is None:
            space = self.spaces[namespace] = {}
        return space

    def drop(self, namespace: str) -> None:
        with self:
            self.spaces.pop(namespace, None)


_EMPTY: dict[str, object] = {}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


@attrs.define(eq=False, slots=False)
class MemoryStateStore(StateStore):
    """Thread-safe, process-local StateStore."""

    atomic_transactions = True
    locked_transactions = True
    handles_shareable = True  # a scoped handle holds only its namespace

    _shelf: _Shelf = attrs.field(factory=_Shelf, alias="shelf")

    @classmethod
    def from_options(cls, options: Options) -> MemoryStateStore:
        """The factory registered for the ``memory`` state store (it takes no options)."""
        return cls()

    def set(self, key: str, value: str) -> None:
        with self._shelf:
            self._shelf.space(self._namespace)[key] = value

    def get(self, key: str) -> str:
        value = self._shelf.spaces.get(self._namespace, _EMPTY).get(key)
        if value is None:
            raise KeyNotFound(key, self._where)
        return str(value)

    def update(self, key: str, old_value: str, new_value: str) -> None:
        with self._shelf:
            space = self._shelf.spaces.get(self._namespace, _EMPTY)
            current = space.get(key)
            if current is None:
                raise KeyNotFound(key, self._where)
            if current != old_value:
                raise CompareFailed(key, old_value, self._where)
            space[key] = new_value

    def create(self, key: str, value: str) -> bool:
        with self._shelf:
            space = self._shelf.space(self._namespace)
            if key in space:
                return False
            space[key] = value
            return True

    def delete(self, key: str) -> None:
        with self._shelf:
            self._shelf.spaces.get(self._namespace, _EMPTY).pop(key, None)

    def scan(self, prefix: str = "") -> dict[str, str]:
        with self._shelf:
            space = self._shelf.spaces.get(self._namespace, _EMPTY)
            return {k: str(v) for k, v in space.items() if k.startswith(prefix)}

    def cleanup(self) -> None:
        self._shelf.drop(self._namespace)

    def transaction(
        self,
        compare: Mapping[str, str | None],
        put: Mapping[str, str] = {},
        delete: Iterable[str] = (),
    ) -> bool:
        doomed = list(delete) if delete else ()
        if doomed:
            both = set(put) & set(doomed)
            if both:
                raise ValueError(
                    f"transaction both puts and deletes {sorted(both)}; choose one per key"
                )
        shelf = self._shelf
        lock = shelf.lock
        if not lock.acquire(False):
            shelf.wait()
        try:
            values = shelf.spaces.get(self._namespace, _EMPTY)
            for key, expected in compare.items():
                current = values.get(key)
                # values are kept as written (str): str() only for anything else
                if current != expected and (current is None or str(current) != expected):
                    return False
            if put:
                if values is _EMPTY:
                    values = shelf.space(self._namespace)
                values.update(put)
            for key in doomed:
                values.pop(key, None)
            return True
        finally:
            lock.release()
            if shelf.parked:
                shelf.wake()

    def locked_transaction(self, keys: Iterable[str], decide: Decide) -> None:
        shelf = self._shelf
        lock = shelf.lock
        if not lock.acquire(False):
            shelf.wait()
        try:
            space = shelf.spaces.get(self._namespace, _EMPTY)
            values = {key: _text(space.get(key)) for key in keys}
            writes = decide(values)
            if not writes:
                return
            space = shelf.space(self._namespace)
            if None not in writes.values():
                space.update(writes)
                return
            for key, value in writes.items():
                if value is None:
                    space.pop(key, None)
                else:
                    space[key] = value
        finally:
            lock.release()
            if shelf.parked:
                shelf.wake()

    def increment(self, key: str, by: int = 1) -> int:
        with self._shelf:
            space = self._shelf.space(self._namespace)
            value = int(str(space.get(key, 0))) + by
            space[key] = str(value)
            return value

    @property
    def _where(self) -> str:
        return f"{_WHERE} {self._namespace}"


@attrs.define(eq=False, slots=False)
class MemoryDataStore(DataStore):
    """Thread-safe, process-local DataStore."""

    handles_shareable = True  # a scoped handle holds only its namespace

    _shelf: _Shelf = attrs.field(factory=_Shelf, alias="shelf")

    @classmethod
    def from_options(cls, options: Options) -> MemoryDataStore:
        """The factory registered for the ``memory`` data store (it takes no options)."""
        return cls()

    def set(self, key: str, value: bytes) -> None:
        data = bytes(value)
        with self._shelf:
            self._shelf.space(self._namespace)[key] = data

    def get(self, key: str) -> bytes:
        value = self._shelf.spaces.get(self._namespace, _EMPTY).get(key)
        if not isinstance(value, bytes):
            raise KeyNotFound(key, f"{_WHERE} {self._namespace}")
        return value

    def delete(self, key: str) -> None:
        with self._shelf:
            self._shelf.spaces.get(self._namespace, _EMPTY).pop(key, None)

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
