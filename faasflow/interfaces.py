"""The four backend contracts: StateStore, DataStore, Tracer and Invoker.

These abstract classes are the real contract a backend plugin implements; their docstrings say
what the engine relies on. Every backend is checked against them by the conformance suite in
:mod:`faasflow.testing`.

A backend object is created once per process by its plugin's factory and may hold connections.
The engine never mutates that shared object per request: it asks for a per-request handle with
:meth:`StateStore.scoped` (a shallow copy that shares the connections), so two requests served
by the same process can never see each other's namespace. faas-flow configured one shared store
object per request and raced; this is the fix.
"""

from __future__ import annotations

import copy
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar, TypeVar

import attrs

from faasflow.errors import CompareFailed, KeyNotFound

__all__ = [
    "DataStore",
    "Decide",
    "Deliver",
    "Invoker",
    "Options",
    "Response",
    "StateStore",
    "Tracer",
]

#: Backend options: ``FAASFLOW_<BACKEND>_<OPTION>`` variables (and the ecosystem's own, such as
#: ``CONSUL_HTTP_ADDR``), keyed by lower-case option name.
Options = Mapping[str, str]

#: ``decide(values) -> writes``: see :meth:`StateStore.locked_transaction`.
Decide = Callable[[Mapping[str, str | None]], Mapping[str, str | None] | None]

_Scoped = TypeVar("_Scoped", bound="_Namespaced")
_PLAIN: dict[type, bool] = {}  # classes whose instances copy by their __dict__ alone


class _Namespaced:
    """Shared by the stores and the tracer: one request namespace per handle."""

    flow_name: str = ""
    request_id: str = ""
    _namespace: str = "faasflow///"

    handles_shareable: ClassVar[bool] = False
    """True for a store whose :meth:`scoped` handle holds nothing but its namespace (its
    connections shared and thread-safe): the engine then makes one handle per request and
    shares it between that request's iterations, instead of one per iteration."""

    def configure(self, flow_name: str, request_id: str) -> None:
        """Point this handle at the namespace of one request of one flow."""
        self.flow_name = flow_name
        self.request_id = request_id
        self._namespace = f"faasflow/{flow_name}/{request_id}/"

    def scoped(self: _Scoped, flow_name: str, request_id: str) -> _Scoped:
        """A handle for one request that shares this backend's connections.

        The default makes a shallow copy and calls :meth:`configure` on it; a backend whose
        per-request state is more than two strings overrides this.
        """
        cls = type(self)
        plain = _PLAIN.get(cls)
        if plain is None:
            plain = _PLAIN[cls] = not any(vars(k).get("__slots__") for k in cls.__mro__[:-1])
        if plain:
            # copy.copy through the reduce protocol costs ~10 us; this runs per iteration
            handle = object.__new__(cls)
            handle.__dict__.update(self.__dict__)
        else:
            handle = copy.copy(self)
        handle.configure(flow_name, request_id)
        return handle

    @property
    def namespace(self) -> str:
        """``faasflow/<flow>/<request>/``: the key prefix every store uses for a request."""
        return self._namespace

    def close(self) -> None:
        """Release connections held by the backend (called once per process, on shutdown)."""


class StateStore(_Namespaced, ABC):
    """Small, strongly consistent values that coordinate a request: its state, fan-in counters,
    branch bookkeeping and completion markers.

    Keys are relative to the configured request namespace; values are ``str`` (JSON or decimal
    integers). Every operation is atomic on its own and visible at once to every other process
    using the same backend (read-your-writes across processes): fan-in correctness depends on it.

    What the engine needs of each step (docs/engine.md): ``create`` to claim a node instance,
    a request id or a start's call id (exactly one racer wins); ``update`` (compare-and-swap)
    to move a node's marker forward, to end a request with its tombstone and to add to a
    fan-in or branch set; ``get``, ``scan`` (node runs) and ``cleanup``. Any call may fail with
    :class:`~faasflow.errors.BackendError`, also after it was applied: the engine retries and
    recognises its own writes. :meth:`transaction`, where ``atomic_transactions`` says it is
    atomic, records a set member and the set's counter in one step (constant work per member);
    without it the engine keeps each set as one compare-and-swapped list.
    """

    #: True when :meth:`transaction` is atomic across keys (etcd txn, sqlite transaction,
    #: Consul txn, memory lock). The engine is correct without it and uses it, where present,
    #: to save round trips and close windows between single-key steps.
    atomic_transactions: ClassVar[bool] = False
    #: True when :meth:`locked_transaction` is implemented: the store can read keys and write
    #: what the engine decides from them as one step that no other writer comes between (a
    #: lock, ``BEGIN IMMEDIATE``). The engine then adds a fan-in member without reading the
    #: set's counter first, and never loses a race for it; without, it compare-and-swaps.
    locked_transactions: ClassVar[bool] = False
    #: True when a :meth:`scan_page` costs in proportion to the keys between ``start_after``
    #: and its end whatever the limit (etcd 3.4 walks its key index that far). The request
    #: index then reads in time windows with ``end_before``, so a page costs the same however
    #: many requests are kept.
    pages_walk_the_range: ClassVar[bool] = False

    def init(self) -> None:
        """Prepare the namespace of a new request (called once, on its first iteration)."""

    def transaction(
        self,
        compare: Mapping[str, str | None],
        put: Mapping[str, str] = {},
        delete: Iterable[str] = (),
    ) -> bool:
        """Atomically: if every key in ``compare`` has the given value (``None`` = absent),
        apply all puts and deletes and return True; otherwise change nothing and return False.

        The default raises :class:`NotImplementedError`; backends with
        ``atomic_transactions = True`` implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} has no atomic multi-key transaction")

    def locked_transaction(self, keys: Iterable[str], decide: Decide) -> None:
        """Atomically: read ``keys`` (an absent key reads ``None``), call ``decide`` with them
        and apply the writes it returns (a value of ``None`` deletes the key; ``None`` or ``{}``
        writes nothing); no other write to those keys, from any thread or process, comes
        between the read and the writes.

        ``decide`` must be quick and must not call the store (it may run under the store's
        lock). When it raises, nothing is written and the exception propagates. A backend
        failure may be raised after the writes were applied; the engine calls again, so
        ``decide`` may run more than once and must recognise its own earlier writes.

        The default raises :class:`NotImplementedError`; backends with
        ``locked_transactions = True`` implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} has no locked transaction")

    @abstractmethod
    def set(self, key: str, value: str) -> None:
        """Write ``value`` under ``key``, creating or overwriting it."""

    @abstractmethod
    def get(self, key: str) -> str:
        """Return the value of ``key``; raise :class:`~faasflow.errors.KeyNotFound` if absent."""

    @abstractmethod
    def update(self, key: str, old_value: str, new_value: str) -> None:
        """Atomically replace ``old_value`` by ``new_value`` (compare-and-swap).

        Raises :class:`~faasflow.errors.KeyNotFound` when the key is absent and
        :class:`~faasflow.errors.CompareFailed` when its value is not ``old_value``; in both
        cases nothing is written.
        """

    @abstractmethod
    def create(self, key: str, value: str) -> bool:
        """Atomically write ``key`` only if it does not exist; return whether it was written.

        When several writers race, exactly one gets ``True``.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""

    @abstractmethod
    def scan(self, prefix: str = "") -> dict[str, str]:
        """Every key of this request's namespace that starts with ``prefix``, with its value,
        read in one consistent step where the backend allows it."""

    def scan_page(
        self, prefix: str, start_after: str = "", limit: int = 100, end_before: str | None = None
    ) -> list[tuple[str, str]]:
        """Up to ``limit`` keys of this namespace that start with ``prefix``, sort after
        ``start_after`` and (when given) before ``end_before`` (code-point order, as UTF-8
        bytes compare), in that order, with their values.

        The default sorts a whole :meth:`scan`; a backend with ordered ranged reads (sqlite,
        etcd) overrides it so a page costs the same however many keys the prefix holds.
        """
        found = self.scan(prefix)
        keys = sorted(
            k for k in found if k > start_after and (end_before is None or k < end_before)
        )[: max(limit, 0)]
        return [(k, found[k]) for k in keys]

    @abstractmethod
    def cleanup(self) -> None:
        """Delete every key of this request's namespace and nothing else."""

    def increment(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` to the decimal counter at ``key`` (absent counts as 0) and
        return the new value.

        The default is a create-if-absent plus compare-and-swap loop with jittered backoff, which
        is correct on any backend; a backend with a native atomic increment overrides it.
        """
        delay = 0.0005
        while True:
            try:
                old = self.get(key)
            except KeyNotFound:
                if self.create(key, str(by)):
                    return by
                continue
            new = int(old) + by
            try:
                self.update(key, old, str(new))
            except (CompareFailed, KeyNotFound):
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 0.05)
                continue
            return new


class DataStore(_Namespaced, ABC):
    """Bytes that travel between nodes when they are too large to ride inside an iteration
    message, fan-in inputs, branch results and user context values.

    Keys are relative to the configured request namespace. Values are arbitrary bytes; a ``set``
    is visible to every process as soon as it returns.
    """

    def init(self) -> None:
        """Prepare the namespace of a new request (called once, on its first iteration)."""

    @abstractmethod
    def set(self, key: str, value: bytes) -> None:
        """Write ``value`` under ``key``, creating or overwriting it."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the bytes at ``key``; raise :class:`~faasflow.errors.KeyNotFound` if absent."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""

    @abstractmethod
    def cleanup(self) -> None:
        """Delete every key of this request's namespace and nothing else."""


class Tracer(_Namespaced):
    """Receives the events of a request's execution; every method is optional.

    The engine takes one :meth:`scoped` handle per iteration (one node run in one thread), so a
    handle may keep the spans it opened in plain attributes. A tracer must never raise into the
    flow and must not block it: export failures are swallowed (and counted) by the tracer.

    ``carrier`` arguments are the headers of the incoming call (W3C ``traceparent``, the
    tracer's own format, ...) and :meth:`inject` writes the current context into outgoing ones.
    """

    silent: ClassVar[bool] = False
    """True for a tracer that ignores every event (``none``): the engine then neither builds
    the events' attributes nor makes the calls, nine per chain step."""

    def request_start(self, carrier: Mapping[str, str]) -> None:
        """A new request begins (first iteration)."""

    def request_continue(self, carrier: Mapping[str, str]) -> None:
        """A later iteration of the request begins; ``carrier`` came with the forwarded message."""

    def request_end(self, attributes: Mapping[str, object]) -> None:
        """The request finished successfully, or this iteration handed work on."""

    def request_failure(self, error: BaseException) -> None:
        """The request failed."""

    def node_start(self, node: str, attributes: Mapping[str, object]) -> None:
        """A node begins; ``node`` is its execution id, attributes hold request, node, branch
        key and attempt."""

    def node_end(self, node: str, attributes: Mapping[str, object]) -> None:
        """A node finished."""

    def node_failure(self, node: str, error: BaseException) -> None:
        """A node failed."""

    def operation_start(self, operation: str, node: str, attributes: Mapping[str, object]) -> None:
        """An operation (function call, modifier, HTTP request) begins."""

    def operation_end(self, operation: str, node: str, attributes: Mapping[str, object]) -> None:
        """An operation finished; attributes may carry the HTTP status and retries."""

    def operation_failure(self, operation: str, node: str, error: BaseException) -> None:
        """An operation failed (after its retries)."""

    def inject(self, carrier: dict[str, str]) -> None:
        """Write the current trace context into outgoing headers."""

    def flush(self) -> None:
        """Hand finished spans to the exporter; safe to call any number of times."""


@attrs.frozen
class Response:
    """What a function or HTTP endpoint answered."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    url: str = ""

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300


#: ``deliver(flow_name, request_id, message, headers)``: run one iteration in this process.
Deliver = Callable[[str, str, bytes, Mapping[str, str]], None]


class Invoker(ABC):
    """Calls functions and delivers the next iterations of a request.

    ``call`` and ``request`` raise :class:`~faasflow.errors.FunctionError` when the endpoint
    cannot be reached or does not answer in time (``timeout`` attribute set); a non-2xx answer
    is returned, not raised: status handling, retries and failure handlers belong to the
    operation. ``forward`` must not lose an accepted iteration: it returns only once the
    iteration is queued (on OpenFaaS: the gateway answered 202). It may deliver an iteration
    more than once (the engine drops the copies); a transient failure is a
    :class:`~faasflow.errors.BackendError`, which the engine retries.
    """

    #: True when ``forward`` runs iterations inside this process (through :meth:`bind`); the
    #: engine then may sign iterations with a key generated for this process alone.
    in_process: bool = False

    @abstractmethod
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
        """Call the function named ``function`` with ``data`` as its body."""

    @abstractmethod
    def request(
        self,
        method: str,
        url: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Call any HTTP URL (used by ``node.request(url)`` and completion callbacks)."""

    @abstractmethod
    def forward(
        self, flow_name: str, request_id: str, message: bytes, headers: Mapping[str, str]
    ) -> None:
        """Deliver a signed iteration message of ``request_id`` asynchronously."""

    def bind(self, deliver: Deliver) -> None:
        """Give an in-process invoker the engine entry point that runs a forwarded iteration.

        Invokers that forward over the network ignore it.
        """

    def close(self) -> None:
        """Stop workers and release connections."""
