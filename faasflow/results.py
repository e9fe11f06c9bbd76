"""One result type for every way a request is run: :class:`Result` and its :class:`Status`.

``faasflow.run``/``arun`` and ``Engine.start`` answer a :class:`Result`; a request record read
back over HTTP (``GET /flow/<id>``) parses into the same shape with :meth:`Result.from_json`.
States have one casing, the enum's lower-case values; faas-flow's ``RUNNING``/``PAUSED``/
``FINISHED`` text is kept only on the faas-flow-compatible state route.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from faasflow.errors import FlowFailure

if TYPE_CHECKING:
    from faasflow.engine.records import NodeRun, RequestRecord

__all__ = ["Result", "Status"]


class Status(str, enum.Enum):
    """A request's status. A ``str``, so ``status == "success"`` and JSON keep working."""

    RUNNING = "running"
    PAUSED = "paused"
    SUCCESS = "success"
    FAILURE = "failure"
    STOPPED = "stopped"

    def __str__(self) -> str:  # the value, as in JSON, on every Python version
        return self.value

    @property
    def done(self) -> bool:
        return self in (Status.SUCCESS, Status.FAILURE, Status.STOPPED)


def _status(value: str | Status) -> Status:
    return value if isinstance(value, Status) else Status(str(value).lower())


def _output(value: bytes | bytearray | memoryview | None) -> bytes:
    return b"" if value is None else bytes(value)


@attrs.frozen
class Result:
    """What a request gave: its status, output and (for a failure) error and failed node.

    ``created``, ``ended``, ``nodes`` and ``failure`` are filled where the request's record is
    known (a DAG request that ended, or a record read over HTTP)."""

    request_id: str
    status: Status = attrs.field(converter=_status)
    output: bytes = attrs.field(default=b"", converter=_output)
    error: str | None = None
    flow: str = ""
    created: float | None = None
    ended: float | None = None
    nodes: Mapping[str, NodeRun] = attrs.field(factory=dict)
    failure: Mapping[str, Any] | None = None
    """A failure's node, function status and answer (first 4 KiB), user traceback."""
    sync: bool = False
    """The flow is a single-node sync flow that ran inside the start."""
    cause: BaseException | None = attrs.field(default=None, eq=False, repr=False)
    """In-process only: the exception the failed node raised."""

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCESS

    @property
    def done(self) -> bool:
        return self.status.done

    @property
    def text(self) -> str:
        """The output decoded as UTF-8."""
        return self.output.decode()

    def json(self) -> Any:
        """The output parsed as JSON (a flow with ``codec=faasflow.JSON`` returns JSON)."""
        return json.loads(self.output)

    @property
    def node(self) -> str:
        """The failed node's id ("" when not known or not failed)."""
        return str((self.failure or {}).get("node") or "")

    @property
    def exception(self) -> FlowFailure | None:
        """A failure (or stop) as an exception: its ``node`` names the failed node and, for a
        request run in this process, ``__cause__`` is the original exception."""
        if self.status not in (Status.FAILURE, Status.STOPPED):
            return None
        if isinstance(self.cause, FlowFailure):
            return self.cause
        exc = FlowFailure(
            self.error or f"request {self.request_id} {self.status.value}",
            node=self.node, request_id=self.request_id,
        )
        exc.__cause__ = self.cause
        return exc

    def raise_for_status(self) -> Result:
        """Raise :attr:`exception` for a failed or stopped request; else return self."""
        exc = self.exception
        if exc is not None:
            raise exc
        return self

    @classmethod
    def from_record(cls, record: RequestRecord, *, cause: BaseException | None = None) -> Result:
        return cls(
            record.request_id, record.status, record.output, record.error, record.flow,
            record.created, record.ended, record.nodes, record.failure, cause=cause,
        )

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Result:
        """Parse the JSON of ``GET /flow/<id>`` (a request record)."""
        from faasflow.engine.records import NodeRun

        output = doc.get("output")
        raw = b"" if output is None else (
            base64.b64decode(output) if doc.get("output_encoding") == "base64"
            else str(output).encode()
        )
        return cls(
            str(doc["id"]), doc["status"], raw, doc.get("error"), str(doc.get("flow") or ""),
            doc.get("created"), doc.get("ended"),
            {k: NodeRun.from_json(k, v) for k, v in (doc.get("nodes") or {}).items()},
            doc.get("failure"),
        )


# The exceptions of requests that failed in this process, by request id, for faasflow.run to
# hand to its caller; bounded, since a server's in-process invoker records them too.
_FAILED: dict[str, BaseException] = {}
_KEEP = 32


def remember_failure(request_id: str, exc: BaseException) -> None:
    _FAILED[request_id] = exc
    while len(_FAILED) > _KEEP:
        del _FAILED[next(iter(_FAILED))]


def take_failure(request_id: str) -> BaseException | None:
    return _FAILED.pop(request_id, None)
