"""The ``request-state`` key: the one authority on whether a request runs, is paused or ended.

The state, the iterations held while paused and the outcome live in ONE key changed only by
compare-and-swap. Ending a request (success, failure, stop, deadline) is one CAS of this key to
a terminal tombstone: whoever wins it ends the request, and everything after it (record,
cleanup) can be redone by anyone who finds the tombstone. A pause, a resume and an arriving
iteration can never interleave into a lost iteration: a parked iteration stays listed here
until its forward was accepted.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import time
import uuid

import attrs

from faasflow.errors import (
    BackendError,
    CompareFailed,
    KeyNotFound,
    RequestNotActive,
    RequestNotFound,
)
from faasflow.interfaces import DataStore, StateStore

__all__ = ["FINISHED", "PAUSED", "RUNNING", "RequestControl", "RequestState"]

KEY = "request-state"
RUNNING = "RUNNING"
PAUSED = "PAUSED"
FINISHED = "FINISHED"
_PARKED = "parked--"
#: Outputs up to this size ride inside the tombstone; larger ones go to the DataStore.
INLINE_OUTPUT = 16 * 1024
OUTPUT_KEY = "request-output"


@attrs.frozen
class RequestState:
    state: str
    definition_hash: str
    deadline: float | None = None
    parked: tuple[str, ...] = ()
    status: str | None = None
    """Set on the tombstone: ``success``, ``failure`` or ``stopped``."""
    ended: float | None = None
    error: str | None = None
    error_node: str | None = None
    output: str | None = None
    """Base64 output of a success (``None`` when it is under :data:`OUTPUT_KEY`)."""
    nonce: str = ""
    """Written by the ender: tells it that a retried CAS was its own."""
    by: str = ""
    """The delivery token of the iteration that ended the request: a redelivery of it (the
    ender failed after the decision) finishes the record and cleanup at once."""
    failure: str = ""
    """JSON of a failure's details (function status and answer, user traceback; ``failures``)."""

    @property
    def terminal(self) -> bool:
        return self.state == FINISHED

    def encode(self) -> str:
        doc: dict[str, object] = {
            "state": self.state,
            "hash": self.definition_hash,
            "deadline": self.deadline,
            "parked": list(self.parked),
        }
        if self.terminal:
            doc.update(
                status=self.status, ended=self.ended, error=self.error, node=self.error_node,
                output=self.output, nonce=self.nonce, by=self.by,
            )
            if self.failure:
                doc["failure"] = self.failure
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str) -> RequestState:
        return _decode(raw)


@functools.lru_cache(maxsize=1024)
def _decode(raw: str) -> RequestState:
    # every iteration reads the state, which rarely changes: decode each value once
    doc = json.loads(raw)
    return RequestState(
        doc["state"], doc["hash"], doc.get("deadline"), tuple(doc.get("parked", ())),
        doc.get("status"), doc.get("ended"), doc.get("error"), doc.get("node"),
        doc.get("output"), doc.get("nonce", ""), doc.get("by", ""), doc.get("failure", ""),
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

    def live(self) -> RequestState | None:
        """The state while the request runs or is paused; None once it ended (or never began)."""
        found = self.read()
        return None if found is None or found[1].terminal else found[1]

    def begin(self, state: RequestState) -> bool:
        """Mark a new request running; False if the key already exists."""
        return self.states.create(KEY, state.encode())

    def end(
        self,
        status: str,
        *,
        error: str | None = None,
        error_node: str | None = None,
        output: bytes | None = None,
        by: str = "",
        failure: str = "",
    ) -> RequestState | None:
        """CAS the state to a terminal tombstone; the tombstone if this call won, else None."""
        nonce = os.urandom(8).hex()
        inline = None
        if output is not None:
            if len(output) <= INLINE_OUTPUT:
                inline = base64.b64encode(output).decode()
            else:
                self.data.set(OUTPUT_KEY, output)
        while True:
            found = self.read()
            if found is None:
                return None
            raw, current = found
            if current.terminal:
                return current if current.nonce == nonce else None
            tomb = attrs.evolve(
                current, state=FINISHED, status=status, ended=time.time(), error=error,
                error_node=error_node, output=inline, nonce=nonce, by=by,
                failure=failure,
            )
            try:
                self.states.update(KEY, raw, tomb.encode())
            except (CompareFailed, KeyNotFound):
                continue  # changed under us, or our own write landed before an error: re-read
            except BackendError:
                # the answer was lost: whether the end is ours decides who runs the hooks,
                # so look (an error here leaves it to the redelivery, hooks skipped)
                found = self.read()
                if found is not None and found[1].terminal and found[1].nonce == nonce:
                    return found[1]
                raise
            return tomb

    def output_of(self, tomb: RequestState) -> bytes | None:
        if tomb.status != "success":
            return None
        if tomb.output is not None:
            return base64.b64decode(tomb.output)
        try:
            return self.data.get(OUTPUT_KEY)
        except KeyNotFound:
            return b""

    def park(self, body: bytes) -> bool:
        """Hold an iteration while the request is paused.

        Returns False when the request is running (the caller runs the iteration) and raises
        RequestNotActive when it has ended.
        """
        parked_key = _PARKED + uuid.uuid4().hex
        stored = False
        while True:
            found = self.read()
            if found is None or found[1].terminal:
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
        written = None
        while True:
            found = self.read()
            if found is None:
                raise RequestNotFound(self.request_id, "pause")
            raw, current = found
            if raw == written:
                return  # our write landed although its answer was lost
            if current.state != RUNNING:
                raise RequestNotActive(self.request_id, current.state, "pause")
            written = attrs.evolve(current, state=PAUSED).encode()
            try:
                self.states.update(KEY, raw, written)
            except (CompareFailed, KeyNotFound):
                continue
            return

    def resume(self) -> tuple[str, ...]:
        """Set the request running again; the keys of the iterations it holds, oldest first.

        They stay listed (and stored) until :meth:`release_parked` after each was forwarded:
        a crash in between leaves them for the sweep to forward again.
        """
        written = None
        while True:
            found = self.read()
            if found is None:
                raise RequestNotFound(self.request_id, "resume")
            raw, current = found
            if raw == written:
                return current.parked  # our write landed although its answer was lost
            if current.state != PAUSED:
                raise RequestNotActive(self.request_id, current.state, "resume")
            written = attrs.evolve(current, state=RUNNING).encode()
            try:
                self.states.update(KEY, raw, written)
            except (CompareFailed, KeyNotFound):
                continue
            return current.parked

    def parked_body(self, key: str) -> bytes | None:
        try:
            return self.data.get(key)
        except KeyNotFound:
            return None

    def release_parked(self, key: str) -> None:
        """A held iteration was forwarded: unlist it, then delete its body."""
        while True:
            found = self.read()
            if found is None or key not in found[1].parked:
                break
            raw, current = found
            new = attrs.evolve(current, parked=tuple(k for k in current.parked if k != key))
            try:
                self.states.update(KEY, raw, new.encode())
            except (CompareFailed, KeyNotFound):
                continue
            break
        self.data.delete(key)
