"""The ``opentracing`` Tracer: faasflow's events as spans of the user's OpenTracing tracer.

The span tree is faas-flow's: a request span (``span.kind=server``) opened by the first
iteration, one span per node (a child of the request span, or of the context carried by the
forwarded iteration) and one per operation (a child of its node; ``span.kind=client`` with the
``http.*`` tags when it called a function or URL). Propagation uses the tracer's own
``HTTP_HEADERS`` format (``uber-trace-id`` for Jaeger's client, W3C ``traceparent`` for
OpenTelemetry's shim). Tags and error logs follow the OpenTracing semantic conventions.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec
from urllib.parse import urlsplit, urlunsplit

import opentracing
from opentracing.propagation import Format

from faasflow import ConfigurationError, FunctionError, Tracer
from faasflow.interfaces import Options

__all__ = ["OpenTracingTracer", "load_factory"]

log = logging.getLogger("faasflow.tracer.opentracing")

_P = ParamSpec("_P")

#: The engine reports HTTP calls with OpenTelemetry's attribute names; OpenTracing's are these.
_HTTP_TAGS = {
    "http.request.method": "http.method",
    "url.full": "http.url",
    "http.response.status_code": "http.status_code",
}
INCOMING_MODES = ("child", "ignore")


def _guarded(
    method: Callable[Concatenate[OpenTracingTracer, _P], None],
) -> Callable[Concatenate[OpenTracingTracer, _P], None]:
    """A tracer never raises into the flow: errors are logged once and counted."""

    def wrapper(self: OpenTracingTracer, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception:
            self._count_error(method.__name__)

    wrapper.__name__ = method.__name__
    wrapper.__qualname__ = method.__qualname__
    wrapper.__doc__ = method.__doc__
    return wrapper


def load_factory(spec: str) -> Callable[..., Any]:
    """``"package.module:callable"`` -> the callable; errors name the option and the fix."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"opentracing tracer: factory={spec!r} must look like 'package.module:callable' "
            "(set FAASFLOW_OPENTRACING_FACTORY)"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"opentracing tracer: cannot import {module_name!r} named by "
            f"FAASFLOW_OPENTRACING_FACTORY={spec!r}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(
                f"opentracing tracer: {module_name!r} has no {attribute!r} "
                f"(FAASFLOW_OPENTRACING_FACTORY={spec!r})"
            ) from None
    if not callable(target):
        raise ConfigurationError(
            f"opentracing tracer: {spec!r} is not callable (FAASFLOW_OPENTRACING_FACTORY)"
        )
    return target  # type: ignore[no-any-return]


class _Shared:
    """What every handle of one backend object shares: the user's tracers, one per service."""

    def __init__(self, factory: Callable[..., Any] | None, service_name: str | None) -> None:
        self.factory = factory
        self.service_name = service_name
        self.lock = threading.Lock()
        self.tracers: dict[str, opentracing.Tracer] = {}
        self.errors = 0

    def tracer_for(self, flow_name: str) -> opentracing.Tracer:
        service = self.service_name or flow_name or "faasflow"
        tracer = self.tracers.get(service)
        if tracer is not None:
            return tracer
        with self.lock:
            tracer = self.tracers.get(service)
            if tracer is None:
                tracer = self.tracers[service] = self._build(service)
        return tracer

    def _build(self, service: str) -> opentracing.Tracer:
        if self.factory is None:
            return opentracing.global_tracer()
        wants_name = bool(inspect.signature(self.factory).parameters)
        tracer = self.factory(service) if wants_name else self.factory()
        if not isinstance(tracer, opentracing.Tracer):
            raise ConfigurationError(
                f"opentracing tracer: the factory returned {type(tracer).__name__}, not an "
                "opentracing.Tracer (check FAASFLOW_OPENTRACING_FACTORY)"
            )
        return tracer


class _Spans:
    """The spans one handle (one iteration) opened."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.remote: opentracing.SpanContext | None = None
        self.request: opentracing.Span | None = None
        self.request_open = False
        self.nodes: dict[str, opentracing.Span] = {}
        self.last_node: opentracing.Span | None = None
        self.operations: dict[tuple[str, str], opentracing.Span] = {}


class OpenTracingTracer(Tracer):
    """Spans through an ``opentracing.Tracer`` the application provides."""

    def __init__(
        self,
        factory: Callable[..., Any] | None = None,
        *,
        service_name: str | None = None,
        incoming: str = "child",
    ) -> None:
        self.incoming = incoming
        self._shared = _Shared(factory, service_name)
        self._spans = _Spans()
        self._warned = False

    @classmethod
    def from_options(cls, options: Options) -> OpenTracingTracer:
        """Options ``factory`` ("module:callable"), ``service_name`` and ``incoming``."""
        spec = (options.get("factory") or "").strip()
        incoming = (options.get("incoming") or "child").strip().lower()
        if incoming not in INCOMING_MODES:
            raise ConfigurationError(
                f"opentracing tracer: incoming={incoming!r} is not one of "
                f"{', '.join(INCOMING_MODES)} (set FAASFLOW_OPENTRACING_INCOMING)"
            )
        return cls(
            load_factory(spec) if spec else None,
            service_name=(options.get("service_name") or "").strip() or None,
            incoming=incoming,
        )

    def scoped(self, flow_name: str, request_id: str) -> OpenTracingTracer:
        handle = object.__new__(OpenTracingTracer)
        handle.incoming = self.incoming
        handle._shared = self._shared
        handle._spans = _Spans()
        handle._warned = False
        handle.configure(flow_name, request_id)
        return handle

    @property
    def tracer(self) -> opentracing.Tracer:
        """The application's tracer for this flow (built by the factory on first use)."""
        return self._shared.tracer_for(self.flow_name)

    @property
    def errors(self) -> int:
        """Tracer calls that raised inside the tracer and were swallowed."""
        return self._shared.errors

    def close(self) -> None:
        """Close the tracers the factory built (a tracer from elsewhere is left alone)."""
        if self._shared.factory is None:
            return
        for tracer in list(self._shared.tracers.values()):
            closer = getattr(tracer, "close", None)
            if callable(closer):
                with contextlib.suppress(Exception):
                    closer()
        self._shared.tracers.clear()

    def _count_error(self, where: str) -> None:
        self._shared.errors += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "opentracing tracer: %s failed for request %s of flow %s; the flow goes on, "
                "this is reported once per iteration", where, self.request_id, self.flow_name,
                exc_info=True,
            )

    # helpers (called with the lock held)

    def _start(
        self,
        name: str,
        parent: opentracing.Span | opentracing.SpanContext | None,
        tags: Mapping[str, object],
    ) -> opentracing.Span:
        return self.tracer.start_span(
            operation_name=name,
            child_of=parent,
            tags={"component": "faasflow", **_clean(tags)},
            ignore_active_span=True,
        )

    def _innermost(self) -> opentracing.Span | opentracing.SpanContext | None:
        spans = self._spans
        if spans.operations:
            return next(reversed(spans.operations.values()))
        if spans.nodes:
            return next(reversed(spans.nodes.values()))
        return spans.last_node or spans.request or spans.remote

    def _finish_request(self) -> None:
        spans = self._spans
        if spans.request is not None and spans.request_open:
            spans.request.finish()
            spans.request_open = False

    def _finish_leftovers(self, error: BaseException | None) -> None:
        spans = self._spans
        for span in [*spans.operations.values(), *spans.nodes.values()]:
            if error is not None:
                _fail(span, error)
            span.finish()
        spans.operations.clear()
        spans.nodes.clear()

    # the Tracer contract

    @_guarded
    def request_start(self, carrier: Mapping[str, str]) -> None:
        parent = None
        if self.incoming == "child" and carrier:
            parent = self._extract(carrier)
        with self._spans.lock:
            self._spans.request = self._start(
                self.flow_name or "request", parent,
                {"span.kind": "server", "faasflow.flow": self.flow_name,
                 "faasflow.request_id": self.request_id, "request": self.request_id},
            )
            self._spans.request_open = True

    def _extract(self, carrier: Mapping[str, str]) -> opentracing.SpanContext | None:
        lowered = {str(k).lower(): v for k, v in carrier.items()}
        try:
            context: opentracing.SpanContext | None = self.tracer.extract(
                Format.HTTP_HEADERS, lowered
            )
        except (opentracing.SpanContextCorruptedException, opentracing.UnsupportedFormatException):
            return None
        return context

    @_guarded
    def request_continue(self, carrier: Mapping[str, str]) -> None:
        context = self._extract(carrier)
        with self._spans.lock:
            self._spans.remote = context

    @_guarded
    def request_end(self, attributes: Mapping[str, object]) -> None:
        with self._spans.lock:
            self._finish_leftovers(None)
            if self._spans.request is not None and self._spans.request_open:
                for key, value in _clean(attributes).items():
                    self._spans.request.set_tag(key, value)
            self._finish_request()

    @_guarded
    def request_failure(self, error: BaseException) -> None:
        with self._spans.lock:
            self._finish_leftovers(error)
            spans = self._spans
            if spans.request is not None and spans.request_open:
                _fail(spans.request, error)
                self._finish_request()
                return
            # The request span ended in another process: the failure gets a span of its own.
            span = self._start(
                "request failure", self._innermost(),
                {"faasflow.flow": self.flow_name, "faasflow.request_id": self.request_id},
            )
            _fail(span, error)
            span.finish()

    @_guarded
    def node_start(self, node: str, attributes: Mapping[str, object]) -> None:
        name = str(
            attributes.get("faasflow.node.unique_id") or attributes.get("faasflow.node") or node
        )
        with self._spans.lock:
            spans = self._spans
            parent: opentracing.Span | opentracing.SpanContext | None = spans.request
            tags: dict[str, object] = {}
            if parent is None:
                # a forwarded iteration: faas-flow made these RPC server spans
                parent, tags = spans.remote, {"span.kind": "consumer"}
            spans.nodes[node] = self._start(name, parent, {
                **tags, "faasflow.flow": self.flow_name, "faasflow.request_id": self.request_id,
                "faasflow.exec_id": node, **attributes,
            })

    @_guarded
    def node_end(self, node: str, attributes: Mapping[str, object]) -> None:
        with self._spans.lock:
            span = self._spans.nodes.pop(node, None)
            if span is not None:
                for key, value in _clean(attributes).items():
                    span.set_tag(key, value)
                span.finish()
                self._spans.last_node = span

    @_guarded
    def node_failure(self, node: str, error: BaseException) -> None:
        with self._spans.lock:
            span = self._spans.nodes.pop(node, None)
            if span is not None:
                _fail(span, error)
                span.finish()
                self._spans.last_node = span

    @_guarded
    def operation_start(
        self, operation: str, node: str, attributes: Mapping[str, object]
    ) -> None:
        with self._spans.lock:
            parent = self._spans.nodes.get(node) or self._innermost()
            self._spans.operations[(operation, node)] = self._start(operation, parent, {
                "faasflow.request_id": self.request_id, "faasflow.operation": operation,
                "faasflow.exec_id": node, **attributes,
            })

    @_guarded
    def operation_end(self, operation: str, node: str, attributes: Mapping[str, object]) -> None:
        with self._spans.lock:
            span = self._spans.operations.pop((operation, node), None)
            if span is None:
                return
            tags = _http_tags(attributes)
            for key, value in tags.items():
                span.set_tag(key, value)
            status = tags.get("http.status_code")
            if isinstance(status, int) and status >= 400:
                span.set_tag("error", True)
            span.finish()

    @_guarded
    def operation_failure(self, operation: str, node: str, error: BaseException) -> None:
        with self._spans.lock:
            span = self._spans.operations.pop((operation, node), None)
            if span is None:
                return
            if isinstance(error, FunctionError):
                span.set_tag("span.kind", "client")
                if error.url:
                    span.set_tag("http.url", _redact(error.url))
                if error.status is not None:
                    span.set_tag("http.status_code", error.status)
            _fail(span, error)
            span.finish()

    @_guarded
    def inject(self, carrier: dict[str, str]) -> None:
        with self._spans.lock:
            current = self._innermost()
        if current is None:
            return
        context = current.context if isinstance(current, opentracing.Span) else current
        self.tracer.inject(context, Format.HTTP_HEADERS, carrier)

    @_guarded
    def flush(self) -> None:
        with self._spans.lock:
            # the iteration is over: its request span is complete (see request_end)
            self._finish_request()


def _fail(span: opentracing.Span, error: BaseException) -> None:
    span.set_tag("error", True)
    span.log_kv({
        "event": "error",
        "error.kind": type(error).__name__,
        "message": str(error),
        "stack": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
    })


_SCALARS = (str, bool, int, float)


def _clean(tags: Mapping[str, object]) -> dict[str, Any]:
    """Tag values a tracer can store: scalars as they are, anything else as text."""
    cleaned: dict[str, Any] = {}
    for key, value in tags.items():
        if value is None:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        cleaned[str(key)] = text if isinstance(text, _SCALARS) else str(text)
    return cleaned


def _redact(url: str) -> str:
    """Credentials in a URL never reach a tag."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    netloc = f"REDACTED:REDACTED@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _http_tags(attributes: Mapping[str, object]) -> dict[str, Any]:
    tags = _clean(attributes)
    if "http.request.method" in tags:
        tags["span.kind"] = "client"
    if isinstance(tags.get("url.full"), str):
        tags["url.full"] = _redact(tags["url.full"])
    return {_HTTP_TAGS.get(key, key): value for key, value in tags.items()}
