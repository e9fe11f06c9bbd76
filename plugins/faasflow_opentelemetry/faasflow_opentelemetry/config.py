"""The backend's options, parsed once from what :mod:`faasflow.settings` resolved.

Every option can be set as ``FAASFLOW_OPENTELEMETRY_<OPTION>``; most also follow the standard
``OTEL_*`` variable listed in :data:`ENV` (the traces-specific one first). The plugin never
reads the environment itself: faasflow's settings resolve these names and hand over the values,
which are then passed explicitly to the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

import attrs

from faasflow import ConfigurationError, Options

__all__ = ["DESCRIPTIONS", "ENV", "Config"]

BACKEND = "opentelemetry"

#: option -> the OpenTelemetry variables that may set it, first listed wins.
ENV: Mapping[str, tuple[str, ...]] = {
    "traces_endpoint": ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",),
    "endpoint": ("OTEL_EXPORTER_OTLP_ENDPOINT",),
    "headers": ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
    "timeout": ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
    "compression": ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"),
    "certificate": ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"),
    "client_key": ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY"),
    "client_certificate": (
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    ),
    "service_name": ("OTEL_SERVICE_NAME",),
    "resource_attributes": ("OTEL_RESOURCE_ATTRIBUTES",),
    "sampler": ("OTEL_TRACES_SAMPLER",),
    "sampler_arg": ("OTEL_TRACES_SAMPLER_ARG",),
    "propagators": ("OTEL_PROPAGATORS",),
    "schedule_delay": ("OTEL_BSP_SCHEDULE_DELAY",),
    "max_queue_size": ("OTEL_BSP_MAX_QUEUE_SIZE",),
    "max_export_batch_size": ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE",),
    "disabled": ("OTEL_SDK_DISABLED",),
}

#: option -> one-line description (``faasflow plugins`` shows these; the README has the table).
DESCRIPTIONS: Mapping[str, str] = {
    "endpoint": "OTLP/HTTP base URL; /v1/traces is appended (default http://localhost:4318)",
    "traces_endpoint": "full OTLP/HTTP traces URL, used as is (wins over endpoint)",
    "headers": "extra export headers, key=value pairs separated by commas (URL-encoded)",
    "timeout": "export timeout in milliseconds, per batch (default 2000)",
    "compression": "gzip or none (default none)",
    "certificate": "CA bundle that verifies the collector's TLS certificate",
    "client_key": "client private key for mTLS",
    "client_certificate": "client certificate for mTLS",
    "service_name": "service.name of the spans (default: the flow name)",
    "resource_attributes": "more resource attributes, key=value pairs separated by commas",
    "sampler": "always_on, always_off, traceidratio, parentbased_always_on (default), "
    "parentbased_always_off, parentbased_traceidratio",
    "sampler_arg": "sampling ratio for the traceidratio samplers (default 1.0)",
    "propagators": "propagation formats (default tracecontext,baggage; none disables)",
    "schedule_delay": "milliseconds between two exports (default 1000)",
    "max_queue_size": "spans kept waiting for export; more are dropped (default 2048)",
    "max_export_batch_size": "spans per export request (default 512)",
    "disabled": "true turns tracing off (OTEL_SDK_DISABLED)",
    "flush": "interval (default: export every schedule_delay or when a batch is full) or "
    "background (every iteration end also wakes an export, for processes that may be killed)",
    "incoming": "child (default: the request span joins a trace context sent by the caller), "
    "link (new trace, linked to the caller's) or ignore",
    "provider": "own (default: a TracerProvider built from these options) or global "
    "(the application's, e.g. set up by opentelemetry-instrument)",
}

SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
FLUSH_MODES = ("interval", "background")
INCOMING_MODES = ("child", "link", "ignore")
PROVIDERS = ("own", "global")
COMPRESSIONS = ("none", "gzip")


def _choice(options: Options, name: str, choices: tuple[str, ...], default: str) -> str:
    value = (options.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigurationError(
            f"{BACKEND} tracer: {name}={value!r} is not one of {', '.join(choices)} "
            f"(set FAASFLOW_OPENTELEMETRY_{name.upper()}{_env_hint(name)})"
        )
    return value


def _env_hint(name: str) -> str:
    names = ENV.get(name)
    return f" or {names[0]}" if names else ""


def _positive(options: Options, name: str, default: float, kind: type[float] | type[int]) -> float:
    raw = options.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        value = -1
    if value <= 0:
        raise ConfigurationError(
            f"{BACKEND} tracer: {name}={raw!r} must be a positive "
            f"{'whole ' if kind is int else ''}number "
            f"(set FAASFLOW_OPENTELEMETRY_{name.upper()}{_env_hint(name)})"
        )
    return value


def _ratio(options: Options) -> float:
    raw = options.get("sampler_arg")
    if raw is None or raw.strip() == "":
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigurationError(
            f"{BACKEND} tracer: sampler_arg={raw!r} must be a ratio between 0 and 1 "
            "(set OTEL_TRACES_SAMPLER_ARG)"
        )
    return value


def parse_pairs(raw: str | None, option: str) -> tuple[tuple[str, str], ...]:
    """``k1=v1,k2=v2`` (values URL-encoded, as in OTEL_EXPORTER_OTLP_HEADERS) as pairs."""
    pairs: list[tuple[str, str]] = []
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(
                f"{BACKEND} tracer: {option} entry {item.strip()!r} is not key=value "
                f"(set FAASFLOW_OPENTELEMETRY_{option.upper()}{_env_hint(option)})"
            )
        pairs.append((unquote(key.strip()), unquote(value.strip())))
    return tuple(pairs)


def _bool(options: Options, name: str) -> bool:
    value = (options.get(name) or "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"", "0", "false", "no", "off"}:
        return False
    raise ConfigurationError(
        f"{BACKEND} tracer: {name}={value!r} is not a boolean; use true or false"
    )


@attrs.frozen
class Config:
    """Resolved options; hashable, so equal configurations share one TracerProvider."""

    traces_endpoint: str = "http://localhost:4318/v1/traces"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 2.0
    """Seconds."""
    compression: str = "none"
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None
    service_name: str | None = None
    resource_attributes: tuple[tuple[str, str], ...] = ()
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    propagators: tuple[str, ...] = ("tracecontext", "baggage")
    schedule_delay: float = 1.0
    """Seconds."""
    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    disabled: bool = False
    flush: str = "interval"
    incoming: str = "child"
    provider: str = "own"

    @classmethod
    def from_options(cls, options: Options) -> Config:
        """Parse and check every option; a bad value raises ConfigurationError naming it."""
        traces = (options.get("traces_endpoint") or "").strip()
        if not traces:
            base = (options.get("endpoint") or "").strip() or "http://localhost:4318"
            traces = base.rstrip("/") + "/v1/traces"
        if not traces.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"{BACKEND} tracer: OTLP endpoint {traces!r} must be an http:// or https:// URL "
                "(set OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://otel-collector:4318)"
            )
        propagators = tuple(
            p.strip().lower()
            for p in (options.get("propagators") or "tracecontext,baggage").split(",")
            if p.strip()
        )
        if "none" in propagators:
            propagators = ()
        batch = int(_positive(options, "max_export_batch_size", 512, int))
        queue = int(_positive(options, "max_queue_size", 2048, int))
        return cls(
            traces_endpoint=traces,
            headers=parse_pairs(options.get("headers"), "headers"),
            timeout=_positive(options, "timeout", 2000, float) / 1000,
            compression=_choice(options, "compression", COMPRESSIONS, "none"),
            certificate=options.get("certificate") or None,
            client_key=options.get("client_key") or None,
            client_certificate=options.get("client_certificate") or None,
            service_name=(options.get("service_name") or "").strip() or None,
            resource_attributes=parse_pairs(
                options.get("resource_attributes"), "resource_attributes"
            ),
            sampler=_choice(options, "sampler", SAMPLERS, "parentbased_always_on"),
            sampler_arg=_ratio(options),
            propagators=propagators,
            schedule_delay=_positive(options, "schedule_delay", 1000, float) / 1000,
            max_queue_size=max(queue, batch),
            max_export_batch_size=batch,
            disabled=_bool(options, "disabled"),
            flush=_choice(options, "flush", FLUSH_MODES, "interval"),
            incoming=_choice(options, "incoming", INCOMING_MODES, "child"),
            provider=_choice(options, "provider", PROVIDERS, "own"),
        )

    def service_for(self, flow_name: str) -> str:
        """``service.name``: the option, else ``service.name`` in resource_attributes, else the
        flow name."""
        if self.service_name:
            return self.service_name
        for key, value in self.resource_attributes:
            if key == "service.name" and value:
                return value
        return flow_name or "faasflow"
