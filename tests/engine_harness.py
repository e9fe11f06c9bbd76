"""A harness for engine scenarios: the engine on real in-memory (or sqlite) backends, with an
invoker whose iteration queue the test drains, holds, reorders or runs concurrently.

This is the "fake gateway" of faasflow-behaviour.md §5: functions are Python callables, and
forwarded iterations wait in a queue until the test delivers them to ``Engine.forward``.
"""

from __future__ import annotations

import collections
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from faasflow import Flow
from faasflow.backends import Kind
from faasflow.engine import Backends, Engine, Message
from faasflow.errors import FunctionError, RequestNotActive
from faasflow.interfaces import DataStore, Invoker, Response, StateStore
from faasflow.plugins import Registry
from faasflow.settings import Settings


@attrs.frozen
class Called:
    function: str
    data: bytes
    method: str
    headers: Mapping[str, str]
    query: Mapping[str, list[str]]


@attrs.frozen
class Forwarded:
    flow: str
    request_id: str
    body: bytes
    headers: Mapping[str, str]

    @property
    def message(self) -> Message:
        return Message.decode(self.body, None)


def fail500(_: bytes) -> Response:
    return Response(500, b"boom")


STUBS: dict[str, Callable[[bytes], Any]] = {
    "func1": lambda d: d + b"func1",
    "func2": lambda d: d + b"func2",
    "echo": lambda d: d,
    "fail500": fail500,
}


class QueueInvoker(Invoker):
    """Calls Python stubs; parks every forwarded iteration in a queue the test controls."""

    in_process = True

    def __init__(self, functions: Mapping[str, Callable[[bytes], Any]] | None = None) -> None:
        self.functions = dict(STUBS)
        self.functions.update(functions or {})
        self.calls: list[Called] = []
        self.forwards: list[Forwarded] = []
        self.queue: collections.deque[Forwarded] = collections.deque()
        self.requests: list[tuple[str, str, bytes, Mapping[str, str]]] = []
        self.fail_forward: Callable[[Forwarded], bool] | None = None
        self.duplicate = False
        """Queue every forwarded iteration twice (the same call id: one message delivered
        twice, as an at-least-once queue may)."""
        self.lock = threading.Lock()

    def call(
        self,
        function: str,
        data: bytes,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, list[str]] | None = None,
        timeout: float | None = None,
    ) -> Response:
        with self.lock:
            self.calls.append(
                Called(function, data, method, dict(headers or {}), dict(query or {}))
            )
        if function not in self.functions:
            raise FunctionError(f"no stub {function}", url=f"/function/{function}")
        result = self.functions[function](data)
        if isinstance(result, Response):
            return attrs.evolve(result, url=f"http://gateway/function/{function}")
        body = result.encode() if isinstance(result, str) else bytes(result or b"")
        return Response(200, body, {}, f"http://gateway/function/{function}")

    def request(
        self,
        method: str,
        url: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        import urllib.request

        with self.lock:
            self.requests.append((method, url, data, dict(headers or {})))
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
        with urllib.request.urlopen(req, timeout=timeout or 10) as resp:  # noqa: S310 - loopback
            return Response(resp.status, resp.read(), dict(resp.headers), url)

    def forward(
        self, flow_name: str, request_id: str, message: bytes, headers: Mapping[str, str]
    ) -> None:
        # the gateway gives every accepted call an id that stays the same across redeliveries
        item = Forwarded(
            flow_name, request_id, message, {**headers, "X-Call-Id": uuid.uuid4().hex}
        )
        if self.fail_forward is not None and self.fail_forward(item):
            raise FunctionError("500: gateway refused", url="/async-function", status=500)
        with self.lock:
            self.forwards.append(item)
            self.queue.append(item)
            if self.duplicate:
                self.queue.append(item)


class Tracked(DataStore):
    """Wraps a real DataStore and remembers which keys are live (for 'nothing left' checks)."""

    def __init__(
        self,
        inner: DataStore,
        live: dict[str, set[str]] | None = None,
        counts: collections.Counter[str] | None = None,
    ) -> None:
        self.inner = inner
        self.live = live if live is not None else collections.defaultdict(set)
        self.counts = counts if counts is not None else collections.Counter()

    @property
    def writes(self) -> int:
        """Writes into request namespaces (request records excluded)."""
        return sum(n for ns, n in self.counts.items() if "/~records/" not in ns)

    def scoped(self, flow_name: str, request_id: str) -> Tracked:
        handle = Tracked(self.inner.scoped(flow_name, request_id), self.live, self.counts)
        handle.configure(flow_name, request_id)
        return handle

    def set(self, key: str, value: bytes) -> None:
        self.counts[self.namespace] += 1
        self.inner.set(key, value)
        self.live[self.namespace].add(key)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        self.live[self.namespace].discard(key)

    def cleanup(self) -> None:
        self.inner.cleanup()
        self.live[self.namespace].clear()


class Harness:
    """An engine for one flow, its stores and its queue."""

    def __init__(
        self,
        define: Any,
        *,
        name: str = "testflow",
        settings: Settings | None = None,
        functions: Mapping[str, Callable[[bytes], Any]] | None = None,
        state_store: str = "memory",
        data_store: str = "memory",
    ) -> None:
        self.settings = settings or Settings(hmac_secret=b"test-key")
        registry = Registry.from_settings(self.settings)
        self.states: StateStore = registry.create(Kind.STATE_STORE, self.settings, state_store)
        self.data = Tracked(registry.create(Kind.DATA_STORE, self.settings, data_store))
        self.invoker = QueueInvoker(functions)
        self.outcomes: list[str] = []
        """What each delivery of :meth:`drain` answered (ran, parked, duplicate, refused)."""
        self.flow = define if isinstance(define, Flow) else Flow(define, name=name)
        self.engine = Engine(
            self.flow,
            self.settings,
            Backends(
                self.states,
                self.data,
                registry.create(Kind.TRACER, self.settings, "none"),
                self.invoker,
            ),
            name=name,
        )

    def start(self, data: bytes = b"", **kwargs: Any) -> Any:
        return self.engine.start(data, **kwargs)

    def drain(self, limit: int = 10_000, *, redeliver: bool = False) -> int:
        """Deliver queued iterations one by one (including those they produce).

        With ``redeliver`` a delivery that raises goes back on the queue with the same call
        id and the next attempt number (OpenFaaS Pro's queue); a refusal of an ended request
        is acked. Without it the error propagates to the test."""
        n = 0
        while self.invoker.queue and n < limit:
            item = self.invoker.queue.popleft()
            n += 1
            try:
                self.outcomes.append(self.engine.forward(item.body, item.headers))
            except RequestNotActive:
                if not redeliver:
                    raise
                self.outcomes.append("refused")
            except Exception:
                if not redeliver:
                    raise
                attempt = int(item.headers.get("X-Faas-Flow-Attempt", "1")) + 1
                self.invoker.queue.append(attrs.evolve(
                    item, headers={**item.headers, "X-Faas-Flow-Attempt": str(attempt)}
                ))
        return n

    def deliver(self, item: Forwarded) -> None:
        self.engine.forward(item.body, item.headers)

    def state_keys(self, request_id: str) -> dict[str, str]:
        return self.states.scoped(self.engine.name, request_id).scan("")

    def data_keys(self, request_id: str) -> set[str]:
        return set(self.data.live[f"faasflow/{self.engine.name}/{request_id}/"])

    def assert_clean(self, request_id: str) -> None:
        assert self.state_keys(request_id) == {}
        assert self.data_keys(request_id) == set()
