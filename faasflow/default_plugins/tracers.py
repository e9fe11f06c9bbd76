"""``none`` and ``log``: the built-in tracers.

``none`` (the default) ignores every event. ``log`` writes one line per event to the logging
logger ``faasflow.trace``: the flow, request id, node, operation and, on end and failure events,
how long the request, node or operation took in this iteration. Choosing it is enough to see
them: the logger gets the tracer's level, and the lines go to stderr when the program has not
configured logging (Python would otherwise print warnings only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import ClassVar

import attrs

from faasflow.backends import Backend
from faasflow.errors import ConfigurationError
from faasflow.hookspecs import hookimpl
from faasflow.interfaces import Options, Tracer

__all__ = ["LogTracer", "NoTracer"]

log = logging.getLogger("faasflow.trace")


class _Fallback(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes ``faasflow.trace`` records to stderr unless a handler above the logger will."""

    def __init__(self) -> None:
        super().__init__()  # sys.stderr as it is when each record is written
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))

    def handle(self, record: logging.LogRecord) -> bool:
        logger: logging.Logger | None = log
        while logger is not None and logger.propagate:
            logger = logger.parent
            if logger is not None and logger.handlers:
                return False  # the application's own logging set-up prints it
        return super().handle(record)


def _show(level: int) -> None:
    """Make the events of a ``log`` tracer of ``level`` visible, once per process."""
    if log.level == logging.NOTSET:  # a level set by the application stays
        log.setLevel(level)
    if not any(isinstance(handler, _Fallback) for handler in log.handlers):
        log.addHandler(_Fallback())


class NoTracer(Tracer):
    """Ignores every event."""

    silent: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        # a subclass overrides events to hear them: silent only when it says so itself
        super().__init_subclass__(**kwargs)
        if "silent" not in cls.__dict__:
            cls.silent = False

    @classmethod
    def from_options(cls, options: Options) -> NoTracer:
        """The factory registered for ``none`` (it takes no options)."""
        return cls()

    def scoped(self, flow_name: str, request_id: str) -> NoTracer:
        # nothing of a request is kept, so one handle serves every iteration (the engine asks
        # for one per iteration); a subclass that keeps something gets handles of its own
        if type(self) is NoTracer:
            return self
        return super().scoped(flow_name, request_id)


def _format(attributes: Mapping[str, object]) -> str:
    parts = []
    for key, value in attributes.items():
        try:
            parts.append(f"{key}={value!r}")
        except Exception:
            parts.append(f"{key}=<{type(value).__name__}>")
    return " ".join(parts)


@attrs.define(eq=False, slots=False)
class LogTracer(Tracer):
    """Logs every event through ``faasflow.trace``."""

    level: int = logging.INFO
    logger: logging.Logger = log
    _started: dict[str, float] = attrs.field(factory=dict, init=False)

    @classmethod
    def from_options(cls, options: Options) -> LogTracer:
        """Option ``level``: the logging level of non-failure events (default INFO)."""
        raw = (options.get("level") or "INFO").strip().upper()
        level = logging.getLevelName(raw)
        if not isinstance(level, int):
            raise ConfigurationError(
                f"FAASFLOW_LOG_LEVEL={raw!r} is not a logging level; use DEBUG, INFO or WARNING"
            )
        _show(min(level, logging.WARNING))
        return cls(level)

    def configure(self, flow_name: str, request_id: str) -> None:
        super().configure(flow_name, request_id)
        self._started = {}  # start times belong to one iteration's handle, never shared

    def _emit(self, level: int, event: str, text: str = "", *, since: str | None = None) -> None:
        started = self._started.pop(since, None) if since is not None else None
        if not self.logger.isEnabledFor(level):
            return
        duration = ""
        if started is not None:
            duration = f" duration_ms={(time.perf_counter() - started) * 1000:.3f}"
        self.logger.log(
            level,
            "flow=%s request=%s event=%s%s%s",
            self.flow_name,
            self.request_id,
            event,
            duration,
            f" {text}" if text else "",
        )

    def _start(self, marker: str) -> None:
        self._started[marker] = time.perf_counter()

    def request_start(self, carrier: Mapping[str, str]) -> None:
        self._start("request")
        self._emit(self.level, "request_start")

    def request_continue(self, carrier: Mapping[str, str]) -> None:
        self._start("request")
        self._emit(self.level, "request_continue")

    def request_end(self, attributes: Mapping[str, object]) -> None:
        self._emit(self.level, "request_end", _format(attributes), since="request")

    def request_failure(self, error: BaseException) -> None:
        self._emit(
            logging.WARNING,
            "request_failure",
            f"error={type(error).__name__}: {error}",
            since="request",
        )

    def node_start(self, node: str, attributes: Mapping[str, object]) -> None:
        self._start(f"node:{node}")
        self._emit(self.level, "node_start", f"node={node} {_format(attributes)}".rstrip())

    def node_end(self, node: str, attributes: Mapping[str, object]) -> None:
        self._emit(
            self.level, "node_end", f"node={node} {_format(attributes)}".rstrip(),
            since=f"node:{node}",
        )

    def node_failure(self, node: str, error: BaseException) -> None:
        self._emit(
            logging.WARNING,
            "node_failure",
            f"node={node} error={type(error).__name__}: {error}",
            since=f"node:{node}",
        )

    def operation_start(self, operation: str, node: str, attributes: Mapping[str, object]) -> None:
        self._start(f"op:{node}:{operation}")
        self._emit(
            self.level,
            "operation_start",
            f"node={node} operation={operation} {_format(attributes)}".rstrip(),
        )

    def operation_end(self, operation: str, node: str, attributes: Mapping[str, object]) -> None:
        self._emit(
            self.level,
            "operation_end",
            f"node={node} operation={operation} {_format(attributes)}".rstrip(),
            since=f"op:{node}:{operation}",
        )

    def operation_failure(self, operation: str, node: str, error: BaseException) -> None:
        self._emit(
            logging.WARNING,
            "operation_failure",
            f"node={node} operation={operation} error={type(error).__name__}: {error}",
            since=f"op:{node}:{operation}",
        )


@hookimpl
def faasflow_tracers() -> Iterable[Backend]:
    yield Backend("none", NoTracer.from_options, summary="No tracing (the default).")
    yield Backend(
        "log",
        LogTracer.from_options,
        summary="Logs every request, node and operation event with durations (faasflow.trace).",
        options={"level": "logging level of start and end events (default INFO)"},
    )
