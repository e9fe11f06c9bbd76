"""The ``request-state`` key: whether a request runs, and the iterations held while paused.

The state and the list of parked iterations live in ONE key changed only by compare-and-swap,
so a pause, a resume and an arriving iteration can never interleave into a lost iteration
(faas-flow kept them in two keys, and its pause did not hold anything back).
"""

from __future__ import annotations

import functools
import json
import uuid

import attrs

from faasflow.errors import CompareFailed, KeyNotFound, RequestNotActive, RequestNotFound
from faasflow.interfaces import DataStore, StateStore

__all__ = ["PAUSED", "RUNNING", "RequestControl", "RequestState"]

KEY = "request-state"
RUNNING = "RUNNING"
PAUSED = "PAUSED"
FINISHED = "FINISHED"
_PARKED = "parked--"


@attrs.frozen
class RequestState:
    state: str
    definition_hash: str
    deadline: float | None = None
    parked: tuple[str, ...] = ()

    def encode(self) -> str:
        return json.dumps(
            {
                "state": self.state,
                "hash": self.definition_hash,
                "deadline": self.deadline,
                "parked": list(self.parked),
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, raw: str) -> RequestState:
        return _decode(raw)


@functools.lru_cache(maxsize=1024)
def _decode(raw: str) -> RequestState:
    # every iteration reads the state, which rarely changes: decode each value once
    doc = json.loads(raw)
    return RequestState(
        doc["state"], doc["hash"], doc.get("deadline"), tuple(doc.get("parked", ()))
    )


@attrs.define
class RequestControl:
    """State transitions of one request (stores scoped to it)."""

    request_id: str
    states: StateStore
    data: DataStore

    def read(self) -> tuple[str, RequestState] | None:
        try:
            raw = self.states.get(KEY)
        except KeyNotFound:
            return None
        return raw, RequestState.decode(raw)

    def begin(self, state: RequestState) -> bool:
        """Mark a new request running; False if the id is already running."""
        return self.states.create(KEY, state.encode())

    def park(self, body: bytes) -> bool:
        """Hold an iteration while the request is paused.

        Returns False when the request is running (the caller runs the iteration) and raises
        RequestNotActive when it has ended.
        """
        parked_key = _PARKED + uuid.uuid4().hex
        stored = False
        while True:
            found = self.read()
            if found is None:
                if stored:
                    self.data.delete(parked_key)
                raise RequestNotActive(self.request_id, FINISHED)
            raw, current = found
            if current.state != PAUSED:
                if stored:
                    self.data.delete(parked_key)
                return False
            if not stored:
                self.data.set(parked_key, body)
                stored = True
            new = attrs.evolve(current, parked=(*current.parked, parked_key))
            try:
                self.states.update(KEY, raw, new.encode())
            except (CompareFailed, KeyNotFound):
                continue
            return True

    def pause(self) -> None:
        while True:
            found = self.read()
            if found is None:
                raise RequestNotFound(self.request_id, "pause")
            raw, current = found
            if current.state != RUNNING:
                raise RequestNotActive(self.request_id, current.state, "pause")
            try:
                self.states.update(KEY, raw, attrs.evolve(current, state=PAUSED).encode())
            except (CompareFailed, KeyNotFound):
                continue
            return

    def resume(self) -> list[bytes]:
        """Set the request running again and return the iterations it held, oldest first."""
        while True:
            found = self.read()
            if found is None:
                raise RequestNotFound(self.request_id, "resume")
            raw, current = found
            if current.state != PAUSED:
                raise RequestNotActive(self.request_id, current.state, "resume")
            try:
                self.states.update(
                    KEY, raw, attrs.evolve(current, state=RUNNING, parked=()).encode()
                )
            except (CompareFailed, KeyNotFound):
                continue
            break
        held = []
        for key in current.parked:
            try:
                held.append(self.data.get(key))
            except KeyNotFound:
                continue
            self.data.delete(key)
        return held
