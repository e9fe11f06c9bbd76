"""What every part of the engine shares: the engine's core (flow, settings, backends, key),
what one iteration carries, and calling user code."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs

from faasflow.context import RequestView
from faasflow.errors import FaasflowError, FlowFailure
from faasflow.graph import Graph, GraphNode
from faasflow.interfaces import DataStore, Invoker, StateStore, Tracer
from faasflow.operations import Retry
from faasflow.operations import as_bytes as _as_bytes
from faasflow.settings import Settings

from .ids import unique
from .message import Message
from .records import RecordBook
from .retrying import RetryingData, RetryingStates
from .setups import Setups
from .state import RequestControl

__all__ = [
    "Core", "Duplicate", "Folded", "Handed", "Iteration", "Stopped", "Waiters", "as_bytes",
    "describe",
]

#: Requests whose shared store handles an engine keeps (see ``Core.control``).
_HANDLES = 1024
#: Running requests whose last seen state an engine keeps (see ``Core.admitted``).
_ADMITTED = 4096


def as_bytes(value: object, what: str) -> bytes:
    """A user function's result as bytes; ``None`` counts as empty output."""
    return b"" if value is None else _as_bytes(value, what)


class Stopped(Exception):
    """The request ended while this iteration ran: end quietly."""


class Duplicate(Exception):
    """Another delivery of this iteration has done (or is doing) its work."""


class Waiters:
    """Threads of this process waiting for requests to end."""

    def __init__(self) -> None:
        self._events: OrderedDict[str, threading.Event] = OrderedDict()
        self._lock = threading.Lock()

    def watch(self, rid: str) -> threading.Event:
        with self._lock:
            event = self._events.get(rid)
            if event is None:
                event = self._events[rid] = threading.Event()
                while len(self._events) > 4096:
                    self._events.popitem(last=False)
            return event

    def get(self, rid: str) -> threading.Event | None:
        with self._lock:
            return self._events.get(rid)

    def notify(self, rid: str) -> None:
        event = self.get(rid)
        if event is not None:
            event.set()


@attrs.define
class Core:
    """One flow's engine state that every module works with."""

    name: str
    flow: Any
    settings: Settings
    state_store: StateStore
    data_store: DataStore
    tracer: Tracer
    invoker: Invoker
    key: bytes | None
    records: RecordBook
    waiters: Waiters = attrs.field(factory=Waiters)
    default_retry: Retry | None = attrs.field(init=False)
    """How a function call without ``retry=`` is retried (settings do not change: made once)."""

    sent: dict[int, tuple[bytes, Message, Handed | None]] | None = None
    """Messages sent to an in-process invoker, by body identity (see Engine.forward), with the
    hand-over of the node that sent each."""
    local: Callable[[str, Message, Handed | None], None] | None = None
    """Hands a message on in this process as it is, never encoded (``coordination.send``):
    with an invoker that runs forwarded iterations on its own pool (``forward_local``)."""
    admitted: dict[str, str] = attrs.field(factory=dict, init=False)
    """The last request state this process read or wrote per running request (a cache the
    claim transaction verifies: see ``runner``)."""
    pending: dict[tuple[str, str], str] = attrs.field(factory=dict, init=False)
    """Hand-overs of this process's nodes that wait for their successor's claim, by (request,
    marker key): the node's done marker. A copy of such a node's iteration finds its work in
    hand (a duplicate), as it would find the node handed."""
    setups: Setups = attrs.field(init=False)
    """What every iteration of a request sets up alike, per running request (``runner``)."""
    _handles: dict[str, RequestControl] = attrs.field(factory=dict, init=False)
    _shared: bool = attrs.field(default=False, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        retries = self.settings.call_retries
        self.default_retry = Retry.transient(retries) if retries > 1 else None
        self.setups = Setups(self)
        # Stores whose scoped handle holds nothing but its namespace say so; their handles
        # (and the retrying wrappers, which hold nothing either) are made once per request
        # and shared by its iterations instead of made again for every one.
        self._shared = all(
            getattr(store, "handles_shareable", False)
            for store in (self.state_store, self.data_store)
        )

    def admit(self, rid: str, raw: str) -> None:
        """Remember ``raw``, a running request's state this process read or wrote."""
        admitted = self.admitted
        if rid not in admitted:
            while len(admitted) >= _ADMITTED:
                admitted.pop(next(iter(admitted)), None)
        admitted[rid] = raw

    def stores(self, rid: str) -> tuple[StateStore, DataStore]:
        """Handles on one request's namespace whose calls retry backend blips."""
        control = self.control(rid)
        return control.states, control.data

    def control(self, rid: str) -> RequestControl:
        """The request's state transitions, on handles of :meth:`stores`."""
        found = self._handles.get(rid)
        if found is not None:
            return found
        budget = self.settings.backend_retry
        made = RequestControl(
            rid,
            RetryingStates(self.state_store.scoped(self.name, rid), budget),
            RetryingData(self.data_store.scoped(self.name, rid), budget),
        )
        if self._shared:
            with self._lock:
                while len(self._handles) >= _HANDLES:
                    del self._handles[next(iter(self._handles))]  # the oldest request's
                self._handles[rid] = made
        return made


@attrs.frozen
class Handed:
    """A done node's move to ``handed``, left to the one iteration it handed on to in this
    process: that iteration writes it in the transaction of its own claim (one store call for
    both), or on its own when it gets no claim (see ``markers.claim``)."""

    key: str
    """The node's marker key."""
    done: str
    """The marker as the node left it (``done``, or its claim when ``folded``): the move is a
    compare-and-swap from it."""
    handed: str
    data_keys: tuple[str, ...] = ()
    """DataStore keys to delete once handed (a stored output, consumed inputs)."""
    folded: bool = False
    """The node's done marker was never written: the move goes from its claim straight to
    handed (a chain's step handed on as a message, ``handing.chains``). Not best effort: until
    it is written the node reads as running, so a delivery that did not write it passes it on
    to its next attempt or writes it before it ends (``delivery``)."""


@attrs.define
class Folded:
    """A node's done marker left unwritten to its arrival at the one fan-in or branch join it
    feeds: that arrival's step moves the marker from the claim to handed, or to done when it
    completes the set (see ``arrivals.arrive_folded``); any other step writes it first.

    Never changed once made; not frozen only because every branch ending at a join makes one
    and a frozen class's constructor sets each field through ``object.__setattr__``."""

    key: str
    """The node's marker key."""
    claim: str
    """The marker as this delivery's claim left it: the move is a compare-and-swap from it."""
    done: str
    handed: str
    data_keys: tuple[str, ...] = ()
    """DataStore keys to delete once handed (a stored output, consumed inputs)."""


@attrs.define
class Iteration:
    msg: Message
    graph: Graph
    states: StateStore
    data: DataStore
    tracer: Tracer
    control: RequestControl
    view: RequestView
    token: str
    """The delivery this iteration is: the same across redeliveries of one message."""
    attempt: int = 1
    nonce: str = attrs.field(factory=unique)
    """This delivery, in this process: tells a claim it wrote itself from a concurrent copy."""
    consumed: list[str] = attrs.field(factory=list)
    ended: bool = False
    """The request ended in this iteration (the tracer has been told)."""
    node_input: tuple[str, bytes] | None = None
    """(execution id, input) of the node running, for the capture of a failure."""
    state: str | None = None
    """The request state admitted without a read (this process's last sight of it): the claim
    checks it is still the state, in one transaction with the claim itself."""
    handed: Handed | None = None
    """The predecessor's hand-over this iteration writes with its claim."""
    offer: Handed | None = None
    """This node's hand-over, offered to the last step of its hand-on (see ``runner``)."""
    taken: bool = False
    """The offer was taken: the hand-over is made, or goes with the message forwarded."""
    fold: Folded | None = None
    """This node's done marker, left to its arrival (see ``runner``)."""


def user(fn: Callable[..., object], arg: object, what: str) -> bytes:
    """Call user code (aggregator, forwarder, hook-free callables) as a flow step."""
    try:
        return as_bytes(fn(arg), what)
    except FaasflowError as exc:
        raise FlowFailure(f"{what} failed: {exc}") from exc
    except Exception as exc:
        raise FlowFailure(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def node_attributes(msg: Message, node: GraphNode, attempt: int = 1) -> dict[str, object]:
    return {
        "faasflow.request_id": msg.request_id,
        "faasflow.node": node.id,
        "faasflow.node.unique_id": node.unique_id,
        "faasflow.branch": "/".join(b[1] for b in msg.branches),
        "faasflow.attempt": attempt,
    }


def describe(exc: BaseException) -> str:
    if isinstance(exc, FaasflowError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
