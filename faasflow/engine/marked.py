"""The node runs and node states of an ended request, read from its markers when first asked.

A request's record holds one run and one state per node instance. Decoding every marker into
a :class:`NodeRun` at the end of the request, and encoding them all again into the record, cost
a third of a chain step and about 2.8 KB a branch of a wide foreach. A successful request's
record keeps its markers as the store gave them instead (each is already JSON, written by the
engine): they go into the stored record verbatim, and become runs and states only when
somebody reads them (``GET /flow/<id>``, the dashboard, the metrics of ``faasflow up``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, TypeVar

import attrs

from .nodestates import instance_states

__all__ = ["MarkedRuns", "MarkedStates", "Marks", "NodeRun", "decode_marker", "marks_of",
           "runs_of"]

V = TypeVar("V")
_raw_decode = json.JSONDecoder().raw_decode
_encode = json.JSONEncoder(separators=(",", ":")).encode


def decode_marker(raw: str) -> Any:
    """One marker as the engine wrote it; None when it is not JSON."""
    # raw_decode skips the two whitespace scans of json.loads: a record reads every marker,
    # and the engine writes them without whitespace around (anything else is read in full)
    try:
        doc, end = _raw_decode(raw)
        if end == len(raw):
            return doc
    except ValueError:
        pass
    try:
        return json.loads(raw)
    except ValueError:
        return None


def marks_of(raw: Mapping[str, str | Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The markers among ``raw`` values (text or decoded), decoded; others left out."""
    docs = {}
    for eid, value in raw.items():
        doc = decode_marker(value) if isinstance(value, str) else value
        if isinstance(doc, Mapping) and "p" in doc:
            docs[eid] = doc
    return docs


def runs_of(marks: Mapping[str, Mapping[str, Any]]) -> dict[str, NodeRun]:
    """The node instances that completed, from their (decoded) markers."""
    runs = {}
    for eid, doc in marks.items():
        if doc["p"] == "claimed":
            continue
        try:
            runs[eid] = NodeRun.from_json(eid, doc)
        except (ValueError, KeyError, TypeError):
            continue
    return runs


@attrs.frozen
class NodeRun:
    """One node execution (per branch instance)."""

    node: str
    start: float
    end: float
    attempts: int = 1
    status: str = "success"
    error: str | None = None
    deliveries: int = 1
    """Deliveries of the node's iteration it took (redeliveries after a crash or a 503)."""

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "start": self.start,
            "end": self.end,
            "duration_ms": round((self.end - self.start) * 1000, 3),
            "attempts": self.attempts,
            "status": self.status,
            "deliveries": self.deliveries,
            "state": "succeeded" if self.status == "success" else "failed",
        }
        if self.error:
            doc["error"] = self.error
        return doc

    @classmethod
    def from_json(cls, node: str, doc: Mapping[str, Any]) -> NodeRun:
        return cls(
            node,
            float(doc["start"]),
            float(doc["end"]),
            int(doc.get("attempts", 1)),
            str(doc.get("status", "success")),
            doc.get("error"),
            int(doc.get("deliveries", 1)),
        )


class Marks:
    """A successful request's markers by execution id (raw JSON text or decoded) and its
    graph's nodes: ``runnable``, the unique ids of those that run (a node of them with no
    instance was skipped), and ``others`` (sub-DAG and end nodes). Without a graph both are
    None: only the nodes that ran show, unsorted."""

    __slots__ = ("_docs", "others", "raw", "runnable")

    def __init__(self, raw: Mapping[str, str | Mapping[str, Any]],
                 runnable: Sequence[str] | None, others: Sequence[str] | None) -> None:
        self.raw = raw
        self.runnable = runnable
        self.others = others
        self._docs: dict[str, Mapping[str, Any]] | None = None

    def docs(self) -> dict[str, Mapping[str, Any]]:
        """The markers decoded (once), leaving out any that are not a marker."""
        if self._docs is None:
            self._docs = marks_of(self.raw)
        return self._docs

    def members(self) -> str:
        """The stored record's ``"marks"``, ``"runnable"`` and ``"others"`` members. Each
        marker is kept as a JSON string of its text: escaping is a fraction of decoding, and
        the record stays JSON whatever a marker holds (one that is not a marker is left out
        when read, as it is from the store)."""
        string = encode_basestring_ascii
        parts = [
            f"{string(eid)}:{string(value if isinstance(value, str) else _encode(value))}"
            for eid, value in self.raw.items()
        ]
        return (f'"marks":{{{",".join(parts)}}},"runnable":{_encode(self.runnable)},'
                f'"others":{_encode(self.others)}')


class _Marked(Mapping[str, V]):
    """A mapping built from a request's markers the first time it is read."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self._built: dict[str, V] | None = None

    def _build(self) -> dict[str, V]:
        raise NotImplementedError

    def _decoded(self) -> dict[str, V]:
        if self._built is None:
            self._built = self._build()
        return self._built

    def __getitem__(self, key: str) -> V:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._decoded()!r})"


class MarkedRuns(_Marked[NodeRun]):
    """The node runs of a successful request, decoded from its markers when first read."""

    def _build(self) -> dict[str, NodeRun]:
        return runs_of(self.marks.docs())


class MarkedStates(_Marked[Mapping[str, Any]]):
    """The node states of a successful request (see ``nodestates``), from its markers when
    first read."""

    def _build(self) -> dict[str, Mapping[str, Any]]:
        marks = self.marks
        out: dict[str, Mapping[str, Any]] = dict(instance_states(marks.docs(), ended="success"))
        if marks.runnable is not None:
            for uid in marks.runnable:
                out.setdefault(uid, {"state": "skipped"})  # a success did not need it
            known = {*marks.runnable, *(marks.others or ())}
            out = dict(sorted(out.items(), key=lambda item: (item[0] not in known, item[0])))
        return out
