"""What every iteration of one request sets up alike, made once per request in this process."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import attrs

from faasflow.context import Query
from faasflow.graph import Graph
from faasflow.interfaces import Tracer

from .state import RequestControl

if TYPE_CHECKING:  # the core holds its set-ups: a type only, no import at run time
    from .iteration import Core

__all__ = ["SETUPS", "Setup", "Setups"]


#: Requests whose set-up a :class:`Setups` keeps (the oldest goes first past it).
SETUPS = 1024


@attrs.frozen
class Setup:
    """What every iteration of one request in this process sets up alike."""

    query: str
    """The message's raw query, which the graph and ``parsed`` were made from."""
    graph: Graph
    control: RequestControl
    tracer: Tracer | None
    """The tracer's handle on the request when it keeps nothing of an iteration (it scoped
    to itself); None: each iteration scopes its own."""
    parsed: Query


class Setups:
    """:class:`Setup` per request id, made by the first iteration of a request that this
    process runs and taken by the others (``runner.iterate``), instead of a graph look-up, a
    store handle, a tracer handle and a parsed query each.

    Nothing in a set-up outlives its request's meaning: the graph is the one
    ``Flow.graph(query, id)`` answers (a message with another query makes another set-up),
    the store handles hold nothing but the request's namespace (a core whose handles are
    made per iteration keeps no set-up), and the query is read-only. A request id used again
    after its request's end therefore finds a set-up as good as a new one; :meth:`forget`
    (at the end) and the bound (:data:`SETUPS`) only keep the memory small."""

    def __init__(self, core: Core, size: int = SETUPS) -> None:
        self._core = core
        self._size = size
        self._kept: dict[str, Setup] = {}
        self._lock = threading.Lock()

    def of(self, rid: str, query: str) -> Setup:
        found = self._kept.get(rid)
        if found is not None and found.query == query:
            return found
        core = self._core
        control = core.control(rid)
        tracer = core.tracer.scoped(core.name, rid)
        made = Setup(
            query, core.flow.graph(query, rid), control,
            tracer if tracer is core.tracer else None, Query(query),
        )
        if control is core.control(rid):  # the core shares its handles: so may the set-up
            with self._lock:
                kept = self._kept
                while len(kept) >= self._size and rid not in kept:
                    del kept[next(iter(kept))]  # the oldest request's
                kept[rid] = made
        return made

    def forget(self, rid: str) -> None:
        """The request ended: its set-up goes (a later iteration of it makes another)."""
        with self._lock:  # every change under the lock: the bound's eviction iterates
            self._kept.pop(rid, None)
