"""Retrying store and gateway calls inside an iteration.

OpenFaaS CE's queue-worker acknowledges a delivery whatever the flow answers, so an iteration
that gives up on a blip of etcd or the gateway is an iteration lost. Every store call of an
iteration therefore goes through :class:`RetryingStates` / :class:`RetryingData`, which retry a
:class:`~faasflow.errors.BackendError` with jittered exponential backoff for a bounded time
(``FAASFLOW_BACKEND_RETRY``, a few seconds) before letting it through (the iteration then
answers 503, which a redelivering queue retries).

Retrying a write whose first try was applied but reported lost is safe for every write the
engine makes: ``create`` and ``update`` then report a conflict, and the engine re-reads and
recognises its own value (each claim, marker and tombstone carries the writer's token).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from faasflow.errors import BackendError
from faasflow.interfaces import DataStore, Decide, StateStore

__all__ = ["RetryingData", "RetryingStates", "retry_after", "retry_backend"]

T = TypeVar("T")
_FIRST = 0.02
_MAX = 1.0


def retry_backend(budget: float, fn: Callable[[], T]) -> T:
    """``fn()``, retried on BackendError for up to ``budget`` seconds."""
    if budget <= 0:
        return fn()
    started = time.monotonic()
    try:
        return fn()
    except BackendError as exc:
        return retry_after(budget, started, fn, exc)


def retry_after(budget: float, started: float, fn: Callable[[], T], error: BackendError) -> T:
    """``fn()`` again, with backoff, until it succeeds or ``budget`` seconds from ``started``
    (when its first try began) run out; ``error`` is that first try's failure."""
    give_up = started + budget
    delay = _FIRST
    while True:
        left = give_up - time.monotonic()
        if left <= 0:
            raise error
        time.sleep(min(left, random.uniform(delay / 2, delay)))
        delay = min(delay * 2, _MAX)
        try:
            return fn()
        except BackendError as exc:
            error = exc


# The handles below make the first try of each call directly (no closure, no helper call):
# the engine makes several store calls per node, and only a failure needs the retry loop.


class RetryingStates(StateStore):
    """A scoped StateStore handle whose calls retry backend failures."""

    def __init__(self, inner: StateStore, budget: float) -> None:
        self.inner = inner
        self.budget = budget
        self.atomic_transactions = inner.atomic_transactions  # type: ignore[misc]
        self.locked_transactions = inner.locked_transactions  # type: ignore[misc]
        self.pages_walk_the_range = inner.pages_walk_the_range  # type: ignore[misc]
        self.configure(inner.flow_name, inner.request_id)

    def init(self) -> None:
        retry_backend(self.budget, self.inner.init)

    def set(self, key: str, value: str) -> None:
        started = time.monotonic()
        try:
            self.inner.set(key, value)
        except BackendError as exc:
            if self.budget <= 0:
                raise
            retry_after(self.budget, started, lambda: self.inner.set(key, value), exc)

    def get(self, key: str) -> str:
        started = time.monotonic()
        try:
            return self.inner.get(key)
        except BackendError as exc:
            if self.budget <= 0:
                raise
            return retry_after(self.budget, started, lambda: self.inner.get(key), exc)

    def update(self, key: str, old_value: str, new_value: str) -> None:
        started = time.monotonic()
        try:
            self.inner.update(key, old_value, new_value)
        except BackendError as exc:
            if self.budget <= 0:
                raise
            retry_after(self.budget, started,
                   lambda: self.inner.update(key, old_value, new_value), exc)

    def create(self, key: str, value: str) -> bool:
        started = time.monotonic()
        try:
            return self.inner.create(key, value)
        except BackendError as exc:
            if self.budget <= 0:
                raise
            return retry_after(self.budget, started, lambda: self.inner.create(key, value), exc)

    def delete(self, key: str) -> None:
        retry_backend(self.budget, lambda: self.inner.delete(key))

    def scan(self, prefix: str = "") -> dict[str, str]:
        return retry_backend(self.budget, lambda: self.inner.scan(prefix))

    def scan_page(
        self, prefix: str, start_after: str = "", limit: int = 100, end_before: str | None = None
    ) -> list[tuple[str, str]]:
        return retry_backend(
            self.budget, lambda: self.inner.scan_page(prefix, start_after, limit, end_before)
        )

    def cleanup(self) -> None:
        retry_backend(self.budget, self.inner.cleanup)

    def increment(self, key: str, by: int = 1) -> int:
        return retry_backend(self.budget, lambda: self.inner.increment(key, by))

    def transaction(
        self,
        compare: Mapping[str, str | None],
        put: Mapping[str, str] = {},
        delete: Iterable[str] = (),
    ) -> bool:
        deletes = tuple(delete) if delete else ()
        started = time.monotonic()
        try:
            return self.inner.transaction(compare, put, deletes)
        except BackendError as exc:
            if self.budget <= 0:
                raise
            return retry_after(self.budget, started,
                          lambda: self.inner.transaction(compare, put, deletes), exc)

    def locked_transaction(self, keys: Iterable[str], decide: Decide) -> None:
        read = tuple(keys)
        started = time.monotonic()
        try:
            self.inner.locked_transaction(read, decide)
        except BackendError as exc:
            if self.budget <= 0:
                raise
            retry_after(self.budget, started,
                        lambda: self.inner.locked_transaction(read, decide), exc)


class RetryingData(DataStore):
    """A scoped DataStore handle whose calls retry backend failures."""

    def __init__(self, inner: DataStore, budget: float) -> None:
        self.inner = inner
        self.budget = budget
        self.configure(inner.flow_name, inner.request_id)

    def init(self) -> None:
        retry_backend(self.budget, self.inner.init)

    def set(self, key: str, value: bytes) -> None:
        started = time.monotonic()
        try:
            self.inner.set(key, value)
        except BackendError as exc:
            if self.budget <= 0:
                raise
            retry_after(self.budget, started, lambda: self.inner.set(key, value), exc)

    def get(self, key: str) -> bytes:
        started = time.monotonic()
        try:
            return self.inner.get(key)
        except BackendError as exc:
            if self.budget <= 0:
                raise
            return retry_after(self.budget, started, lambda: self.inner.get(key), exc)

    def delete(self, key: str) -> None:
        retry_backend(self.budget, lambda: self.inner.delete(key))

    def cleanup(self) -> None:
        retry_backend(self.budget, self.inner.cleanup)
