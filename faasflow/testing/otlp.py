"""An OTLP/HTTP trace receiver for tests: real protocol, no collector needed.

:class:`OtlpReceiver` listens on ``127.0.0.1`` (port 0 by default) in a background thread,
decodes the protobuf ``ExportTraceServiceRequest`` bodies any OTLP/HTTP exporter sends to
``/v1/traces`` and keeps every span as a :class:`ReceivedSpan`. Tests point a tracer (in this
process or in worker processes) at :attr:`OtlpReceiver.endpoint` and then wait for spans::

    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        ...  # run flows
        spans = receiver.wait_for(lambda spans: len(spans) >= 4)

``opentelemetry-proto`` is imported only here, so the rest of :mod:`faasflow.testing` works
without it.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OtlpReceiver", "ReceivedEvent", "ReceivedSpan"]

TRACES_PATH = "/v1/traces"

_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUSES = {0: "unset", 1: "ok", 2: "error"}


@attrs.frozen
class ReceivedEvent:
    """A span event (``exception`` events carry ``exception.type`` and ``exception.message``)."""

    name: str
    attributes: Mapping[str, Any]


@attrs.frozen
class ReceivedSpan:
    """One span as it arrived over the wire; ids are lower-case hex, ``parent_id`` is ``""``
    for a root span."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: str
    """``internal``, ``server``, ``client``, ``producer``, ``consumer`` or ``unspecified``."""
    status: str
    """``unset``, ``ok`` or ``error``."""
    status_message: str
    attributes: Mapping[str, Any]
    service_name: str
    resource: Mapping[str, Any]
    scope: str
    start_ns: int
    end_ns: int
    events: tuple[ReceivedEvent, ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    """``(trace_id, span_id)`` of every linked span."""

    @property
    def is_root(self) -> bool:
        return not self.parent_id


class OtlpReceiver:
    """A real OTLP/HTTP endpoint on 127.0.0.1 that collects the spans it is sent.

    ``status`` makes it answer every export with that HTTP status instead of 200 (e.g. 503 to
    play an overloaded collector); spans of refused exports are not kept.
    """

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self.exports = 0
        """Export requests accepted (HTTP 200)."""
        self.refused = 0
        """Export requests answered with :attr:`status`."""
        self.status = 200
        self.last_headers: dict[str, str] = {}
        """Headers of the last accepted export request, names in lower case."""
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> OtlpReceiver:
        """Start serving in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                name="otlp-receiver", daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (exporters then see connection errors)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Base URL, the value of ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        """Full URL, the value of ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``."""
        return self.endpoint + TRACES_PATH

    # reading what arrived

    @property
    def spans(self) -> list[ReceivedSpan]:
        """A snapshot of every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        """Forget the spans received so far."""
        with self._lock:
            self._spans.clear()

    def wait_for(
        self,
        condition: Callable[[list[ReceivedSpan]], bool] | int,
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Block until ``condition(spans)`` holds (an ``int`` means "at least that many spans")
        and return the spans; raise :class:`TimeoutError` listing what did arrive."""
        if isinstance(condition, int):
            count = condition

            def condition(spans: list[ReceivedSpan]) -> bool:
                return len(spans) >= count

        deadline = time.monotonic() + timeout
        with self._lock:
            while not condition(list(self._spans)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = ", ".join(f"{s.name}[{s.span_id[:6]}]" for s in self._spans) or "none"
                    raise TimeoutError(
                        f"OTLP receiver at {self.endpoint}: condition not met after {timeout}s; "
                        f"{len(self._spans)} spans received: {got}"
                    )
                self._lock.wait(remaining)
            return list(self._spans)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """Spans received so far, grouped by trace id."""
        grouped: dict[str, list[ReceivedSpan]] = {}
        for span in self.spans:
            grouped.setdefault(span.trace_id, []).append(span)
        return grouped

    def named(self, name: str) -> list[ReceivedSpan]:
        """Spans received so far with this name."""
        return [s for s in self.spans if s.name == name]

    # called by the request handler

    def _accept(self, body: bytes, headers: Mapping[str, str]) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = list(_decode(request))
        with self._lock:
            self.last_headers = {k.lower(): v for k, v in headers.items()}
            self._spans.extend(spans)
            self.exports += 1
            self._lock.notify_all()


def _decode(request: ExportTraceServiceRequest) -> Iterator[ReceivedSpan]:
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_id=span.parent_span_id.hex(),
                    kind=_KINDS.get(span.kind, str(span.kind)),
                    status=_STATUSES.get(span.status.code, str(span.status.code)),
                    status_message=span.status.message,
                    attributes=_attributes(span.attributes),
                    service_name=service,
                    resource=resource,
                    scope=scope,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    events=tuple(
                        ReceivedEvent(e.name, _attributes(e.attributes)) for e in span.events
                    ),
                    links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                )


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)


def _handler_for(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Keep-alive exporters stall ~40 ms per request on Nagle + delayed ACK otherwise.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path.split("?")[0] != TRACES_PATH:
                self._answer(404, b"only /v1/traces is served", "text/plain")
                return
            if receiver.status != 200:
                with receiver._lock:
                    receiver.refused += 1
                self._answer(receiver.status, b"refused by test", "text/plain")
                return
            if "protobuf" not in (self.headers.get("Content-Type") or ""):
                self._answer(415, b"only application/x-protobuf is decoded", "text/plain")
                return
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            try:
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                receiver._accept(body, dict(self.headers.items()))
            except Exception as exc:  # protobuf's DecodeError, gzip/zlib errors: all a bad body
                self._answer(400, f"undecodable export: {exc}".encode(), "text/plain")
                return
            self._answer(
                200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
            )

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
