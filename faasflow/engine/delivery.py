"""In-process delivery of iterations: retried with backoff, never dropped quietly.

The local invoker runs forwarded iterations on a thread pool. An iteration that raises there
(a store that stayed down past the in-iteration retries, an engine fault) is delivered again
with the same token (so it takes over its own claim), up to ``FAASFLOW_ITERATION_ATTEMPTS``
times; after the last attempt its request fails with an error naming the node and the cause.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping

from faasflow.context import Query, RequestView
from faasflow.errors import FlowFailure, RequestNotActive, SignatureError

from . import endings
from .ids import ATTEMPT_HEADER
from .iteration import Core, Iteration, describe
from .message import Message, MessageError

__all__ = ["deliver"]

log = logging.getLogger("faasflow.engine")


def deliver(
    core: Core,
    forward: Callable[[bytes, Mapping[str, str]], str],
    request_id: str,
    message: bytes,
    headers: Mapping[str, str],
) -> None:
    attempts = core.settings.iteration_attempts
    delay = 0.05
    error: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            forward(message, {**headers, ATTEMPT_HEADER: str(attempt)})
            return
        except RequestNotActive as exc:
            log.debug("[Request `%s`] iteration refused: %s", request_id, exc)
            return
        except (MessageError, SignatureError) as exc:
            log.error("[Request `%s`] iteration rejected: %s", request_id, exc)
            return
        except Exception as exc:
            error = exc
            log.warning("[Request `%s`] iteration attempt %d of %d failed: %s",
                        request_id, attempt, attempts, describe(exc))
        if attempt < attempts:
            time.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 2.0)
    assert error is not None
    _fail(core, message, attempts, error)


def _fail(core: Core, message: bytes, attempts: int, error: BaseException) -> None:
    try:
        msg = Message.decode(message, core.key)
        rid = msg.request_id
        states, store = core.stores(rid)
        it = Iteration(
            msg, core.flow.graph(msg.query, rid), states, store,
            core.tracer.scoped(core.name, rid), core.control(rid),
            RequestView(core.name, rid, Query(msg.query), data_store=store), msg.mid,
        )
        endings.fail(core, it, FlowFailure(
            f"Node({msg.node}): iteration failed {attempts} times: {describe(error)}",
            node=msg.node, request_id=rid,
        ))
    except Exception:
        log.exception("failing a request whose iteration failed %d times failed", attempts)
