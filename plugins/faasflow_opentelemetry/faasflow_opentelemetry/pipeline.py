"""One export pipeline per process per configuration and service name.

A :class:`Pipeline` owns a TracerProvider, its BatchSpanProcessor and an OTLP/HTTP exporter
wrapped in :class:`GuardedExporter`, which swallows and counts every failure and, after one,
drops batches without touching the network for a growing pause: a collector outage costs the
flow nothing and costs the export thread one timeout per pause, not one per batch.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from importlib import metadata

import attrs
from opentelemetry import trace
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)

from faasflow import ConfigurationError
from faasflow_opentelemetry.config import BACKEND, Config

__all__ = [
    "ExportStats",
    "GuardedExporter",
    "Pipeline",
    "ReservingIdGenerator",
    "check_propagators",
    "pipeline_for",
    "shutdown_all",
    "stats_for",
]

log = logging.getLogger("faasflow.tracer.opentelemetry")

INSTRUMENTATION_SCOPE = "faasflow"
_PAUSE_FIRST = 1.0
_PAUSE_MAX = 30.0
#: How long the background flush waits for more spans before exporting (seconds).
FLUSH_LINGER = 0.05


@attrs.frozen
class ExportStats:
    """What happened to the spans of a tracer since the process started."""

    exported: int = 0
    """Spans the collector accepted."""
    dropped: int = 0
    """Spans lost: refused or unreachable collector, or skipped during an outage pause."""
    failed_exports: int = 0
    """Export requests that failed (each may have carried many spans)."""
    errors: int = 0
    """Tracer calls that raised inside the tracer and were swallowed."""

    def __add__(self, other: ExportStats) -> ExportStats:
        pairs = zip(attrs.astuple(self), attrs.astuple(other), strict=True)
        return ExportStats(*(a + b for a, b in pairs))


class GuardedExporter(SpanExporter):
    """Wraps a real exporter: never raises, counts, and pauses exports after a failure."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self.exported = 0
        self.dropped = 0
        self.failed_exports = 0
        self._pause = 0.0
        self._paused_until = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if time.monotonic() < self._paused_until:
            with self._lock:
                self.dropped += len(spans)
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:
            log.debug("span export to %s raised", self.endpoint, exc_info=True)
            result = SpanExportResult.FAILURE
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
                if self._pause:
                    log.warning(
                        "%s tracer: exporting spans to %s works again (%d spans dropped so far)",
                        BACKEND, self.endpoint, self.dropped,
                    )
                self._pause = 0.0
                return result
            self.dropped += len(spans)
            self.failed_exports += 1
            if not self._pause:
                log.warning(
                    "%s tracer: exporting spans to %s failed; spans are dropped until it "
                    "answers again (check OTEL_EXPORTER_OTLP_ENDPOINT and the collector)",
                    BACKEND, self.endpoint,
                )
            self._pause = min(_PAUSE_MAX, self._pause * 2 or _PAUSE_FIRST)
            self._paused_until = time.monotonic() + self._pause
        return result

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception:
            log.debug("exporter shutdown raised", exc_info=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _Preset(threading.local):
    span_id = 0


class ReservingIdGenerator(RandomIdGenerator):
    """Lets a span id be handed out before its span exists.

    An operation's trace context must go into the function call's headers before the call,
    but whether the operation is an HTTP client span is only known when it ends; the span is
    therefore created at the end, with the id reserved when the context was injected.
    """

    def __init__(self) -> None:
        self._preset = _Preset()

    def generate_span_id(self) -> int:
        preset = self._preset.span_id
        if preset:
            self._preset.span_id = 0
            return preset
        return super().generate_span_id()

    def reserve(self) -> int:
        """A fresh span id for a span to be started later after :meth:`preset`."""
        return super().generate_span_id()

    def preset(self, span_id: int) -> None:
        """The next span started in this thread gets ``span_id`` (0: a random id again)."""
        self._preset.span_id = span_id


class _Flusher:
    """Starts an export soon after an iteration ends, without making the iteration wait.

    After a wake-up it lingers briefly so that the spans of iterations ending close together
    (a busy worker) go out in one export request rather than one request each.
    """

    def __init__(self, processor: BatchSpanProcessor, linger: float) -> None:
        self._processor = processor
        self._linger = linger
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if hasattr(os, "register_at_fork"):
            # threads do not survive fork: a child starts its own on first use
            after_fork = weakref.WeakMethod(self._forget_thread)
            os.register_at_fork(after_in_child=lambda: _call(after_fork))

    def _forget_thread(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None

    def request(self) -> None:
        if self._wake.is_set():  # an export is already on its way: the usual case when busy
            return
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="faasflow-otel-flush", daemon=True
                    )
                    self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stop.wait(self._linger):
                return
            self._wake.clear()
            try:
                self._processor.force_flush()
            except Exception:
                log.debug("background flush raised", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def _call(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    bound = method()
    if bound is not None:
        bound()


def _sampler(config: Config) -> Sampler:
    ratio = config.sampler_arg
    if config.sampler == "always_on":
        return ALWAYS_ON
    if config.sampler == "always_off":
        return ALWAYS_OFF
    if config.sampler == "traceidratio":
        return TraceIdRatioBased(ratio)
    if config.sampler == "parentbased_always_off":
        return ParentBased(ALWAYS_OFF)
    if config.sampler == "parentbased_traceidratio":
        return ParentBasedTraceIdRatio(ratio)
    return ParentBased(ALWAYS_ON)


@functools.cache
def _propagator_entries(names: tuple[str, ...]) -> tuple[metadata.EntryPoint, ...]:
    # cached: scanning every installed distribution's entry points takes milliseconds
    found = {ep.name: ep for ep in metadata.entry_points(group="opentelemetry_propagator")}
    entries = []
    for name in names:
        entry = found.get(name)
        if entry is None:
            raise ConfigurationError(
                f"{BACKEND} tracer: propagator {name!r} is not installed; installed: "
                f"{', '.join(sorted(found)) or 'none'} (set OTEL_PROPAGATORS, e.g. "
                "tracecontext,baggage, or install the propagator's package)"
            )
        entries.append(entry)
    return tuple(entries)


def check_propagators(names: tuple[str, ...]) -> None:
    """Raise ConfigurationError unless every named propagator is installed."""
    _propagator_entries(names)


def _propagator(names: tuple[str, ...]) -> TextMapPropagator:
    return CompositePropagator([entry.load()() for entry in _propagator_entries(names)])


@functools.cache
def _sdk_version() -> str:
    try:
        return metadata.version("opentelemetry-sdk")
    except metadata.PackageNotFoundError:  # pragma: no cover - the SDK is a dependency
        return "unknown"


def _resource(config: Config, service_name: str) -> Resource:
    attributes: dict[str, str] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": _sdk_version(),
    }
    attributes.update(config.resource_attributes)
    attributes["service.name"] = service_name
    return Resource(attributes)


class Pipeline:
    """The provider, tracer, propagator and counters shared by every handle of one service."""

    def __init__(self, config: Config, service_name: str) -> None:
        self.config = config
        self.service_name = service_name
        self.exporter: GuardedExporter | None = None
        self.provider: TracerProvider | None = None
        self._flusher: _Flusher | None = None
        self.ids: ReservingIdGenerator | None = None
        self.errors = 0
        self.closed = False
        if config.provider == "global":
            self.tracer = trace.get_tracer(INSTRUMENTATION_SCOPE, _faasflow_version())
            self.propagator = get_global_textmap()
            return
        self.propagator = _propagator(config.propagators)
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        otlp = OTLPSpanExporter(
            endpoint=config.traces_endpoint,
            certificate_file=config.certificate,
            client_key_file=config.client_key,
            client_certificate_file=config.client_certificate,
            headers=dict(config.headers),
            timeout=config.timeout,
            compression=Compression.Gzip if config.compression == "gzip"
            else Compression.NoCompression,
        )
        self.exporter = GuardedExporter(otlp, config.traces_endpoint)
        processor = BatchSpanProcessor(
            self.exporter,
            max_queue_size=config.max_queue_size,
            schedule_delay_millis=config.schedule_delay * 1000,
            max_export_batch_size=config.max_export_batch_size,
            export_timeout_millis=config.timeout * 1000,
        )
        self.ids = ReservingIdGenerator()
        self.provider = TracerProvider(
            sampler=_sampler(config),
            resource=_resource(config, service_name),
            id_generator=self.ids,
        )
        self.provider.add_span_processor(processor)
        if config.flush == "background":
            self._flusher = _Flusher(processor, min(FLUSH_LINGER, config.schedule_delay))
        self.tracer = self.provider.get_tracer(INSTRUMENTATION_SCOPE, _faasflow_version())

    def flush(self) -> None:
        """With ``flush=background``, ask for an export soon; never waits for it. Otherwise
        nothing: the processor exports on its schedule or when a batch is full."""
        if self._flusher is not None:
            self._flusher.request()

    def stats(self) -> ExportStats:
        exporter = self.exporter
        if exporter is None:
            return ExportStats(errors=self.errors)
        return ExportStats(
            exporter.exported, exporter.dropped, exporter.failed_exports, self.errors
        )

    def shutdown(self) -> None:
        """Export what is queued (bounded by the export timeout) and stop the threads."""
        self.closed = True
        if self._flusher is not None:
            self._flusher.stop()
        if self.provider is not None:
            self.provider.shutdown()


_pipelines: dict[tuple[Config, str], Pipeline] = {}
_retired: dict[Config, ExportStats] = {}  # counters of pipelines already shut down
_lock = threading.Lock()


def pipeline_for(config: Config, service_name: str) -> Pipeline:
    """The process-wide pipeline of this configuration and service, built on first use."""
    key = (config, service_name)
    pipeline = _pipelines.get(key)
    if pipeline is None:
        with _lock:
            pipeline = _pipelines.get(key)
            if pipeline is None:
                pipeline = _pipelines[key] = Pipeline(config, service_name)
    return pipeline


def stats_for(config: Config) -> ExportStats:
    """Counters of every pipeline of ``config`` in this process, added up."""
    with _lock:
        pipelines = [p for key, p in _pipelines.items() if key[0] == config]
        total = _retired.get(config, ExportStats())
    for pipeline in pipelines:
        total += pipeline.stats()
    return total


def shutdown_all(config: Config) -> None:
    """Shut down every pipeline of ``config`` (the backend's ``close``)."""
    with _lock:
        keys = [key for key in _pipelines if key[0] == config]
        pipelines = [_pipelines.pop(key) for key in keys]
    for pipeline in pipelines:
        pipeline.shutdown()
        with _lock:
            _retired[config] = _retired.get(config, ExportStats()) + pipeline.stats()


def _faasflow_version() -> str:
    import faasflow

    return faasflow.__version__
