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

import collections
import contextlib
import os
import random
import signal
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

import attrs

from faasflow.errors import BackendError, FunctionError
from faasflow.interfaces import DataStore, Invoker, Response, StateStore

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


@attrs.define(eq=False)
class Faults:
    """The plan and the call counter shared by every handle of the wrapped stores.

    Calls are counted across all handles and stores wrapped with the same plan, in the order
    they happen; with ``methods`` set only calls of those method names count (and can fail).
    """

    fail_at: int | Iterable[int] | None = None
    """The call number (1-based) that fails, several numbers, or None for no fault."""
    mode: FaultMode = "raise"
    methods: frozenset[str] | None = None
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
            self.fail_at, self.mode = fail_at, mode
            self.methods = None if methods is None else frozenset(methods)
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
            hit = number == targets if isinstance(targets, int) else number in set(targets)
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
    _classes: ClassVar[dict[tuple[type, bool], type]] = {}

    @staticmethod
    def wrap(store: _S, faults: Faults) -> _S:
        """A failing wrapper of ``store``, of the same kind (and with the same
        ``atomic_transactions`` capability when it is a StateStore)."""
        base: type = FailingStateStore if isinstance(store, StateStore) else FailingDataStore
        atomic = bool(getattr(type(store), "atomic_transactions", False))
        key = (base, atomic)
        cls = FailingStore._classes.get(key)
        if cls is None:
            extra = {"atomic_transactions": True} if atomic else {}
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


class FailingDataStore(FailingStore, DataStore):
    """A :class:`FailingStore` around a DataStore."""

    def set(self, key: str, value: bytes) -> None:
        self._do("set", key, key, value)

    def get(self, key: str) -> bytes:
        value: bytes = self._do("get", key, key)
        return value


Function = Callable[[bytes], "bytes | str | Response | None"]


class CountingFunctions:
    """Python functions for an in-process invoker that count their own calls per request and
    per idempotency key (``<request>/<node execution id>``, so one count per node and branch)."""

    def __init__(
        self, functions: Mapping[str, Function], *, clock: Faults | None = None
    ) -> None:
        self.functions = dict(functions)
        self.counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.order: list[tuple[int, str, str, str]] = []
        """``(store calls counted by clock so far, request, idempotency key, function)`` of
        every call, in order: with ``clock`` set, tells which calls came before a fault."""
        self.clock = clock
        self._lock = threading.Lock()

    def __call__(self, function: str, data: bytes, headers: Mapping[str, str]) -> Response:
        lower = {k.lower(): v for k, v in headers.items()}
        request_id = lower.get("x-faas-flow-reqid", "")
        key = lower.get("idempotency-key", "")
        url = f"http://gateway/function/{function}"
        if function not in self.functions:
            raise FunctionError(f"no function named {function}", url=url, status=404)
        with self._lock:
            self.counts[(request_id, key, function)] += 1
            now = 0 if self.clock is None else self.clock.calls
            self.order.append((now, request_id, key, function))
        result = self.functions[function](data)
        if isinstance(result, Response):
            return attrs.evolve(result, url=url)
        body = result.encode() if isinstance(result, str) else bytes(result or b"")
        return Response(200, body, {}, url)

    def calls(self, request_id: str) -> dict[tuple[str, str], int]:
        """``{(idempotency key, function): calls}`` of one request."""
        with self._lock:
            return {(k, f): n for (r, k, f), n in self.counts.items() if r == request_id}

    def last_before(self, call: int) -> tuple[str, str] | None:
        """``(idempotency key, function)`` of the last function call made before store call
        number ``call`` (the node in progress when that call failed, in a sequential run)."""
        with self._lock:
            earlier = [(k, f) for now, _, k, f in self.order if now < call]
        return earlier[-1] if earlier else None

    def repeated(self, request_id: str) -> dict[tuple[str, str], int]:
        """The calls of one request made more than once."""
        return {key: n for key, n in self.calls(request_id).items() if n > 1}


@attrs.define(eq=False)
class Delivery:
    """One forwarded iteration; its ``token`` stays the same across redeliveries and duplicates
    (a gateway's ``X-Call-Id``)."""

    flow: str
    request_id: str
    body: bytes
    headers: Mapping[str, str]
    token: str
    attempts: int = 0


def status_of(error: BaseException) -> int:
    """The HTTP status the flow app answers for ``error`` raised by the engine: 4xx for what
    no retry can change (a refused or duplicate iteration, a bad message), else 5xx."""
    from faasflow.engine import MessageError
    from faasflow.errors import (
        RequestIdInUse,
        RequestNotActive,
        RequestNotFound,
        SignatureError,
    )

    if isinstance(error, SignatureError):
        return 401
    if isinstance(error, MessageError):
        return 400
    if isinstance(error, RequestNotFound):
        return 404
    if isinstance(error, RequestNotActive):
        return 410
    if isinstance(error, RequestIdInUse):
        return 409
    return 503 if isinstance(error, BackendError) else 500


#: What a delivery calls: usually ``engine.forward`` (message, headers). An int or an object
#: with a ``status`` of 500 or more returned from it counts as a failed delivery.
Target = Callable[[bytes, Mapping[str, str]], object]


class RedeliveringQueue(Invoker):
    """An in-process Invoker whose forwarded iterations wait in a queue the test drains.

    ``redeliver=True`` models OpenFaaS Pro's queue (a delivery that raises or answers 5xx goes
    back on the queue), ``False`` CE's queue-worker (it is acked and dropped, see ``dropped``).
    ``duplicate`` is the probability that a delivery is also queued a second time;
    ``reorder=True`` takes a random queued delivery each time instead of the oldest. After
    ``max_attempts`` failed attempts a delivery is given up (see ``abandoned``) so a test that
    never converges ends. Every delivery carries ``X-Call-Id: <token>``.
    """

    in_process = True

    def __init__(
        self,
        functions: CountingFunctions | Mapping[str, Function] | None = None,
        *,
        redeliver: bool = True,
        duplicate: float = 0.0,
        reorder: bool = False,
        max_attempts: int = 50,
        seed: int = 0,
    ) -> None:
        self.functions = (
            functions if isinstance(functions, CountingFunctions)
            else CountingFunctions(functions or {})
        )
        self.redeliver = redeliver
        self.duplicate = duplicate
        self.reorder = reorder
        self.max_attempts = max_attempts
        self.random = random.Random(seed)
        self.pending: collections.deque[Delivery] = collections.deque()
        self.delivered: list[Delivery] = []
        self.failures: list[tuple[Delivery, BaseException | object]] = []
        self.dropped: list[Delivery] = []
        self.refused: list[tuple[Delivery, object]] = []
        """Deliveries answered 4xx (a duplicate of an ended request, a bad message): the
        gateway acks them whatever its edition."""
        self.abandoned: list[Delivery] = []
        self.refuse_forward: Callable[[Delivery], bool] | None = None
        """When set and true for an iteration, ``forward`` raises as a gateway answering 503."""
        self._lock = threading.Lock()

    # -- Invoker --------------------------------------------------------------------------------

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
        return self.functions(function, data, headers or {})

    def request(
        self,
        method: str,
        url: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        return Response(200, b"", {}, url)

    def forward(
        self, flow_name: str, request_id: str, message: bytes, headers: Mapping[str, str]
    ) -> None:
        token = uuid.uuid4().hex
        item = Delivery(flow_name, request_id, message, {**headers, "X-Call-Id": token}, token)
        if self.refuse_forward is not None and self.refuse_forward(item):
            raise FunctionError("503: gateway refused", url="/async-function", status=503)
        with self._lock:
            self.pending.append(item)

    # -- delivery -------------------------------------------------------------------------------

    def start(self, start: Callable[[Mapping[str, str]], Any]) -> Any:
        """Call ``start(headers)`` (e.g. ``lambda h: engine.start(b"x", headers=h)``) as a
        gateway delivers an async start: the same ``X-Call-Id`` on every attempt, again after
        an exception while ``redeliver`` is on; return what the successful attempt returned."""
        token = uuid.uuid4().hex
        for attempt in range(1, self.max_attempts + 1):
            try:
                return start({"X-Call-Id": token})
            except Exception as exc:
                if status_of(exc) < 500 or not self.redeliver or attempt == self.max_attempts:
                    raise
        raise AssertionError("unreachable")

    def _take(self) -> Delivery | None:
        with self._lock:
            if not self.pending:
                return None
            if self.reorder and len(self.pending) > 1:
                self.pending.rotate(-self.random.randrange(len(self.pending)))
            item = self.pending.popleft()
            if self.duplicate and self.random.random() < self.duplicate:
                self.pending.append(attrs.evolve(item))
            return item

    def deliver_one(self, target: Target) -> bool:
        """Deliver one queued iteration; return False when the queue was empty."""
        item = self._take()
        if item is None:
            return False
        item.attempts += 1
        try:
            outcome: object = target(item.body, item.headers)
        except Exception as exc:
            outcome = exc
        if isinstance(outcome, BaseException):
            status: object = status_of(outcome)
        else:
            status = outcome if isinstance(outcome, int) else getattr(outcome, "status", None)
        failed = isinstance(status, int) and status >= 500
        refused = isinstance(status, int) and 400 <= status < 500
        with self._lock:
            self.delivered.append(item)
            if refused:
                self.refused.append((item, outcome))
            if failed:
                self.failures.append((item, outcome))
                if not self.redeliver:
                    self.dropped.append(item)
                elif item.attempts >= self.max_attempts:
                    self.abandoned.append(item)
                else:
                    self.pending.append(item)
        return True

    def drain(self, target: Target, limit: int = 100_000) -> int:
        """Deliver until the queue is empty (including what deliveries queue); return how many
        deliveries were made."""
        count = 0
        while count < limit and self.deliver_one(target):
            count += 1
        return count

    def drain_concurrently(self, target: Target, threads: int = 4, limit: int = 100_000) -> int:
        """Like :meth:`drain` with ``threads`` delivering at once; a thread that finds the queue
        empty waits while others are still delivering (they may queue more)."""
        busy = [0]
        count = [0]
        cond = threading.Condition()

        def work() -> None:
            while True:
                with cond:
                    while not self.pending and busy[0]:
                        cond.wait(0.05)
                    if (not self.pending and not busy[0]) or count[0] >= limit:
                        cond.notify_all()
                        return
                    busy[0] += 1
                    count[0] += 1
                try:
                    self.deliver_one(target)
                finally:
                    with cond:
                        busy[0] -= 1
                        cond.notify_all()

        workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return count[0]
