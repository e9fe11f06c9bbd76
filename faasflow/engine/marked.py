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
from typing import Any

import attrs

from .nodestates import instance_states

__all__ = ["MarkedRuns", "MarkedStates", "Marks", "NodeRun", "decode_marker"]

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
            docs = {}
            for eid, value in self.raw.items():
                doc = decode_marker(value) if isinstance(value, str) else value
                if isinstance(doc, Mapping) and "p" in doc:
                    docs[eid] = doc
            self._docs = docs
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


class MarkedRuns(Mapping[str, NodeRun]):
    """The node runs of a successful request, decoded from its markers when first read."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self._runs: dict[str, NodeRun] | None = None

    def _decoded(self) -> dict[str, NodeRun]:
        if self._runs is None:
            runs = {}
            for eid, doc in self.marks.docs().items():
                if doc["p"] == "claimed":
                    continue
                try:
                    runs[eid] = NodeRun.from_json(eid, doc)
                except (ValueError, KeyError, TypeError):
                    continue
            self._runs = runs
        return self._runs

    def __getitem__(self, eid: str) -> NodeRun:
        return self._decoded()[eid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return f"MarkedRuns({self._decoded()!r})"


class MarkedStates(Mapping[str, Mapping[str, Any]]):
    """The node states of a successful request (see ``nodestates``), from its markers when
    first read."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self._states: dict[str, Mapping[str, Any]] | None = None

    def _decoded(self) -> dict[str, Mapping[str, Any]]:
        if self._states is None:
            marks = self.marks
            out: dict[str, Mapping[str, Any]] = dict(instance_states(marks.docs(),
                                                                     ended="success"))
            if marks.runnable is not None:
                for uid in marks.runnable:
                    out.setdefault(uid, {"state": "skipped"})  # a success did not need it
                known = {*marks.runnable, *(marks.others or ())}
                out = dict(sorted(out.items(), key=lambda item: (item[0] not in known, item[0])))
            self._states = out
        return self._states

    def __getitem__(self, uid: str) -> Mapping[str, Any]:
        return self._decoded()[uid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return f"MarkedStates({self._decoded()!r})"
