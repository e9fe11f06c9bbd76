"""faasflow-nats: the local gateway's asynchronous calls on NATS JetStream.

``faasflow up --queue nats://h1:4222,h2:4222,h3:4222`` (or ``FAASFLOW_QUEUE=nats``) on any number
of hosts: each gateway publishes the calls it accepts, flow iterations included, to one
work-queue stream and delivers whatever the shared durable consumer hands it. See README.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import faasflow
from faasflow.runtime.queues import Queue, QueueContext, QueueKind
from faasflow_nats.options import ENV, OPTIONS, NatsOptions

__all__ = ["ENV", "OPTIONS", "NatsOptions", "backend_record", "faasflow_queues"]

SUMMARY = "NATS JetStream work-queue stream shared by gateways on many hosts"


def _create(context: QueueContext) -> Queue:
    from faasflow_nats.queue import NatsQueue

    return NatsQueue(NatsOptions.from_environ(context.environ, context.url), context.max_attempts,
                     given_up=context.given_up)


@faasflow.hookimpl
def faasflow_queues() -> Iterator[QueueKind]:
    """Declare the ``nats`` queue kind."""
    yield QueueKind("nats", _create, SUMMARY, shared="network", options=OPTIONS)


def backend_record() -> faasflow.Backend:
    """The options as a Backend record, for faasflow's README check and listings."""
    return faasflow.Backend("nats", lambda options: None, summary=SUMMARY, env=ENV,
                            options=OPTIONS)
