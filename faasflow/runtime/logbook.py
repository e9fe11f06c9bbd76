"""Function logs of the local gateway, as ``faas-cli logs`` reads them.

Worker processes serve several functions from one process, so a worker tags every line its
handlers write with the function (and call) being served: the line goes to the worker's stderr
as ``<TAG>{json}``. The gateway reads each worker's stderr, keeps a bounded ring of lines per
function and answers ``/system/logs`` with faas-provider's NDJSON log messages
(``{"name", "namespace", "instance", "timestamp", "text"}``, plus ``call_id``, and a flow's
``request_id`` and ``node`` when known).
"""

from __future__ import annotations

import collections
import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import attrs

__all__ = ["TAG", "LogBook", "LogLine", "Tag", "decode", "encode", "parse_time", "rfc3339"]

#: Prefix of a tagged line on a worker's stderr.
TAG = b"\x1efaasflow-log "
#: Lines kept per function.
LINES_PER_FUNCTION = 2000


@attrs.frozen
class Tag:
    """Who wrote a line: the function served, the gateway's call id, a flow's request id and
    the node (execution id) it was running."""

    function: str
    call_id: str | None = None
    request_id: str | None = None
    node: str | None = None


def encode(tag: Tag, text: str) -> bytes:
    """One tagged line (without its newline)."""
    return TAG + json.dumps({"f": tag.function, "c": tag.call_id, "r": tag.request_id,
                             "n": tag.node, "t": text}).encode()


def decode(line: bytes) -> tuple[Tag | None, str]:
    """``(tag, text)`` of one line from a worker; an untagged line has no tag."""
    line = line.rstrip(b"\r\n")
    if line.startswith(TAG):
        try:
            doc = json.loads(line[len(TAG):])
            tag = Tag(str(doc["f"]), str(doc["c"]) if doc.get("c") else None,
                      str(doc["r"]) if doc.get("r") else None,
                      str(doc["n"]) if doc.get("n") else None)
            return tag, str(doc["t"])
        except (ValueError, KeyError, TypeError):
            pass
    return None, line.decode(errors="replace")


def rfc3339(timestamp: float) -> str:
    """``2026-12-01T21:00:00.123456Z``, as Go's ``time.Time`` marshals."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_time(raw: str) -> float:
    """A Unix time from an RFC 3339 timestamp (``Z`` or an offset, any fraction); raises
    ``ValueError``."""
    text = _FRACTION.sub(r"\1", raw.strip().replace("z", "Z"))
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@attrs.frozen
class LogLine:
    """One line a function wrote."""

    name: str
    namespace: str
    instance: str
    timestamp: float
    text: str
    call_id: str | None = None
    request_id: str | None = None
    node: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                               "instance": self.instance, "timestamp": rfc3339(self.timestamp),
                               "text": self.text}
        if self.call_id:
            doc["call_id"] = self.call_id
        if self.request_id:
            doc["request_id"] = self.request_id
        if self.node:
            doc["node"] = self.node
        return doc


class LogBook:
    """The last lines of each function; thread-safe, with waiting for new lines."""

    def __init__(self, per_function: int = LINES_PER_FUNCTION) -> None:
        self.per_function = per_function
        self._lines: dict[str, collections.deque[tuple[int, LogLine]]] = {}
        self._seq = 0
        self._changed = threading.Condition()

    def add(self, line: LogLine) -> None:
        with self._changed:
            self._seq += 1
            ring = self._lines.get(line.name)
            if ring is None:
                ring = self._lines[line.name] = collections.deque(maxlen=self.per_function)
            ring.append((self._seq, line))
            self._changed.notify_all()

    def read(self, name: str, *, since: float | None = None, tail: int | None = None
             ) -> list[LogLine]:
        """Lines of ``name`` at or after ``since``, the last ``tail`` of them."""
        return self._select(name, since, tail, 0)[0]

    def _select(self, name: str, since: float | None, tail: int | None, after: int
                ) -> tuple[list[LogLine], int]:
        """The lines past sequence number ``after``, and the last sequence number seen."""
        with self._changed:
            lines = [line for seq, line in self._lines.get(name, ())
                     if seq > after and (since is None or line.timestamp >= since)]
            seen = self._seq
        if tail is not None and tail >= 0:
            lines = lines[len(lines) - tail:] if tail else []
        return lines, seen

    def follow(self, name: str, *, since: float | None = None, tail: int | None = None,
               stop: Callable[[], bool], poll: float = 1.0) -> Iterator[LogLine]:
        """The lines :meth:`read` gives, then each new line as it comes, until ``stop()``."""
        lines, last = self._select(name, since, tail, 0)
        yield from lines
        while not stop():
            with self._changed:
                if self._seq == last:
                    self._changed.wait(poll)
                if self._seq == last:
                    continue
            lines, last = self._select(name, since, None, last)
            yield from lines

    def wake(self) -> None:
        """Let followers check ``stop()`` at once (the gateway is stopping)."""
        with self._changed:
            self._changed.notify_all()

