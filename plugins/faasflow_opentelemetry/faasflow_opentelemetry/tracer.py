"""The ``opentelemetry`` Tracer: faasflow's request, node and operation events as OTel spans.

Span tree of one request (one trace):

- ``<flow>`` (SERVER): the request span, opened by the first iteration and ended when that
  iteration ends; a span cannot be reopened in another process, so it covers the first
  iteration only. With ``incoming=child`` it joins a trace context sent by the caller.
- ``<node unique id>``: one span per node; a child of the request span in the first iteration
  (INTERNAL) and of the propagated context in later ones (CONSUMER). A forward injects the
  sending node's span, so iterations chain into one waterfall.
- ``<operation id>``: one span per operation (function name, ``modifier``, ``http-req-...``),
  a child of its node span; a CLIENT span with the HTTP client attributes when it called a
  function or URL. A context injected while it runs names this span, so the callee's spans
  become its children.

A handle serves one iteration in one thread; its spans live in plain attributes. Every public
method swallows its own errors (counted in :meth:`OpenTelemetryTracer.stats`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
)

from faasflow import FunctionError, Tracer
from faasflow_opentelemetry.config import Config
from faasflow_opentelemetry.pipeline import (
    ExportStats,
    Pipeline,
    check_propagators,
    pipeline_for,
    shutdown_all,
    stats_for,
)

__all__ = ["OpenTelemetryTracer"]

log = logging.getLogger("faasflow.tracer.opentelemetry")

_UNSET = object()
_ROOT = Context()  # no parent: never the ambient context of the thread
_SERVER, _CLIENT = SpanKind.SERVER, SpanKind.CLIENT
_INTERNAL, _CONSUMER = SpanKind.INTERNAL, SpanKind.CONSUMER
_in_context = trace.set_span_in_context


class _Operation:
    """An operation whose span is created when it ends (its kind is known only then)."""

    __slots__ = ("context", "node", "reserved", "span", "start_ns")

    def __init__(self, node: str, start_ns: int) -> None:
        self.node = node
        self.start_ns = start_ns
        self.reserved: SpanContext | None = None
        self.context: Context | None = None
        self.span: Span | None = None


class OpenTelemetryTracer(Tracer):
    """Spans through the OpenTelemetry SDK, exported over OTLP/HTTP in batches.

    A handle (:meth:`scoped`) serves one iteration in one thread, as the Tracer contract says,
    so it keeps its spans in plain attributes: no lock on the path of every event. Handles of
    concurrent iterations share only the pipeline, which is thread-safe.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._enabled = not config.disabled
        # flow name -> its pipeline, shared by this backend and its handles
        self._pipelines: dict[str, Pipeline] = {}
        self._begin()

    def _begin(self) -> None:
        self._pipeline: Pipeline | None = None
        self._remote: Context | None = None
        self._request: Span | None = None
        self._request_open = False
        self._parent: Context | None = None  # what node spans hang off
        self._nodes: dict[str, Span] = {}
        self._node_attributes: dict[str, Mapping[str, object]] = {}
        self._last_node: Span | None = None
        self._operations: dict[tuple[str, str], _Operation] = {}
        self._warned = False

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> OpenTelemetryTracer:
        """Build from resolved backend options (see :mod:`faasflow_opentelemetry.config`)."""
        config = Config.from_options(options)
        if config.provider == "own" and not config.disabled:
            check_propagators(config.propagators)  # fail at start-up, not on the first request
        return cls(config)

    def scoped(self, flow_name: str, request_id: str) -> OpenTelemetryTracer:
        # runs once per iteration: no __init__, no copy
        handle = object.__new__(type(self))
        handle.config = self.config
        handle._enabled = self._enabled
        handle._pipelines = self._pipelines
        handle._begin()
        handle.flow_name = flow_name
        handle.request_id = request_id
        return handle

    # process-wide state

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def pipeline(self) -> Pipeline:
        """The shared pipeline of this flow's service name (built on first use)."""
        return self._pipeline or self._open_pipeline()

    def _open_pipeline(self) -> Pipeline:
        pipeline = self._pipelines.get(self.flow_name)
        if pipeline is None or pipeline.closed:
            service = self.config.service_for(self.flow_name)
            pipeline = self._pipelines[self.flow_name] = pipeline_for(self.config, service)
        self._pipeline = pipeline
        return pipeline

    def stats(self) -> ExportStats:
        """Export counters of every pipeline of this configuration in this process."""
        return stats_for(self.config)

    @property
    def dropped(self) -> int:
        """Spans lost to exporter failures so far (see :meth:`stats`)."""
        return self.stats().dropped

    def close(self) -> None:
        """Export what is queued and stop the export threads of this configuration."""
        shutdown_all(self.config)

    def _count_error(self, where: str) -> None:
        """A tracer never raises into the flow: errors are counted and logged once."""
        with contextlib.suppress(Exception):  # even building the pipeline may have failed
            self.pipeline.errors += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "opentelemetry tracer: %s failed for request %s of flow %s; the flow goes on, "
                "this is reported once per iteration", where, self.request_id, self.flow_name,
                exc_info=True,
            )

    # span helpers

    def _start(
        self,
        name: str,
        parent: Context | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: list[Link] | None = None,
    ) -> Span:
        return (self._pipeline or self._open_pipeline()).tracer.start_span(
            name, parent if parent is not None else _ROOT, kind, attributes, links
        )

    def _node_context(self) -> Context | None:
        """The context of the innermost node: open, else last ended, else request, else what
        came in."""
        nodes = self._nodes
        if nodes:
            return _in_context(next(reversed(nodes.values())))
        if self._last_node is not None:
            return _in_context(self._last_node)
        return self._parent

    def _operation_context(self, name: str, operation: _Operation) -> Context | None:
        """What a call made by a running operation carries: its (future) span."""
        if operation.context is not None:
            return operation.context
        if operation.span is not None:
            operation.context = _in_context(operation.span)
            return operation.context
        ids = (self._pipeline or self._open_pipeline()).ids
        if ids is None:
            # Not our provider (provider=global): no id to reserve, so the span starts now.
            operation.span = self._start_operation(
                name, operation, _CLIENT, {"faasflow.request_id": self.request_id}
            )
            operation.context = _in_context(operation.span)
            return operation.context
        node = self._nodes.get(operation.node)
        if node is not None:
            parent = node.get_span_context()
        else:
            context = self._node_context()
            if context is None:
                return None
            parent = trace.get_current_span(context).get_span_context()
        if not parent.is_valid:
            return None
        operation.reserved = SpanContext(
            parent.trace_id, ids.reserve(), False, parent.trace_flags, parent.trace_state
        )
        operation.context = _in_context(NonRecordingSpan(operation.reserved))
        return operation.context

    def _start_operation(
        self, name: str, operation: _Operation, kind: SpanKind, attributes: dict[str, Any]
    ) -> Span:
        node = self._nodes.get(operation.node)
        parent = _in_context(node) if node is not None else self._node_context()
        pipeline = self._pipeline or self._open_pipeline()
        reserved = operation.reserved
        if reserved is None or pipeline.ids is None:
            return pipeline.tracer.start_span(
                name, parent if parent is not None else _ROOT, kind, attributes,
                start_time=operation.start_ns,
            )
        pipeline.ids.preset(reserved.span_id)
        try:
            return pipeline.tracer.start_span(
                name, parent if parent is not None else _ROOT, kind, attributes,
                start_time=operation.start_ns,
            )
        finally:
            pipeline.ids.preset(0)

    def _finish_operation(
        self, name: str, node: str, attributes: Mapping[str, object], error: BaseException | None
    ) -> None:
        operation = self._operations.pop((name, node), None)
        if operation is None:
            return
        # the span's name is the operation and its parent the node: only the request id is
        # repeated, so that every span of a request can be searched by it
        values: dict[str, Any] = {"faasflow.request_id": self.request_id}
        if attributes:
            values.update(_clean(attributes))
            _add_http(values)
        calls_out = "http.request.method" in values
        if isinstance(error, FunctionError):
            calls_out = True
            if error.url:
                values.setdefault("url.full", _url_parts(error.url)[0])
            if error.status is not None:
                values.setdefault("http.response.status_code", error.status)
        span = operation.span
        if span is None:
            span = self._start_operation(
                name, operation, _CLIENT if calls_out else _INTERNAL, values
            )
        else:
            span.set_attributes(values)
        if error is not None:
            _fail(span, error)
        else:
            status = values.get("http.response.status_code")
            if type(status) is int and status >= 400:
                # HTTP client span convention: 4xx and 5xx are errors, error.type the code.
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _end_request(self) -> None:
        if self._request is not None and self._request_open:
            self._request_open = False
            self._request.end()

    def _end_leftovers(self, error: BaseException | None) -> None:
        # Anything still open when the iteration ends would never be exported.
        if self._operations:
            for name, node in list(self._operations):
                self._finish_operation(name, node, {}, error)
        if self._nodes:
            for span in self._nodes.values():
                if error is not None:
                    _fail(span, error)
                span.end()
            self._nodes.clear()
            self._node_attributes.clear()

    # the Tracer contract; every method catches its own errors (a tracer never raises)

    def request_start(self, carrier: Mapping[str, str]) -> None:
        if not self._enabled:
            return
        try:
            incoming = (self._pipeline or self._open_pipeline()).propagator.extract(
                _lower(carrier)
            )
            caller = trace.get_current_span(incoming).get_span_context()
            parent: Context | None = None
            links = None
            if caller.is_valid and self.config.incoming == "child":
                parent = incoming
            elif caller.is_valid and self.config.incoming == "link":
                links = [Link(caller)]
            self._request = self._start(
                self.flow_name or "request", parent, _SERVER,
                {"faasflow.flow": self.flow_name, "faasflow.request_id": self.request_id},
                links,
            )
            self._request_open = True
            self._parent = _in_context(self._request)
        except Exception:
            self._count_error("request_start")

    def request_continue(self, carrier: Mapping[str, str]) -> None:
        if not self._enabled:
            return
        try:
            self._remote = (self._pipeline or self._open_pipeline()).propagator.extract(
                _lower(carrier)
            )
            if self._request is None:
                self._parent = self._remote
        except Exception:
            self._count_error("request_continue")

    def request_end(self, attributes: Mapping[str, object]) -> None:
        if not self._enabled:
            return
        try:
            self._end_leftovers(None)
            if self._request is not None and self._request_open:
                if attributes:
                    self._request.set_attributes(_clean(attributes))
                self._end_request()
        except Exception:
            self._count_error("request_end")

    def request_failure(self, error: BaseException) -> None:
        if not self._enabled:
            return
        try:
            self._end_leftovers(error)
            if self._request is not None and self._request_open:
                _fail(self._request, error)
                self._end_request()
                return
            # A later iteration: the request span ended in another process, so the failure
            # gets a span of its own in the same trace.
            span = self._start(
                "request failure", self._node_context(), _INTERNAL,
                {"faasflow.flow": self.flow_name, "faasflow.request_id": self.request_id},
            )
            _fail(span, error)
            span.end()
        except Exception:
            self._count_error("request_failure")

    def node_start(self, node: str, attributes: Mapping[str, object]) -> None:
        if not self._enabled:
            return
        try:
            name = str(
                attributes.get("faasflow.node.unique_id") or attributes.get("faasflow.node")
                or node
            )
            again = self._nodes.pop(node, None)
            if again is not None:  # started twice in one iteration: close the first
                again.end()
            values: dict[str, Any] = {
                "faasflow.request_id": self.request_id, "faasflow.exec_id": node
            }
            values.update(_clean(attributes))
            self._node_attributes[node] = attributes
            self._nodes[node] = self._start(
                name, self._parent, _INTERNAL if self._request is not None else _CONSUMER,
                values,
            )
        except Exception:
            self._count_error("node_start")

    def node_end(self, node: str, attributes: Mapping[str, object]) -> None:
        if not self._enabled:
            return
        try:
            span = self._nodes.pop(node, None)
            started = self._node_attributes.pop(node, None)
            if span is None:
                return
            if attributes and attributes is not started:
                # the engine repeats the start attributes: only what changed costs anything
                if started:
                    attributes = {
                        k: v for k, v in attributes.items() if started.get(k, _UNSET) != v
                    }
                if attributes:
                    span.set_attributes(_clean(attributes))
            span.end()
            self._last_node = span
        except Exception:
            self._count_error("node_end")

    def node_failure(self, node: str, error: BaseException) -> None:
        if not self._enabled:
            return
        try:
            span = self._nodes.pop(node, None)
            self._node_attributes.pop(node, None)
            if span is not None:
                _fail(span, error)
                span.end()
                self._last_node = span
        except Exception:
            self._count_error("node_failure")

    def operation_start(
        self, operation: str, node: str, attributes: Mapping[str, object]
    ) -> None:
        if not self._enabled:
            return
        try:
            self._operations[(operation, node)] = _Operation(node, time.time_ns())
        except Exception:
            self._count_error("operation_start")

    def operation_end(self, operation: str, node: str, attributes: Mapping[str, object]) -> None:
        if not self._enabled:
            return
        try:
            self._finish_operation(operation, node, attributes, None)
        except Exception:
            self._count_error("operation_end")

    def operation_failure(self, operation: str, node: str, error: BaseException) -> None:
        if not self._enabled:
            return
        try:
            self._finish_operation(operation, node, {}, error)
        except Exception:
            self._count_error("operation_failure")

    def inject(self, carrier: dict[str, str]) -> None:
        if not self._enabled:
            return
        try:
            operations = self._operations
            if operations:
                (name, _), operation = next(reversed(operations.items()))
                context = self._operation_context(name, operation)
            else:
                context = self._node_context()
            if context is not None:
                (self._pipeline or self._open_pipeline()).propagator.inject(
                    carrier, context=context
                )
        except Exception:
            self._count_error("inject")

    def flush(self) -> None:
        if not self._enabled:
            return
        try:
            # flush() ends an iteration: its request span is complete even if the engine did
            # not say request_end (later node spans of this handle still parent to it).
            self._end_request()
            (self._pipeline or self._open_pipeline()).flush()
        except Exception:
            self._count_error("flush")


def _lower(carrier: Mapping[str, str]) -> dict[str, str]:
    # HTTP header names are case-insensitive; propagators look up lower-case names.
    return {str(k).lower(): v for k, v in carrier.items()}


def _fail(span: Span, error: BaseException) -> None:
    kind = type(error)
    qualified = kind.__qualname__ if kind.__module__ == "builtins" else (
        f"{kind.__module__}.{kind.__qualname__}"
    )
    span.set_attribute("error.type", qualified)
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{kind.__name__}: {error}"))


_SCALARS = (str, bool, int, float)
_PLAIN = frozenset(_SCALARS)


def _plain(attributes: Mapping[str, object]) -> bool:
    """Whether OpenTelemetry takes every value as it is (the usual case)."""
    return _PLAIN.issuperset(map(type, attributes.values()))


def _value(value: object) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if items and all(isinstance(i, _SCALARS) and type(i) is type(items[0]) for i in items):
            return items
        return [str(i) for i in items]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _clean(attributes: Mapping[str, object]) -> Mapping[str, Any]:
    """OpenTelemetry accepts scalars and homogeneous lists only; None is left out."""
    if _plain(attributes):
        return attributes
    return {str(k): _value(v) for k, v in attributes.items() if v is not None}


@functools.lru_cache(maxsize=256)
def _url_parts(url: str) -> tuple[str, str | None, int | None]:
    """``url.full`` without credentials, ``server.address`` and ``server.port`` of a URL
    (cached: a flow calls the same few URLs over and over)."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    if parts.username or parts.password:
        netloc = f"REDACTED:REDACTED@{parts.hostname or ''}" + (
            f":{parts.port}" if parts.port else ""
        )
        url = urlunsplit(parts._replace(netloc=netloc))
    return url, parts.hostname or None, port


def _add_http(values: dict[str, Any]) -> None:
    """What the HTTP client convention derives from the engine's attributes."""
    url = values.get("url.full")
    if url and isinstance(url, str):
        full, host, port = _url_parts(url)
        values["url.full"] = full
        if host:
            values.setdefault("server.address", host)
            if port:
                values.setdefault("server.port", port)
    retries = values.get("faasflow.retries")
    if type(retries) is int and retries > 0 and "http.request.method" in values:
        values.setdefault("http.request.resend_count", retries)
