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

A handle serves one iteration; its spans live in plain attributes behind a lock. Every public
method swallows its own errors (counted in :meth:`OpenTelemetryTracer.stats`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec
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

_P = ParamSpec("_P")
_UNSET = object()


def _guarded(
    method: Callable[Concatenate[OpenTelemetryTracer, _P], None],
) -> Callable[Concatenate[OpenTelemetryTracer, _P], None]:
    """A tracer never raises into the flow: errors are logged once and counted."""

    def wrapper(self: OpenTelemetryTracer, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception:
            self._count_error(method.__name__)

    wrapper.__name__ = method.__name__
    wrapper.__qualname__ = method.__qualname__
    wrapper.__doc__ = method.__doc__
    return wrapper


class _Operation:
    """An operation whose span is created when it ends (its kind is known only then)."""

    __slots__ = ("node", "reserved", "span", "start_ns")

    def __init__(self, node: str, start_ns: int) -> None:
        self.node = node
        self.start_ns = start_ns
        self.reserved: SpanContext | None = None
        self.span: Span | None = None


class _Spans:
    """The spans one handle (one iteration) opened."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.remote: Context | None = None
        self.request: Span | None = None
        self.request_open = False
        self.nodes: dict[str, Span] = {}
        self.node_attributes: dict[str, Mapping[str, object]] = {}
        self.last_node: Span | None = None
        self.operations: dict[tuple[str, str], _Operation] = {}


class OpenTelemetryTracer(Tracer):
    """Spans through the OpenTelemetry SDK, exported over OTLP/HTTP in batches."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._pipeline: Pipeline | None = None
        self._spans = _Spans()
        self._warned = False

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> OpenTelemetryTracer:
        """Build from resolved backend options (see :mod:`faasflow_opentelemetry.config`)."""
        config = Config.from_options(options)
        if config.provider == "own" and not config.disabled:
            check_propagators(config.propagators)  # fail at start-up, not on the first request
        return cls(config)

    def scoped(self, flow_name: str, request_id: str) -> OpenTelemetryTracer:
        handle = OpenTelemetryTracer(self.config)
        handle.configure(flow_name, request_id)
        return handle

    # process-wide state

    @property
    def enabled(self) -> bool:
        return not self.config.disabled

    @property
    def pipeline(self) -> Pipeline:
        """The shared pipeline of this flow's service name (built on first use)."""
        if self._pipeline is None:
            self._pipeline = pipeline_for(self.config, self.config.service_for(self.flow_name))
        return self._pipeline

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
        with contextlib.suppress(Exception):  # even building the pipeline may have failed
            self.pipeline.errors += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "opentelemetry tracer: %s failed for request %s of flow %s; the flow goes on, "
                "this is reported once per iteration", where, self.request_id, self.flow_name,
                exc_info=True,
            )

    # span helpers (called with the lock held)

    def _start(
        self,
        name: str,
        parent: Context | None,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        *,
        start_ns: int | None = None,
        links: list[Link] | None = None,
    ) -> Span:
        return self.pipeline.tracer.start_span(
            name,
            context=parent if parent is not None else Context(),
            kind=kind,
            attributes=_clean(attributes),
            links=links,
            start_time=start_ns,
        )

    def _node_context(self) -> Context | None:
        """The context of the innermost node: open, else last ended, else request, else what
        came in."""
        spans = self._spans
        if spans.nodes:
            return trace.set_span_in_context(next(reversed(spans.nodes.values())))
        for span in (spans.last_node, spans.request):
            if span is not None:
                return trace.set_span_in_context(span)
        return spans.remote

    def _operation_parent(self, operation: _Operation) -> Context | None:
        node = self._spans.nodes.get(operation.node)
        return trace.set_span_in_context(node) if node is not None else self._node_context()

    def _operation_context(self, name: str, operation: _Operation) -> Context | None:
        """What a call made by a running operation carries: its (future) span."""
        if operation.span is not None:
            return trace.set_span_in_context(operation.span)
        parent = self._operation_parent(operation)
        ids = self.pipeline.ids
        if ids is None:
            # Not our provider (provider=global): no id to reserve, so the span starts now.
            operation.span = self._start_operation(name, operation, SpanKind.CLIENT)
            return trace.set_span_in_context(operation.span)
        if operation.reserved is None:
            context = trace.get_current_span(parent).get_span_context()
            if not context.is_valid:
                return parent
            operation.reserved = SpanContext(
                context.trace_id,
                ids.reserve(),
                is_remote=False,
                trace_flags=context.trace_flags,
                trace_state=context.trace_state,
            )
        return trace.set_span_in_context(NonRecordingSpan(operation.reserved))

    def _start_operation(self, name: str, operation: _Operation, kind: SpanKind) -> Span:
        # the span's name is the operation and its parent the node: only the request id is
        # repeated, so that every span of a request can be searched by it
        attributes = {"faasflow.request_id": self.request_id}
        parent = self._operation_parent(operation)
        ids = self.pipeline.ids
        preset = (
            ids.preset(operation.reserved.span_id)
            if ids is not None and operation.reserved is not None
            else contextlib.nullcontext()
        )
        with preset:
            return self._start(name, parent, kind, attributes, start_ns=operation.start_ns)

    def _finish_operation(
        self, name: str, node: str, attributes: Mapping[str, object], error: BaseException | None
    ) -> None:
        operation = self._spans.operations.pop((name, node), None)
        if operation is None:
            return
        http = _http_attributes(attributes)
        if isinstance(error, FunctionError):
            if error.url:
                http.setdefault("url.full", _redact(error.url))
            if error.status is not None:
                http.setdefault("http.response.status_code", error.status)
        calls_out = "http.request.method" in http or isinstance(error, FunctionError)
        span = operation.span or self._start_operation(
            name, operation, SpanKind.CLIENT if calls_out else SpanKind.INTERNAL
        )
        span.set_attributes(http)
        if error is not None:
            _fail(span, error)
        else:
            status = http.get("http.response.status_code")
            if isinstance(status, int) and status >= 400:
                # HTTP client span convention: 4xx and 5xx are errors, error.type the code.
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _end_request(self) -> None:
        spans = self._spans
        if spans.request is not None and spans.request_open:
            spans.request.end()
            spans.request_open = False

    def _end_leftovers(self, error: BaseException | None) -> None:
        # Anything still open when the iteration ends would never be exported.
        spans = self._spans
        for name, node in list(spans.operations):
            self._finish_operation(name, node, {}, error)
        for span in spans.nodes.values():
            if error is not None:
                _fail(span, error)
            span.end()
        spans.nodes.clear()
        spans.node_attributes.clear()

    # the Tracer contract

    @_guarded
    def request_start(self, carrier: Mapping[str, str]) -> None:
        if not self.enabled:
            return
        incoming = self.pipeline.propagator.extract(_lower(carrier))
        caller = trace.get_current_span(incoming).get_span_context()
        parent: Context | None = None
        links = None
        if caller.is_valid and self.config.incoming == "child":
            parent = incoming
        elif caller.is_valid and self.config.incoming == "link":
            links = [Link(caller)]
        with self._spans.lock:
            self._spans.request = self._start(
                self.flow_name or "request", parent, SpanKind.SERVER,
                {"faasflow.flow": self.flow_name, "faasflow.request_id": self.request_id},
                links=links,
            )
            self._spans.request_open = True

    @_guarded
    def request_continue(self, carrier: Mapping[str, str]) -> None:
        if not self.enabled:
            return
        context = self.pipeline.propagator.extract(_lower(carrier))
        with self._spans.lock:
            self._spans.remote = context

    @_guarded
    def request_end(self, attributes: Mapping[str, object]) -> None:
        if not self.enabled:
            return
        with self._spans.lock:
            self._end_leftovers(None)
            request = self._spans.request
            if request is not None and self._spans.request_open:
                request.set_attributes(_clean(attributes))
            self._end_request()

    @_guarded
    def request_failure(self, error: BaseException) -> None:
        if not self.enabled:
            return
        with self._spans.lock:
            self._end_leftovers(error)
            spans = self._spans
            if spans.request is not None and spans.request_open:
                _fail(spans.request, error)
                self._end_request()
                return
            # A later iteration: the request span ended in another process, so the failure
            # gets a span of its own in the same trace.
            span = self._start(
                "request failure", self._node_context(), SpanKind.INTERNAL,
                {"faasflow.flow": self.flow_name, "faasflow.request_id": self.request_id},
            )
            _fail(span, error)
            span.end()

    @_guarded
    def node_start(self, node: str, attributes: Mapping[str, object]) -> None:
        if not self.enabled:
            return
        name = str(
            attributes.get("faasflow.node.unique_id") or attributes.get("faasflow.node") or node
        )
        parent: Context | None
        with self._spans.lock:
            spans = self._spans
            if spans.request is not None:
                parent, kind = trace.set_span_in_context(spans.request), SpanKind.INTERNAL
            else:
                parent, kind = spans.remote, SpanKind.CONSUMER
            again = spans.nodes.pop(node, None)
            if again is not None:  # started twice in one iteration: close the first
                again.end()
            spans.node_attributes[node] = attributes
            spans.nodes[node] = self._start(
                name, parent, kind,
                {"faasflow.request_id": self.request_id, "faasflow.exec_id": node,
                 **attributes},
            )

    @_guarded
    def node_end(self, node: str, attributes: Mapping[str, object]) -> None:
        if not self.enabled:
            return
        with self._spans.lock:
            span = self._spans.nodes.pop(node, None)
            started = self._spans.node_attributes.pop(node, {})
            if span is not None:
                # the engine repeats the start attributes: only what changed costs anything
                changed = {k: v for k, v in attributes.items() if started.get(k, _UNSET) != v}
                if changed:
                    span.set_attributes(_clean(changed))
                span.end()
                self._spans.last_node = span

    @_guarded
    def node_failure(self, node: str, error: BaseException) -> None:
        if not self.enabled:
            return
        with self._spans.lock:
            span = self._spans.nodes.pop(node, None)
            self._spans.node_attributes.pop(node, None)
            if span is not None:
                _fail(span, error)
                span.end()
                self._spans.last_node = span

    @_guarded
    def operation_start(
        self, operation: str, node: str, attributes: Mapping[str, object]
    ) -> None:
        if not self.enabled:
            return
        with self._spans.lock:
            self._spans.operations[(operation, node)] = _Operation(node, time.time_ns())

    @_guarded
    def operation_end(self, operation: str, node: str, attributes: Mapping[str, object]) -> None:
        if not self.enabled:
            return
        with self._spans.lock:
            self._finish_operation(operation, node, attributes, None)

    @_guarded
    def operation_failure(self, operation: str, node: str, error: BaseException) -> None:
        if not self.enabled:
            return
        with self._spans.lock:
            self._finish_operation(operation, node, {}, error)

    @_guarded
    def inject(self, carrier: dict[str, str]) -> None:
        if not self.enabled:
            return
        context: Context | None
        with self._spans.lock:
            operations = self._spans.operations
            if operations:
                (name, _), operation = next(reversed(operations.items()))
                context = self._operation_context(name, operation)
            else:
                context = self._node_context()
        if context is not None:
            self.pipeline.propagator.inject(carrier, context=context)

    @_guarded
    def flush(self) -> None:
        if not self.enabled:
            return
        with self._spans.lock:
            # flush() ends an iteration: its request span is complete even if the engine did
            # not say request_end (later node spans of this handle still parent to it).
            self._end_request()
        self.pipeline.flush()


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


def _clean(attributes: Mapping[str, object]) -> dict[str, Any]:
    """OpenTelemetry accepts scalars and homogeneous lists only; None is left out."""
    if all(type(v) in _PLAIN for v in attributes.values()):
        return dict(attributes)  # the usual case: nothing to convert
    return {str(k): _value(v) for k, v in attributes.items() if v is not None}


def _redact(url: str) -> str:
    """``url.full`` must not carry credentials."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    netloc = f"REDACTED:REDACTED@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _http_attributes(attributes: Mapping[str, object]) -> dict[str, Any]:
    """The engine's attributes plus what the HTTP client convention derives from them."""
    cleaned = _clean(attributes)
    url = cleaned.get("url.full")
    if isinstance(url, str) and url:
        parts = urlsplit(url)
        if parts.username or parts.password:
            cleaned["url.full"] = _redact(url)
        if parts.hostname:
            cleaned.setdefault("server.address", parts.hostname)
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
            if port:
                cleaned.setdefault("server.port", port)
    retries = cleaned.get("faasflow.retries")
    if "http.request.method" in cleaned and isinstance(retries, int) and retries > 0:
        cleaned.setdefault("http.request.resend_count", retries)
    return cleaned
