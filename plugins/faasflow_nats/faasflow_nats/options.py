"""The ``FAASFLOW_NATS_*`` options, read from the gateway's environment.

``FAASFLOW_NATS_<OPTION>`` wins over NATS's own variables (``NATS_URL``, ``NATS_USER``,
``NATS_PASSWORD``, ``NATS_CREDS``); the servers of ``--queue nats://h1:4222,h2:4222`` win over
both, as the command line does everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import attrs

from faasflow.errors import ConfigurationError

__all__ = ["ENV", "OPTIONS", "NatsOptions"]

#: option -> one-line description (the README's table; ``faasflow plugins`` shows them).
OPTIONS = {
    "servers": "comma-separated server URLs (default: nats://127.0.0.1:4222)",
    "stream": "JetStream stream of queued calls (default FAASFLOW)",
    "subject": "subject prefix; one subject per function under it (default faasflow.async)",
    "consumer": "durable pull consumer every host shares (default dispatch)",
    "replicas": "stream replicas: 3 on a 3-server cluster (default 1)",
    "ack_wait": "seconds before an unacknowledged delivery goes to another host; long calls "
                "are kept by in-progress heartbeats (default 10)",
    "duplicate_window": "seconds a call id is remembered, so a re-published call is "
                        "dropped (default 120)",
    "dead_stream": "stream keeping dead letters (default FAASFLOW_DEAD)",
    "connect_timeout": "seconds to wait at start for the servers and JetStream (default 30)",
    "publish_timeout": "seconds one call's publish is retried (same id) before 503 "
                       "(default 15)",
    "user": "user name",
    "password": "password",
    "creds": "credentials file (JWT and NKey seed)",
}

#: option -> NATS's own variables that may set it.
ENV = {
    "servers": ("NATS_URL",),
    "user": ("NATS_USER",),
    "password": ("NATS_PASSWORD",),
    "creds": ("NATS_CREDS",),
}

T = TypeVar("T")


@attrs.frozen
class NatsOptions:
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = "FAASFLOW"
    subject: str = "faasflow.async"
    consumer: str = "dispatch"
    replicas: int = 1
    ack_wait: float = 10.0
    duplicate_window: float = 120.0
    dead_stream: str = "FAASFLOW_DEAD"
    connect_timeout: float = 30.0
    publish_timeout: float = 15.0
    user: str = ""
    password: str = ""
    creds: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], url: str = "") -> NatsOptions:
        def get(option: str) -> str:
            value = environ.get(f"FAASFLOW_NATS_{option.upper()}", "").strip()
            for name in ENV.get(option, ()):
                value = value or environ.get(name, "").strip()
            return value

        def number(option: str, convert: Callable[[str], T], default: T) -> T:
            raw = get(option)
            if not raw:
                return default
            try:
                value = convert(raw)
            except ValueError:
                raise ConfigurationError(
                    f"FAASFLOW_NATS_{option.upper()}={raw!r} is not a number: "
                    f"{OPTIONS[option]}") from None
            if not float(value) > 0:  # type: ignore[arg-type]
                raise ConfigurationError(
                    f"FAASFLOW_NATS_{option.upper()}={raw!r} must be positive")
            return value

        servers = _servers(url) or _servers(get("servers")) or cls.servers
        defaults = cls()
        return cls(
            servers=servers,
            stream=get("stream") or defaults.stream,
            subject=(get("subject") or defaults.subject).rstrip("."),
            consumer=get("consumer") or defaults.consumer,
            replicas=number("replicas", int, defaults.replicas),
            ack_wait=number("ack_wait", float, defaults.ack_wait),
            duplicate_window=number("duplicate_window", float, defaults.duplicate_window),
            dead_stream=get("dead_stream") or defaults.dead_stream,
            connect_timeout=number("connect_timeout", float, defaults.connect_timeout),
            publish_timeout=number("publish_timeout", float, defaults.publish_timeout),
            user=get("user"), password=get("password"), creds=get("creds"),
        )


def _servers(value: str) -> tuple[str, ...]:
    """``nats://h1:4222,h2:4222`` (one scheme for all, as the NATS tools accept) or a list of
    full URLs, as server URLs."""
    found: list[str] = []
    for raw in value.split(","):
        part = raw.strip()
        if part:
            found.append(part if "://" in part else f"nats://{part}")
    return tuple(found)
