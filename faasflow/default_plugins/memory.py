"""``memory``: a StateStore and a DataStore that live in one process.

The default when nothing is configured. Every handle made by :meth:`scoped` shares one
dictionary and one lock, so requests served by the threads of one process coordinate exactly
as they would on a server; other processes see nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import ClassVar

import attrs

from faasflow.backends import Backend
from faasflow.errors import CompareFailed, KeyNotFound
from faasflow.hookspecs import hookimpl
from faasflow.interfaces import DataStore, Decide, Options, StateStore

__all__ = ["MemoryDataStore", "MemoryStateStore"]

_WHERE = "memory store"


class _Lock:
    """The shelf's lock, taken only by a thread running Python (one holding the GIL).

    A plain lock hands itself to a woken waiter before that waiter has the GIL back: the
    holder then cannot run, the thread that woke it soon waits on the lock in its turn, and
    every later acquisition waits and switches threads (a convoy that lasts as long as the
    load, with many threads on few cores). Here a woken waiter only tries again, once it
    runs: a release wakes one, and the lock stays free for whoever runs first."""

    __slots__ = ("_held", "_parked")

    def __init__(self) -> None:
        self._held = threading.Lock()
        self._parked: deque[threading.Lock] = deque()  # a wake-up lock per waiting thread

    def __enter__(self) -> None:
        if not self._held.acquire(False):
            self._wait()

    def __exit__(self, *exc: object) -> None:
        self._held.release()
        if self._parked:
            try:
                wake = self._parked.popleft()
            except IndexError:  # another releaser woke the last one
                return
            wake.release()

    def _wait(self) -> None:
        wake = threading.Lock()
        wake.acquire()
        while True:
            self._parked.append(wake)
            # a release between the failed try and the append woke nobody: look again
            if self._held.acquire(False):
                # gone when a releaser took it: its wake-up comes to a lock now unused
                with contextlib.suppress(ValueError):
                    self._parked.remove(wake)
                return
            wake.acquire()


@attrs.define(eq=False)
class _Shelf:
    """The dictionaries every handle of one backend object shares, one per request namespace:
    a handle finds its own without joining strings, and lists or drops it without walking the
    keys of every other request."""

    spaces: dict[str, dict[str, object]] = attrs.field(factory=dict)
    lock: _Lock = attrs.field(factory=_Lock)

    @property
    def values(self) -> dict[str, object]:
        """Every value by its full key (namespace and key): a copy, for looking at."""
        with self.lock:
            return {ns + k: v for ns, space in self.spaces.items() for k, v in space.items()}

    def space(self, namespace: str) -> dict[str, object]:
        """The namespace's dictionary, made when missing (call with the lock held)."""
        space = self.spaces.get(namespace)
        if space is None:
            space = self.spaces[namespace] = {}
        return space

    def drop(self, namespace: str) -> None:
        with self.lock:
            self.spaces.pop(namespace, None)


_EMPTY: dict[str, object] = {}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


@attrs.define(eq=False, slots=False)
class MemoryStateStore(StateStore):
    """Thread-safe, process-local StateStore."""

    atomic_transactions = True
    locked_transactions = True
    #: A scoped handle holds only its namespace: the engine may share one between threads.
    handles_shareable: ClassVar[bool] = True

    _shelf: _Shelf = attrs.field(factory=_Shelf, alias="shelf")

    @classmethod
    def from_options(cls, options: Options) -> MemoryStateStore:
        """The factory registered for the ``memory`` state store (it takes no options)."""
        return cls()

    def set(self, key: str, value: str) -> None:
        with self._shelf.lock:
            self._shelf.space(self._namespace)[key] = value

    def get(self, key: str) -> str:
        value = self._shelf.spaces.get(self._namespace, _EMPTY).get(key)
        if value is None:
            raise KeyNotFound(key, self._where)
        return str(value)

    def update(self, key: str, old_value: str, new_value: str) -> None:
        with self._shelf.lock:
            space = self._shelf.spaces.get(self._namespace, _EMPTY)
            current = space.get(key)
            if current is None:
                raise KeyNotFound(key, self._where)
            if current != old_value:
                raise CompareFailed(key, old_value, self._where)
            space[key] = new_value

    def create(self, key: str, value: str) -> bool:
        with self._shelf.lock:
            space = self._shelf.space(self._namespace)
            if key in space:
                return False
            space[key] = value
            return True

    def delete(self, key: str) -> None:
        with self._shelf.lock:
            self._shelf.spaces.get(self._namespace, _EMPTY).pop(key, None)

    def scan(self, prefix: str = "") -> dict[str, str]:
        with self._shelf.lock:
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
        with self._shelf.lock:
            values = self._shelf.spaces.get(self._namespace, _EMPTY)
            for key, expected in compare.items():
                current = values.get(key)
                # values are kept as written (str): str() only for anything else
                if current != expected and (current is None or str(current) != expected):
                    return False
            if put:
                if values is _EMPTY:
                    values = self._shelf.space(self._namespace)
                values.update(put)
            for key in doomed:
                values.pop(key, None)
            return True

    def locked_transaction(self, keys: Iterable[str], decide: Decide) -> None:
        with self._shelf.lock:
            space = self._shelf.spaces.get(self._namespace, _EMPTY)
            values = {key: _text(space.get(key)) for key in keys}
            writes = decide(values)
            if not writes:
                return
            space = self._shelf.space(self._namespace)
            for key, value in writes.items():
                if value is None:
                    space.pop(key, None)
                else:
                    space[key] = value

    def increment(self, key: str, by: int = 1) -> int:
        with self._shelf.lock:
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
            self._shelf.space(self._namespace)[key] = data

    def get(self, key: str) -> bytes:
        value = self._shelf.spaces.get(self._namespace, _EMPTY).get(key)
        if not isinstance(value, bytes):
            raise KeyNotFound(key, f"{_WHERE} {self._namespace}")
        return value

    def delete(self, key: str) -> None:
        with self._shelf.lock:
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
