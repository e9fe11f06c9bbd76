"""Fault injection for testing flows and backends: stores that fail at the k-th call, a queue
that redelivers, duplicates and reorders iterations, and functions that count their calls.

The systematic way to use them (the project's own ``tests/test_faults_systematic.py``)::

    faults = Faults()
    states = FailingStore.wrap(MemoryStateStore(), faults)   # every handle shares `faults`
    ...run a request once on a clean plan; faults.calls is how many store calls it made...
    for k in range(1, calls + 1):
        faults.reset(fail_at=k, mode="raise")   # or "applied": the write lands, then it raises
        ...run the request again, redeliver what fails, assert it ends exactly once...

Everything here is plain Python (no pytest), so it can drive a user's own backends and flows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

import attrs

from faasflow.errors import BackendError
from faasflow.interfaces import DataStore, Decide, StateStore
from faasflow.testing.redelivery import CountingFunctions, Delivery, RedeliveringQueue, status_of

__all__ = [
    "CountingFunctions",
    "Delivery",
    "FailingDataStore",
    "FailingStateStore",
    "FailingStore",
    "FaultMode",
    "Faults",
    "InjectedFault",
    "RedeliveringQueue",
    "status_of",
]

#: ``raise``: the call fails before it reaches the backend (a refused or lost request).
#: ``applied``: the call reaches the backend and takes effect, then the caller sees an error
#: (an etcd or Consul timeout whose write was applied). ``kill``: the process dies at once with
#: SIGKILL before the call; ``kill-applied``: it dies right after the call took effect.
FaultMode = Literal["raise", "applied", "kill", "kill-applied"]

_S = TypeVar("_S", StateStore, DataStore)


class InjectedFault(BackendError):
    """The error a :class:`FailingStore` raises; a :class:`~faasflow.errors.BackendError`, so
    the engine treats it exactly like a real store outage."""

    def __init__(self, call: int, method: str, key: str, *, applied: bool) -> None:
        self.call = call
        self.applied = applied
        what = "applied, then the answer was lost" if applied else "not applied"
        super().__init__("fault injection", f"{method} {key!r}", f"call {call}", what)


def _targets(value: int | Iterable[int] | None) -> int | frozenset[int] | None:
    return value if value is None or isinstance(value, int) else frozenset(value)


def _names(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


@attrs.define(eq=False)
class Faults:
    """The plan and the call counter shared by every handle of the wrapped stores.

    Calls are counted across all handles and stores wrapped with the same plan, in the order
    they happen; with ``methods`` set only calls of those method names count (and can fail).
    """

    fail_at: int | frozenset[int] | None = attrs.field(default=None, converter=_targets)
    """The call number (1-based) that fails, several numbers, or None for no fault."""
    mode: FaultMode = "raise"
    methods: frozenset[str] | None = attrs.field(default=None, converter=_names)
    """Only calls of these method names count (and can fail); None counts every call."""
    calls: int = 0
    """Calls counted so far."""
    log: list[tuple[int, str, str]] = attrs.field(factory=list)
    """``(call number, method, namespace + key)`` of every counted call."""
    injected: list[InjectedFault] = attrs.field(factory=list)
    """The faults raised so far."""
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def reset(
        self,
        fail_at: int | Iterable[int] | None = None,
        mode: FaultMode = "raise",
        methods: Iterable[str] | None = None,
    ) -> None:
        """Start counting from zero with a new plan."""
        with self._lock:
            self.fail_at, self.mode = _targets(fail_at), mode
            self.methods = _names(methods)
            self.calls = 0
            self.log = []
            self.injected = []

    def _count(self, method: str, key: str) -> int | None:
        """Count a call; return its number when it is to fail, else None."""
        if self.methods is not None and method not in self.methods:
            return None
        with self._lock:
            self.calls += 1
            number = self.calls
            self.log.append((number, method, key))
            targets = self.fail_at
            if targets is None:
                return None
            hit = number == targets if isinstance(targets, int) else number in targets
            return number if hit else None

    def _around(self, method: str, key: str, call: Callable[[], Any]) -> Any:
        number = self._count(method, key)
        if number is None:
            return call()
        if self.mode == "kill":
            _die()
        if self.mode in ("applied", "kill-applied"):
            # whatever the store answered, an error included, is lost as a timeout loses it
            with contextlib.suppress(Exception):
                call()
            if self.mode == "kill-applied":
                _die()
        fault = InjectedFault(number, method, key, applied=self.mode == "applied")
        with self._lock:
            self.injected.append(fault)
        raise fault


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class FailingStore:
    """Wraps a StateStore or DataStore and fails at the calls its :class:`Faults` plan names.

    Use :meth:`wrap`; ``scoped()`` handles wrap the inner store's handles and share the plan,
    so a request's calls are counted however many handles the engine makes. ``close()`` is
    passed through uncounted.
    """

    inner: Any
    faults: Faults
    _classes: ClassVar[dict[tuple[type, bool, bool], type]] = {}

    @staticmethod
    def wrap(store: _S, faults: Faults) -> _S:
        """A failing wrapper of ``store``, of the same kind (and with the same
        ``atomic_transactions`` capability when it is a StateStore)."""
        base: type = FailingStateStore if isinstance(store, StateStore) else FailingDataStore
        atomic = bool(getattr(type(store), "atomic_transactions", False))
        locked = bool(getattr(type(store), "locked_transactions", False))
        key = (base, atomic, locked)
        cls = FailingStore._classes.get(key)
        if cls is None:
            extra = {"atomic_transactions": True} if atomic else {}
            if locked:
                extra["locked_transactions"] = True
            cls = FailingStore._classes[key] = type(base.__name__, (base,), extra)
        wrapper: Any = object.__new__(cls)
        wrapper.inner = store
        wrapper.faults = faults
        wrapper.configure(store.flow_name, store.request_id)
        return wrapper  # type: ignore[no-any-return]

    def scoped(self, flow_name: str, request_id: str) -> Any:
        return FailingStore.wrap(self.inner.scoped(flow_name, request_id), self.faults)

    def _do(self, method: str, key: str, *args: Any) -> Any:
        bound = getattr(self.inner, method)
        return self.faults._around(method, self.inner.namespace + key, lambda: bound(*args))

    def init(self) -> None:
        self._do("init", "")

    def delete(self, key: str) -> None:
        self._do("delete", key, key)

    def cleanup(self) -> None:
        self._do("cleanup", "")

    def close(self) -> None:
        self.inner.close()


class FailingStateStore(FailingStore, StateStore):
    """A :class:`FailingStore` around a StateStore."""

    def set(self, key: str, value: str) -> None:
        self._do("set", key, key, value)

    def get(self, key: str) -> str:
        value: str = self._do("get", key, key)
        return value

    def update(self, key: str, old_value: str, new_value: str) -> None:
        self._do("update", key, key, old_value, new_value)

    def create(self, key: str, value: str) -> bool:
        return bool(self._do("create", key, key, value))

    def scan(self, prefix: str = "") -> dict[str, str]:
        found: dict[str, str] = self._do("scan", prefix, prefix)
        return found

    def scan_page(
        self, prefix: str, start_after: str = "", limit: int = 100, end_before: str | None = None
    ) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = self._do(
            "scan_page", prefix, prefix, start_after, limit, end_before
        )
        return found

    def increment(self, key: str, by: int = 1) -> int:
        return int(self._do("increment", key, key, by))

    def transaction(
        self,
        compare: Mapping[str, str | None],
        put: Mapping[str, str] = {},
        delete: Iterable[str] = (),
    ) -> bool:
        keys = [*compare, *put, *delete]
        return bool(self._do("transaction", ",".join(keys), compare, put, list(delete)))

    def locked_transaction(self, keys: Iterable[str], decide: Decide) -> None:
        read = list(keys)
        self._do("locked_transaction", ",".join(read), read, decide)


class FailingDataStore(FailingStore, DataStore):
    """A :class:`FailingStore` around a DataStore."""

    def set(self, key: str, value: bytes) -> None:
        self._do("set", key, key, value)

    def get(self, key: str) -> bytes:
        value: bytes = self._do("get", key, key)
        return value
