"""Kinds of queue for the local gateway's asynchronous calls, and how ``faasflow up`` picks one.

A queue is a runtime piece of the gateway, not a fifth backend kind: flows keep forwarding
through the gateway's ``/async-function/...`` (their Invoker stays ``openfaas``), and whatever
the gateway accepts there goes onto the queue, iterations included. The embedded default is the
SQLite :class:`~faasflow.runtime.queue.DurableQueue` of one host; a plugin adds others through
the ``faasflow_queues`` hook (faasflow-nats puts the calls on NATS JetStream, so several hosts
share them).

``--queue`` / ``FAASFLOW_QUEUE`` selects one: empty or ``sqlite`` for the default, a kind name
(``nats``), or a URL whose scheme is the kind (``nats://h1:4222,h2:4222``). A queue whose kind
is ``shared="network"`` serves several hosts, so the gateway refuses to start it with a store
that only one host or process sees, or without one configured HMAC secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import attrs

from faasflow.backends import Kind, Sharing
from faasflow.errors import ConfigurationError
from faasflow.runtime.queue import DurableQueue, Job
from faasflow.settings import HMAC_SECRET_NAME, EnvVars

if TYPE_CHECKING:
    from faasflow.settings import Settings

__all__ = ["QUEUE_ENV", "SHARED_FILES_ENV", "Queue", "QueueContext", "QueueKind",
           "check_multi_host", "open_queue", "parse_queue", "queue_kinds"]

#: The variable selecting the queue when ``--queue`` is not given.
QUEUE_ENV = "FAASFLOW_QUEUE"
#: ``1`` declares that the files of host-local stores (sqlite, filesystem) are on storage every
#: host mounts (network namespaces of one machine; a network filesystem with working locks).
SHARED_FILES_ENV = "FAASFLOW_SHARED_FILES"


class Queue(Protocol):
    """What the dispatcher needs from a queue. Every method is called from many threads.

    A job taken is *claimed* until exactly one of :meth:`done`, :meth:`retry`,
    :meth:`dead_letter` or :meth:`release` is called for it; a claimed job whose holder
    dies is delivered again (by the queue, after its own timeout), with ``attempts`` counting
    every delivery before this one.
    """

    @property
    def recovered(self) -> int:
        """Jobs found at start that a previous run left (0 when the queue cannot tell)."""

    @property
    def path(self) -> Path | None:
        """The SQLite file when the queue is one, for the metrics' oldest-age gauge."""

    def put(self, job: Job) -> bool:
        """Store ``job`` durably before returning; False when the same call id was put before
        (nothing is queued twice). :class:`~faasflow.runtime.queue.CallIdInUse` when the id
        names another call, where the queue can tell."""

    def take(self, timeout: float | None = None) -> Job | None:
        """The next due job, claimed; ``None`` after ``timeout`` or once stopped."""

    def done(self, job: Job) -> None:
        """The job was delivered (and its callback sent): forget it."""

    def retry(self, job: Job, delay: float) -> Job:
        """Deliver the job again after ``delay`` seconds; returns it with one more attempt."""

    def dead_letter(self, job: Job, reason: str) -> None:
        """Give up on the job; it stays readable as a dead letter."""

    def release(self, job: Job) -> None:
        """Give the job back undelivered (this gateway is stopping)."""

    def pending(self) -> int:
        """Jobs not finished yet (waiting, delayed or being delivered)."""

    def dead(self) -> int:
        """Dead letters kept."""

    def stop(self) -> None:
        """Hand out no more jobs; every waiting :meth:`take` returns ``None``."""

    def close(self) -> None:
        """Stop and let go of the store; unfinished jobs stay queued."""


@attrs.frozen
class QueueContext:
    """What a queue factory gets when the gateway starts."""

    url: str
    """The ``--queue`` value (``nats://h1:4222,h2:4222``), or ``""`` for the kind's default."""
    data_dir: Path
    max_attempts: int
    """Deliveries of one call before it is a dead letter (``--max-attempts``)."""
    environ: Mapping[str, str]
    stack_name: str
    given_up: Callable[[Job, str], None] | None = None
    """Call it (from any thread, once per call) when the queue itself gives a call up, as a
    server deciding ``max_deliver`` does: a flow's iteration then fails its request with the
    reason instead of running until the request's deadline."""


@attrs.frozen
class QueueKind:
    """One kind of queue a plugin provides (answer of the ``faasflow_queues`` hook)."""

    name: str
    factory: Callable[[QueueContext], Queue]
    summary: str = ""
    shared: Sharing = "host"
    """``"host"``: one gateway owns it; ``"network"``: gateways on many hosts share it."""
    options: Mapping[str, str] = attrs.field(factory=dict)
    """Documented ``FAASFLOW_<NAME>_<OPTION>`` variables: option -> one-line description."""


def _sqlite(context: QueueContext) -> Queue:
    return DurableQueue(context.data_dir / "queue.db")


SQLITE = QueueKind("sqlite", _sqlite, "SQLite file in the data directory (one host).", "host")


def queue_kinds(settings: Settings) -> dict[str, QueueKind]:
    """The embedded kind and every kind the installed plugins declare."""
    from faasflow.plugins import make_plugin_manager

    kinds = {SQLITE.name: SQLITE}
    pm = make_plugin_manager(settings)
    found: Iterable[Iterable[QueueKind]] = pm.hook.faasflow_queues()
    for answer in found:
        for kind in answer or ():
            if not isinstance(kind, QueueKind):
                raise ConfigurationError(
                    f"faasflow_queues() answered {kind!r}; expected faasflow.runtime.queues."
                    "QueueKind records")
            kinds.setdefault(kind.name, kind)
    return kinds


def parse_queue(spec: str) -> tuple[str, str]:
    """``(kind, url)`` of a ``--queue`` value."""
    spec = spec.strip()
    if not spec:
        return SQLITE.name, ""
    if "://" in spec:
        return spec.split("://", 1)[0].lower(), spec
    return spec.lower(), ""


def open_queue(spec: str, context: QueueContext, settings: Settings) -> tuple[Queue, QueueKind]:
    """Build the queue ``spec`` names; an unknown kind is a configuration error naming the
    known ones and where they come from."""
    name, url = parse_queue(spec)
    kinds = queue_kinds(settings) if name != SQLITE.name else {SQLITE.name: SQLITE}
    kind = kinds.get(name)
    if kind is None:
        raise ConfigurationError(
            f"--queue / {QUEUE_ENV}: unknown queue kind {name!r} (known: "
            f"{', '.join(sorted(kinds))}); install the plugin providing it, e.g. "
            f"pip install faasflow-{name}")
    return kind.factory(attrs.evolve(context, url=url)), kind


def check_multi_host(kind: QueueKind, settings: Settings, defaults: Mapping[str, str],
                     hmac_source: str) -> None:
    """Refuse a queue shared by several hosts with a store one host cannot share, or with an
    HMAC key generated per data directory (each host would sign with its own)."""
    if kind.shared != "network":
        return
    from faasflow.plugins import Registry

    environ = {**defaults, **settings.environ}
    registry = Registry.shared(settings)
    files_shared = environ.get(SHARED_FILES_ENV, "").strip().lower() in ("1", "true", "yes")
    for backend_kind in (Kind.STATE_STORE, Kind.DATA_STORE):
        name = (environ.get(backend_kind.env_var) or "").strip().lower()
        shared = registry.get(backend_kind, name).backend.shared
        if shared == "host" and files_shared:
            continue  # the operator says its files are on storage every host mounts
        if shared != "network":
            example = "etcd or consul" if backend_kind is Kind.STATE_STORE else "minio"
            raise ConfigurationError(
                f"the {kind.name} queue is shared by several hosts, and the {backend_kind.label} "
                f"{name!r} is local to one {shared}: iterations reaching another host would "
                f"find no request; set {backend_kind.env_var} to a store every host reaches "
                f"(for example {example}), or set {SHARED_FILES_ENV}=1 if its files are on "
                "storage every host mounts")
    if hmac_source != EnvVars.HMAC_SECRET and Path(hmac_source).name != HMAC_SECRET_NAME:
        raise ConfigurationError(
            f"the {kind.name} queue is shared by several hosts, and each would sign iterations "
            f"with its own generated key ({hmac_source}); set {EnvVars.HMAC_SECRET} (or the "
            "secret faasflow-hmac-secret) to the same value on every host")
