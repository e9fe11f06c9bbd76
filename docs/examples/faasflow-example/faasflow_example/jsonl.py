"""``jsonl``: a Tracer that appends one JSON object per event to a file.

Each line holds ``time``, ``flow``, ``request``, ``event`` and, as they apply, ``node``,
``operation``, ``attributes``, ``error`` and ``parent`` (the span id that ``inject`` handed to
the next iteration, read back by ``request_continue``). Lines are written with one ``O_APPEND``
write each, so several processes can share the file.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faasflow import Options, Tracer

DEFAULT_PATH = "faasflow-trace.jsonl"
HEADER = "X-Faasflow-Jsonl-Span"


class JsonlTracer(Tracer):
    """Appends events to a JSON-lines file; never raises into the flow."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.span = uuid.uuid4().hex
        self.parent: str | None = None
        self.dropped = 0

    @classmethod
    def from_options(cls, options: Options) -> JsonlTracer:
        """Option ``path``: the file events are appended to."""
        return cls(options.get("path") or DEFAULT_PATH)

    def configure(self, flow_name: str, request_id: str) -> None:
        super().configure(flow_name, request_id)
        self.span = uuid.uuid4().hex  # one span per iteration handle
        self.parent = None

    def _write(self, event: str, **fields: Any) -> None:
        record = {
            "time": time.time(),
            "flow": self.flow_name,
            "request": self.request_id,
            "span": self.span,
            "event": event,
            **{k: v for k, v in fields.items() if v is not None},
        }
        try:
            line = json.dumps(record, default=repr, ensure_ascii=False) + "\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except (OSError, TypeError, ValueError):
            self.dropped += 1  # a tracer must never fail the flow

    def request_start(self, carrier: Mapping[str, str]) -> None:
        self._write("request_start")

    def request_continue(self, carrier: Mapping[str, str]) -> None:
        self.parent = next((v for k, v in carrier.items() if k.lower() == HEADER.lower()), None)
        self._write("request_continue", parent=self.parent)

    def request_end(self, attributes: Mapping[str, object]) -> None:
        self._write("request_end", attributes=dict(attributes))

    def request_failure(self, error: BaseException) -> None:
        self._write("request_failure", error=f"{type(error).__name__}: {error}")

    def node_start(self, node: str, attributes: Mapping[str, object]) -> None:
        self._write("node_start", node=node, attributes=dict(attributes))

    def node_end(self, node: str, attributes: Mapping[str, object]) -> None:
        self._write("node_end", node=node, attributes=dict(attributes))

    def node_failure(self, node: str, error: BaseException) -> None:
        self._write("node_failure", node=node, error=f"{type(error).__name__}: {error}")

    def operation_start(self, operation: str, node: str, attributes: Mapping[str, object]) -> None:
        self._write("operation_start", node=node, operation=operation, attributes=dict(attributes))

    def operation_end(self, operation: str, node: str, attributes: Mapping[str, object]) -> None:
        self._write("operation_end", node=node, operation=operation, attributes=dict(attributes))

    def operation_failure(self, operation: str, node: str, error: BaseException) -> None:
        self._write(
            "operation_failure",
            node=node,
            operation=operation,
            error=f"{type(error).__name__}: {error}",
        )

    def inject(self, carrier: dict[str, str]) -> None:
        carrier[HEADER] = self.span
