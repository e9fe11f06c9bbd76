"""Request records: what happened to a request, kept after it ends.

faas-flow kept nothing about finished requests. Here every DAG request has a small status entry
in the StateStore namespace ``faasflow/<flow>/~records/`` (claimed atomically when the request
ends, so success, failure and stop are decided exactly once) and, once it ended, the full record
(output, error, node timings) in the DataStore under the same namespace.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from faasflow.errors import CompareFailed, KeyNotFound
from faasflow.interfaces import DataStore, StateStore

from .index import IndexEntry, IndexPage, IndexQuery, RequestIndex, first_line
from .marked import MarkedRuns, MarkedStates, Marks, NodeRun

__all__ = ["RECORDS", "NodeRun", "RecordBook", "RequestRecord"]

RECORDS = "~records"
_KEY = "rec--"
_CALL = "call--"
_INPUT = "input--"

RUNNING = "running"
#: Records a RecordBook keeps decoded after saving them (see ``RecordBook.load``).
_RECENT = 64
#: ... up to this size each (the decoded record of a wide foreach is many times its body).
_RECENT_BYTES = 1 << 20
TERMINAL = ("success", "failure", "stopped")


@attrs.frozen
class RequestRecord:
    """Status, output, error and node timings of one request."""

    request_id: str
    flow: str
    status: str
    """``running``, ``paused``, ``success``, ``failure`` or ``stopped``."""
    created: float
    ended: float | None = None
    output: bytes | None = None
    error: str | None = None
    nodes: Mapping[str, NodeRun] = attrs.field(factory=dict)
    failure: Mapping[str, Any] | None = None
    """A failure's node, function status and answer (first 4 KiB), user traceback."""
    states: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    """Every node of the graph by unique id: its state (see ``nodestates``)."""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        """JSON form served by ``GET /flow/<id>``; output as text when it is UTF-8."""
        doc = self._head()
        doc["nodes"] = {k: v.to_json() for k, v in self.nodes.items()}
        doc["states"] = {k: dict(v) for k, v in self.states.items()}
        return doc

    def stored(self) -> bytes:
        """The record as it is kept in the DataStore: :meth:`to_json`, or, for a record whose
        runs and states come from markers not read yet, the markers themselves (see
        ``marked``; :meth:`from_json` reads both)."""
        nodes = self.nodes
        if not (isinstance(nodes, MarkedRuns) and isinstance(self.states, MarkedStates)
                and nodes.marks is self.states.marks):
            return json.dumps(self.to_json()).encode()
        head = json.dumps(self._head())
        return f"{head[:-1]},{nodes.marks.members()}}}".encode()

    def _head(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.request_id,
            "flow": self.flow,
            "status": self.status,
            "created": self.created,
            "ended": self.ended,
            "error": self.error,
            "failure": None if self.failure is None else dict(self.failure),
        }
        if self.output is None:
            doc["output"] = None
        else:
            try:
                doc["output"] = self.output.decode()
                doc["output_encoding"] = "utf-8"
            except UnicodeDecodeError:
                doc["output"] = base64.b64encode(self.output).decode()
                doc["output_encoding"] = "base64"
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RequestRecord:
        output = doc.get("output")
        if output is not None:
            output = (
                base64.b64decode(output)
                if doc.get("output_encoding") == "base64"
                else output.encode()
            )
        nodes: Mapping[str, NodeRun]
        states: Mapping[str, Mapping[str, Any]]
        if isinstance(doc.get("marks"), Mapping):  # as kept by stored(): runs from markers
            marks = Marks(doc["marks"], doc.get("runnable"), doc.get("others"))
            nodes, states = MarkedRuns(marks), MarkedStates(marks)
        else:
            nodes = {k: NodeRun.from_json(k, v) for k, v in (doc.get("nodes") or {}).items()}
            states = dict(doc.get("states") or {})
        return cls(
            request_id=doc["id"],
            flow=doc["flow"],
            status=doc["status"],
            created=doc["created"],
            ended=doc.get("ended"),
            output=output,
            error=doc.get("error"),
            nodes=nodes,
            failure=doc.get("failure"),
            states=states,
        )


class RecordWatcher(Protocol):
    """Hears of the requests a :class:`RecordBook` opens and closes (exactly once each)."""

    def request_opened(self, flow: str, request_id: str) -> None: ...

    def request_ended(self, record: RequestRecord) -> None: ...


@attrs.define
class RecordBook:
    """The records of one flow."""

    states: StateStore
    data: DataStore
    retention: float
    index: RequestIndex | None = None
    watchers: list[RecordWatcher] = attrs.field(factory=list)
    """Told of every start and end this process records (metrics)."""
    _recent: dict[str, tuple[bytes, RequestRecord]] = attrs.field(factory=dict, init=False)
    """The last records this process saved, with their bodies (see :meth:`load`)."""
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        if self.index is None:  # the index shares the records' namespace (faasflow.engine.index)
            self.index = RequestIndex(self.states)

    @classmethod
    def of(
        cls, state_store: StateStore, data_store: DataStore, flow: str, retention: float
    ) -> RecordBook:
        return cls(state_store.scoped(flow, RECORDS), data_store.scoped(flow, RECORDS), retention)

    def open(
        self, request_id: str, deadline: float | None, digest: str = "", definition: str = ""
    ) -> dict[str, Any] | None:
        """Record a new running request: None if this call created it, else the entry that
        holds the id (a repeated start compares its ``digest`` with the first one's)."""
        entry = {"status": RUNNING, "created": time.time(), "deadline": deadline,
                 "digest": digest, "nonce": os.urandom(8).hex()}
        for _ in range(2):  # twice: the entry may be forgotten between the create and the read
            found = None
            if not self.states.create(_KEY + request_id, json.dumps(entry)):
                found = self.entry(request_id)
                if found is None:
                    continue
                if found[1].get("nonce") != entry["nonce"]:
                    return found[1]
                # our own create, applied although its answer was lost: it is ours
            self._index_open(request_id, entry, definition)
            for watcher in self.watchers:
                watcher.request_opened(self.states.flow_name, request_id)
            return None
        return entry

    def _index_open(self, request_id: str, entry: dict[str, Any], definition: str) -> None:
        if self.index is not None:
            self.index.opened(IndexEntry(request_id, RUNNING, entry["created"],
                                         definition=definition))

    def page(self, query: IndexQuery) -> IndexPage:
        """A page of this flow's requests, newest first (see :mod:`faasflow.engine.index`)."""
        if self.index is None:
            return IndexPage((), None)
        return self.index.page(query)

    def start_id(self, call_id: str, request_id: str) -> str:
        """The request a start with gateway call id ``call_id`` made: ``request_id`` if this
        is the first delivery of that call, the first delivery's id otherwise."""
        key = _CALL + call_id
        if self.states.create(key, request_id):
            return request_id
        try:
            return self.states.get(key)
        except KeyNotFound:
            return request_id

    def entry(self, request_id: str) -> tuple[str, dict[str, Any]] | None:
        try:
            raw = self.states.get(_KEY + request_id)
        except KeyNotFound:
            return None
        return raw, json.loads(raw)

    def close(self, record: RequestRecord) -> bool:
        """Claim the end of a running request; exactly one caller gets True."""
        found = self.entry(record.request_id)
        if found is None or found[1]["status"] != RUNNING:
            return False
        raw, entry = found
        body = record.stored()
        closed = dict(
            entry,
            status=record.status,
            ended=record.ended,
            expires=(record.ended or time.time()) + self.retention,
        )
        try:
            self.states.update(_KEY + record.request_id, raw, json.dumps(closed))
        except (CompareFailed, KeyNotFound):
            return False
        self.save(record, body)
        for watcher in self.watchers:
            watcher.request_ended(record)
        return True

    def reopen(
        self, request_id: str, raw: str, entry: dict[str, Any], deadline: float | None
    ) -> bool:
        """Claim a redrive of a failed request: its entry goes back to running (exactly one
        caller gets True)."""
        opened = {k: v for k, v in entry.items() if k not in ("ended", "expires")}
        opened.update(status=RUNNING, deadline=deadline)
        try:
            self.states.update(_KEY + request_id, raw, json.dumps(opened))
        except (CompareFailed, KeyNotFound):
            return False
        if self.index is not None:
            self.index.ended(IndexEntry(request_id, RUNNING, float(entry["created"])))
        return True

    def keep_input(self, request_id: str, data: bytes, query: str,
                   callback: str | None) -> None:
        """Keep a request's input until its record expires (re-run)."""
        doc = {"body": base64.b64encode(data).decode(), "query": query, "callback": callback}
        self.data.set(_INPUT + request_id, json.dumps(doc).encode())

    def input_of(self, request_id: str) -> tuple[bytes, str, str | None] | None:
        try:
            doc = json.loads(self.data.get(_INPUT + request_id))
        except KeyNotFound:
            return None
        return base64.b64decode(doc["body"]), str(doc.get("query") or ""), doc.get("callback")

    def save(self, record: RequestRecord, body: bytes | None = None) -> None:
        """Write the full record of an ended request (again, when a crash lost it)."""
        if body is None:
            body = record.stored()
        if self.index is not None:  # before the record: a crash here is redone with the record
            failed = [] if record.status == "success" else [
                n for n, run in record.nodes.items() if run.status == "failure"]
            self.index.ended(IndexEntry(
                record.request_id, record.status, record.created, record.ended,
                failed[0] if failed else None, first_line(record.error),
            ))
        self.data.set(_KEY + record.request_id, body)
        recent = self._recent
        with self._lock:
            recent.pop(record.request_id, None)
            if len(body) > _RECENT_BYTES:
                return  # a wide foreach's record: read back from the store when asked
            while len(recent) >= _RECENT:
                recent.pop(next(iter(recent)))
            recent[record.request_id] = (body, record)

    def load(self, request_id: str) -> RequestRecord | None:
        """The full record of an ended request, or None when it is running or unknown."""
        try:
            body = self.data.get(_KEY + request_id)
        except KeyNotFound:
            return None
        # the record this process saved, when the store still holds exactly its body: the
        # waiter of a request reads the record its ender just wrote, and decoding it again
        # costs as much as writing it
        known = self._recent.get(request_id)
        if known is not None and known[0] == body:
            return known[1]
        return RequestRecord.from_json(json.loads(body))

    def entries(self) -> dict[str, dict[str, Any]]:
        return {k[len(_KEY) :]: json.loads(v) for k, v in self.states.scan(_KEY).items()}

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._recent.pop(request_id, None)
        if self.index is not None:
            self.index.remove(request_id)
        self.states.delete(_KEY + request_id)
        self.data.delete(_KEY + request_id)
        self.data.delete(_INPUT + request_id)

    def forget_calls(self, request_ids: set[str]) -> None:
        """Drop the call-id entries of forgotten requests."""
        for key, value in self.states.scan(_CALL).items():
            if value in request_ids:
                self.states.delete(key)

    def lease(self, name: str, holder: str, seconds: float, now: float) -> bool:
        """Take the flow-wide lease ``name`` for ``seconds`` unless another holder has it."""
        key = "lease--" + name
        value = json.dumps({"holder": holder, "until": now + seconds})
        if self.states.create(key, value):
            return True
        try:
            raw = self.states.get(key)
        except KeyNotFound:
            return self.states.create(key, value)
        if json.loads(raw)["until"] > now:
            return False
        try:
            self.states.update(key, raw, value)
        except (CompareFailed, KeyNotFound):
            return False
        return True
