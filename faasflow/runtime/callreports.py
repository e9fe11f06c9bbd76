"""Calls a worker served without the gateway, reported to the gateway so it still counts them.

A flow's call of a python3-http function served by its own worker process never reaches the
gateway (:mod:`faasflow.runtime.samecall`), yet ``/system/functions`` (``invocationCount``) and
``/metrics`` must count it as if it had. The worker reports those calls on a pipe of their
own, which the gateway opens for each worker process and passes by its number (handlers'
prints go to stderr and never reach it), as one JSON line per batch::

    {"served": [["inc", 200, 0.00041], ["inc", 500, 0.0012]]}

A batch is written a short delay after its first call, so a chain of calls costs one pipe write
and one wake-up of the gateway's reader per batch, not per call. The gateway reads the lines
(:func:`read_reports`) and applies each entry for a function the worker serves. Counts are
metrics, not state: the last batch of a worker that is killed is lost with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Collection
from typing import IO

__all__ = ["REPORT_DELAY", "CallReports", "read_reports"]

log = logging.getLogger("faasflow.gateway")

#: Seconds a worker gathers reports before writing them in one line.
REPORT_DELAY = 0.05

Served = Callable[[str, int, float], None]
"""``served(function, status, seconds)``: one call served in a worker process."""


class CallReports:
    """Batches ``(function, status, seconds)`` of calls served in this process and writes them
    to ``out`` (a text stream) from a thread of its own; thread-safe."""

    def __init__(self, out: IO[str], delay: float = REPORT_DELAY) -> None:
        self._out = out
        self._delay = delay
        self._lock = threading.Lock()
        self._pending: list[tuple[str, int, float]] = []
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._write_lock = threading.Lock()

    def add(self, function: str, status: int, seconds: float) -> None:
        with self._lock:
            self._pending.append((function, status, round(seconds, 6)))
            if len(self._pending) > 1:
                return  # the writer is already woken for this batch
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, daemon=True,
                                                name="faasflow-call-reports")
                self._writer.start()
        self._wake.set()

    def flush(self) -> None:
        """Write what is pending now (the worker is stopping)."""
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            line = json.dumps({"served": batch}, separators=(",", ":")) + "\n"
            with self._write_lock, contextlib.suppress(OSError, ValueError):
                # the gateway is gone (EPIPE) or the stream is closed: nobody to count for
                self._out.write(line)
                self._out.flush()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._wake.wait(self._delay)  # gather the batch; a later add sets it again
            self._wake.clear()
            self.flush()


def read_reports(stream: IO[bytes], functions: Collection[str], served: Served) -> None:
    """Apply every report line of a worker's protocol ``stream`` until it ends; entries naming a
    function the worker does not serve, and lines that are not reports, are ignored."""
    for raw in stream:
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        batch = doc.get("served") if isinstance(doc, dict) else None
        if not isinstance(batch, list):
            continue
        for entry in batch:
            if not (isinstance(entry, list) and len(entry) == 3):
                continue
            function, status, seconds = entry
            if isinstance(function, str) and function in functions and \
                    isinstance(status, int) and 100 <= status <= 999 and \
                    isinstance(seconds, (int, float)) and seconds >= 0:
                try:
                    served(function, status, float(seconds))
                except Exception:  # one failed count must not stop the reading of the rest
                    log.exception("counting a call served in a worker failed")
