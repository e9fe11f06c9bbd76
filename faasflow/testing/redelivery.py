"""The delivery side of fault injection: an in-process Invoker whose forwarded iterations wait
in a queue the test drains -- redelivering, dropping, duplicating or reordering them as a
gateway's queue would -- and functions that count their own calls. Import them from
:mod:`faasflow.testing.faults` (or :mod:`faasflow.testing`).
"""

from __future__ import annotations

import collections
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from faasflow.errors import BackendError, FunctionError
from faasflow.interfaces import Invoker, Response

if TYPE_CHECKING:
    from faasflow.testing.faults import Faults

__all__ = ["CountingFunctions", "Delivery", "RedeliveringQueue", "status_of"]


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
    """One forwarded iteration; its ``token`` (a gateway's ``X-Call-Id``) stays the same across
    its redeliveries, while a duplicate copy arrives as a call of its own."""

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
    never converges ends. Every delivery carries ``X-Call-Id: <token>`` and, with
    ``numbered=True`` (the local gateway's and NATS's queues; OpenFaaS Pro's sends none),
    ``X-Faas-Flow-Attempt`` (1 for a first delivery and its duplicates, 2 for the redelivery...).
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
        numbered: bool = True,
    ) -> None:
        self.numbered = numbered
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
                # a second copy of a message reaches a gateway as a new call (a re-done
                # hand-on forwards it again): a token of its own; a redelivery keeps the token
                copy = attrs.evolve(item, token=f"{item.token}+{len(self.delivered)}",
                                    attempts=0)
                copy = attrs.evolve(copy, headers={**item.headers, "X-Call-Id": copy.token})
                self.pending.append(copy)
            return item

    def deliver_one(self, target: Target) -> bool:
        """Deliver one queued iteration; return False when the queue was empty."""
        item = self._take()
        if item is None:
            return False
        item.attempts += 1
        headers = item.headers
        if self.numbered:
            headers = {**headers, "X-Faas-Flow-Attempt": str(item.attempts)}
        try:
            outcome: object = target(item.body, headers)
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
