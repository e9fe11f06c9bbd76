"""The engine: runs a request one iteration (one node) at a time.

:class:`Engine` is the facade. What one iteration does is in ``runner`` (admit, claim, input,
operations), handing on in ``coordination``, endings in ``endings``, control and the sweep in
``control``; see docs/engine.md for the guarantees they give together.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from faasflow.backends import Kind
from faasflow.errors import (
    ConfigurationError,
    RequestNotFound,
)
from faasflow.interfaces import DataStore, Invoker, StateStore, Tracer
from faasflow.results import Result
from faasflow.settings import Settings

from . import control, runner
from .delivery import _fail as fail_after_attempts
from .delivery import deliver, deliver_message, local_delivery
from .ids import (
    ATTEMPT_HEADER,
    CALL_ID_HEADER,
    CALLBACK_HEADER,
    DEAD_LETTER_HEADER,
    REQUEST_ID_HEADER,
    check_request_id,
    header,
    new_request_id,
)
from .iteration import Core, Handed
from .message import Message, MessageError, verify_body_signature
from .records import RECORDS, RecordBook, RequestRecord
from .retrying import RetryingData, RetryingStates
from .starts import StartResult, deadline_of, run_sync, start_dag

__all__ = ["Backends", "Engine", "StartResult"]

log = logging.getLogger("faasflow.engine")


#: Header names as the engine itself writes them (``coordination.send``, ``delivery``): headers
#: with no other names are looked up exactly, without lower-casing every name.
_OWN_HEADERS = frozenset({
    REQUEST_ID_HEADER, CALLBACK_HEADER, CALL_ID_HEADER, ATTEMPT_HEADER, DEAD_LETTER_HEADER,
    "Content-Type",
})


def _lookup(headers: Mapping[str, str]) -> Callable[[str], str | None]:
    """``header(headers, name)`` for the three names ``Engine.forward`` reads: exact when every
    name is one of the engine's own (no other spelling of a name can be present then), else
    through names lower-cased once (two of the three are usually absent, and a miss compares
    every header's name)."""
    if headers.keys() <= _OWN_HEADERS:
        return headers.get
    lowered = {k.lower(): v for k, v in headers.items()}

    def get(name: str) -> str | None:
        value = headers.get(name)
        return value if value is not None else lowered.get(name.lower())

    return get


@attrs.frozen
class Backends:
    """The four backend objects an engine runs on."""

    state_store: StateStore
    data_store: DataStore
    tracer: Tracer
    invoker: Invoker

    @classmethod
    def from_settings(cls, settings: Settings, registry: Any = None) -> Backends:
        """Build the configured backend of each kind through the plugin registry."""
        from faasflow.plugins import Registry

        registry = registry or Registry.shared(settings)
        return cls(
            registry.create(Kind.STATE_STORE, settings),
            registry.create(Kind.DATA_STORE, settings),
            registry.create(Kind.TRACER, settings),
            registry.create(Kind.INVOKER, settings),
        )

    def close(self) -> None:
        for backend in (self.invoker, self.tracer, self.data_store, self.state_store):
            try:
                backend.close()
            except Exception:
                log.exception("closing %s failed", type(backend).__name__)


class Engine:
    """Runs requests of one flow on the configured backends."""

    def __init__(
        self,
        flow: Any,
        settings: Settings,
        backends: Backends,
        *,
        name: str | None = None,
        functions: Mapping[str, Callable[..., object]] | None = None,
    ) -> None:
        self.flow = flow
        self.settings = settings
        self.backends = backends
        self.name: str = name or settings.flow_name or flow.name
        if functions:
            add = getattr(backends.invoker, "add_functions", None)
            if add is None:
                raise ConfigurationError(
                    f"functions= needs an invoker that runs Python callables; "
                    f"{type(backends.invoker).__name__} does not (use FAASFLOW_INVOKER=local)"
                )
            add(functions)
        secret = settings.hmac_secret
        if secret is None and backends.invoker.in_process:
            secret = os.urandom(32)  # iterations never leave this process: a private key
        if secret is None and settings.validate_request:
            raise ConfigurationError(
                f"flow {self.name!r} forwards iterations over the network but has no signing "
                "key: create the OpenFaaS secret faasflow-hmac-secret or set "
                "FAASFLOW_HMAC_SECRET (FAASFLOW_VALIDATE_REQUEST=false turns signing off)"
            )
        self._auth_key = settings.hmac_secret
        self.records = RecordBook(
            RetryingStates(backends.state_store.scoped(self.name, RECORDS), settings.backend_retry),
            RetryingData(backends.data_store.scoped(self.name, RECORDS), settings.backend_retry),
            settings.record_retention,
        )
        # Messages this process sent to an in-process invoker, by body identity: when the very
        # same bytes object comes back it never left the process, so it is not parsed and
        # verified again (a parked copy read back from a store is a new object and is).
        self.core = Core(
            self.name, flow, settings, backends.state_store, backends.data_store,
            backends.tracer, backends.invoker,
            secret if settings.validate_request else None, self.records,
            sent={} if backends.invoker.in_process else None,
        )
        interval = settings.sweep_interval
        #: when :meth:`maybe_sweep` may start the next sweep (``delivery.Sweeps``)
        self.next_sweep = time.monotonic() + interval if interval > 0 else math.inf
        self.core.local = self._local_hand_on(backends.invoker)
        self._sync_data: DataStore | None = None
        self._holder = os.urandom(8).hex()
        self._sweep_lock = threading.Lock()
        backends.invoker.bind(self._deliver)

    def _local_hand_on(
        self, invoker: Invoker
    ) -> Callable[[str, Message, Handed | None], None] | None:
        """``Core.local`` for an invoker that runs iterations on a pool of this process."""
        if not invoker.in_process:
            return None
        hand_on = getattr(invoker, "hand_on", None)
        if hand_on is not None:
            made: Callable[[str, Message, Handed | None], None] = hand_on(
                local_delivery(self.core, self), self.name
            )
            return made
        forward_local = getattr(invoker, "forward_local", None)
        if forward_local is None:
            return None
        run, name = self._deliver_local, self.name

        def local(rid: str, msg: Message, handed: Handed | None) -> None:
            forward_local(run, name, rid, (msg, handed))

        return local

    @classmethod
    def from_settings(
        cls,
        flow: Any,
        settings: Settings | None = None,
        *,
        name: str | None = None,
        functions: Mapping[str, Callable[..., object]] | None = None,
        registry: Any = None,
    ) -> Engine:
        """An engine on the backends ``settings`` (default: the environment) selects."""
        settings = settings or Settings.from_env()
        return cls(
            flow,
            settings,
            Backends.from_settings(settings, registry),
            name=name,
            functions=functions,
        )

    def close(self) -> None:
        """Stop in-process workers and release backend connections."""
        self.backends.close()

    # ------------------------------------------------------------------ new requests

    def start(
        self,
        data: bytes = b"",
        *,
        request_id: str | None = None,
        query: str = "",
        callback_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> Result:
        """Start a request. Sync flows run to the end here; DAG flows run their first node
        here and continue through the invoker.

        A start is idempotent: delivered again with the same ``idempotency_key`` (default:
        the OpenFaaS ``X-Call-Id`` header) or the same ``request_id`` and the same body, it
        is the same request and answers as the first delivery did; the same ``request_id``
        with another body raises RequestIdInUse."""
        headers = dict(headers or {})
        if self.settings.authenticate_request:
            verify_body_signature(self._auth_key, data, header(headers, "X-Hub-Signature-256"))
        rid = check_request_id(request_id) if request_id else new_request_id()
        query = query.lstrip("?")
        graph = self.flow.graph(query, rid)
        deadline = deadline_of(timeout if timeout is not None else self.settings.request_timeout)
        if graph.is_sync:
            if self._sync_data is None:
                from faasflow.plugins import Registry

                registry = Registry.shared(self.settings)
                self._sync_data = registry.create(Kind.DATA_STORE, self.settings, "memory")
            store = self._sync_data.scoped(self.name, rid)
            return run_sync(
                self.core, store, graph, data, rid, query, callback_url, headers, deadline
            )
        return start_dag(
            self.core, graph, data, rid, client_id=request_id is not None,
            call_id=idempotency_key or header(headers, CALL_ID_HEADER), query=query,
            callback_url=callback_url, headers=headers, deadline=deadline,
        )

    # ------------------------------------------------------------------ iterations

    def forward(self, message: bytes, headers: Mapping[str, str] | None = None) -> str:
        """Run one forwarded iteration; the message must be signed with this flow's key.

        Returns ``ran``, ``parked`` or ``duplicate`` (another delivery of the same work did or
        is doing it), or ``failed`` when the gateway's queue gave up on the iteration
        (``X-Faas-Flow-Dead-Letter``: its request fails with that cause). The delivery token
        is the gateway's ``X-Call-Id`` (the same across
        redeliveries of one queued message), else the message's own id."""
        headers = headers or {}
        sent = self.core.sent
        known = None if sent is None else sent.pop(id(message), None)
        handed = None
        if known is not None and known[0] is message:
            msg, handed = known[1], known[2]
        else:
            msg = Message.decode(message, self.core.key)
        if msg.flow != self.name:
            raise MessageError(
                f"iteration of flow {msg.flow!r} was delivered to flow {self.name!r}"
            )
        self.maybe_sweep()
        get = _lookup(headers)
        raw_attempt = get(ATTEMPT_HEADER)
        attempt = int(raw_attempt) if raw_attempt and raw_attempt.isdigit() else 1
        given_up = get(DEAD_LETTER_HEADER)
        if given_up:  # the queue will not deliver this iteration again: fail its request
            if handed is not None:  # nor will its predecessor's hand-over be made with it
                self.core.pending.pop((msg.request_id, handed.key), None)
            fail_after_attempts(self.core, message, max(1, attempt - 1), RuntimeError(given_up))
            return "failed"
        return runner.iterate(
            self.core, msg, message, first=False,
            token=get(CALL_ID_HEADER) or msg.mid, attempt=max(1, attempt),
            handed=handed,
        )

    def _deliver(
        self, flow: str, request_id: str, message: bytes, headers: Mapping[str, str]
    ) -> None:
        """Run an in-process iteration, retried; see ``delivery``."""
        deliver(self.core, self.forward, request_id, message, headers)

    def _deliver_local(
        self, flow: str, request_id: str, item: tuple[Message, Handed | None], _: None
    ) -> None:
        """Run an iteration handed on in this process as a message (``Core.local``)."""
        deliver_message(self.core, self.maybe_sweep, item[0], item[1])

    # ------------------------------------------------------------------ waiting

    def wait(self, request_id: str, timeout: float | None = None) -> RequestRecord | None:
        """Block until the request ends and return its record (None if still running).

        An end in this process wakes the waiter at once; an end in another process is seen by
        polling the records with a growing interval.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        waiters = self.core.waiters
        event = waiters.get(request_id) or threading.Event()
        delay = 0.002
        while True:
            found = self.records.entry(request_id)  # status only: cheap enough to poll
            if found is None:
                raise RequestNotFound(request_id, "wait for")
            if found[1]["status"] != "running":
                return self.record(request_id)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            event.wait(delay if left is None else min(delay, left))
            delay = min(delay * 1.5, 0.1)

    # ------------------------------------------------------------------ control

    def pause(self, request_id: str) -> None:
        """Hold the request's next iterations until :meth:`resume`."""
        control.pause(self.core, request_id)

    def resume(self, request_id: str) -> None:
        """Run the iterations held while the request was paused (each exactly once)."""
        control.resume(self.core, request_id)

    def stop(self, request_id: str) -> None:
        """End the request now: no hooks, no callback; its state is deleted."""
        control.stop(self.core, request_id)

    def state(self, request_id: str) -> str:
        """``RUNNING``, ``PAUSED`` or ``FINISHED`` (also for unknown ids, as faas-flow): the text
        of faas-flow's state route (``GET /flow/<id>/state``); everything else answers the
        lower-case :class:`faasflow.Status` (``start``, ``record``, ``faasflow.run``)."""
        return control.state(self.core, request_id)

    def sweep(self, now: float | None = None) -> int:
        """Forget records past their retention, fail requests past their deadline, finish
        half-ended requests and forward held iterations a crashed resume left.

        Returns how many requests it acted on."""
        return control.sweep(self.core, now)

    def maybe_sweep(self) -> bool:
        """Sweep in the background if ``FAASFLOW_SWEEP_INTERVAL`` passed since the last one
        and no other replica holds the flow's sweep lease; True if a sweep was started."""
        interval = self.settings.sweep_interval
        if interval <= 0 or time.monotonic() < self.next_sweep:
            return False
        with self._sweep_lock:
            if time.monotonic() < self.next_sweep:
                return False
            self.next_sweep = time.monotonic() + interval
        threading.Thread(target=self._sweep_leased, args=(interval,), daemon=True).start()
        return True

    def _sweep_leased(self, interval: float) -> None:
        try:
            if self.records.lease("sweep", self._holder, interval, time.time()):
                self.sweep()
        except Exception as exc:
            log.warning("sweeping flow %s failed: %s", self.name, exc)

    # ------------------------------------------------------------------ records

    def record(self, request_id: str) -> RequestRecord | None:
        """The request's record: live progress while it runs, the outcome once it ended."""
        return control.record(self.core, request_id)

    def requests(self) -> list[RequestRecord]:
        """Requests of this flow still running or kept after they ended, newest first."""
        out = [
            RequestRecord(rid, self.name, e["status"], float(e["created"]), e.get("ended"))
            for rid, e in self.records.entries().items()
        ]
        return sorted(out, key=lambda r: r.created, reverse=True)

    def export(self) -> dict[str, Any]:
        """The flow's definition as faas-flow's export-dag JSON."""
        result: dict[str, Any] = self.flow.export()
        return result

