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
from typing import Protocol

from faasflow.context import Query, RequestView
from faasflow.errors import FlowFailure, RequestNotActive, SignatureError

from . import endings, markers, runner
from .ids import ATTEMPT_HEADER
from .iteration import Core, Handed, Iteration, describe
from .message import Message, MessageError

__all__ = [
    "Sweeps", "deliver", "deliver_message", "fail_message", "local_delivery", "owed", "settle",
]

log = logging.getLogger("faasflow.engine")


def deliver(
    core: Core,
    forward: Callable[[bytes, Mapping[str, str]], str],
    request_id: str,
    message: bytes,
    headers: Mapping[str, str],
) -> None:
    """Deliver a message's bytes: ``forward`` parses (or recognises) and runs it."""
    attempts = core.settings.iteration_attempts
    error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            forward(message, {**headers, ATTEMPT_HEADER: str(attempt)})
            return
        except Exception as exc:
            if _ends(core, request_id, attempt, exc):
                return
            error = exc
    assert error is not None
    _fail(core, message, attempts, error)


def deliver_message(
    core: Core, sweep: Callable[[], object], msg: Message, handed: Handed | None
) -> None:
    """Deliver a message handed on in this process as it is (never encoded): ``forward`` of a
    message that needs no parsing nor verifying, and has no headers (its delivery token is its
    own id). The predecessor's hand-over goes with the first attempt only, which makes it or
    leaves it (``runner.iterate``), as a message parsed again carries none; a folded one (the
    predecessor's done marker is in it, ``Handed.folded``) goes with every attempt until it
    is made, and is made before the delivery ends. ``sweep``: the engine's ``maybe_sweep``,
    as ``forward`` calls it."""
    attempts = core.settings.iteration_attempts
    rid = msg.request_id
    error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            sweep()
            runner.iterate(core, msg, b"", first=False, token=msg.mid, attempt=attempt,
                           handed=handed)
        except Exception as exc:
            if _ends(core, rid, attempt, exc):
                break
            error = exc
        else:
            break
        handed = _passed_on(core, rid, handed)
    else:
        assert error is not None
        fail_message(core, msg, attempts, error, handed)
        return
    if handed is not None and handed.folded:
        settle(core, rid, handed)


class Sweeps(Protocol):
    """The engine as a local delivery sees it: when its next sweep is due, and the sweep."""

    next_sweep: float
    """``time.monotonic()`` from which :meth:`maybe_sweep` may start one (inf: never)."""

    def maybe_sweep(self) -> bool: ...


def local_delivery(
    core: Core, engine: Sweeps
) -> Callable[[str, str, Message, Handed | None], None]:
    """:func:`deliver_message` as the local invoker's pool calls it (``LocalInvoker.hand_on``):
    ``run(flow, request_id, message, handed)``, the engine's sweep started only once due."""
    monotonic = time.monotonic

    def sweep() -> None:
        if monotonic() >= engine.next_sweep:
            engine.maybe_sweep()

    def run(flow: str, request_id: str, msg: Message, handed: Handed | None) -> None:
        deliver_message(core, sweep, msg, handed)

    return run


def _passed_on(core: Core, request_id: str, handed: Handed | None) -> Handed | None:
    """What of the hand-over goes with the next attempt: a folded one not made yet."""
    if handed is not None and handed.folded and owed(core, request_id, handed):
        return handed
    return None


def owed(core: Core, request_id: str, handed: Handed) -> bool:
    """Whether a folded hand-over is still to be made: neither the successor's claim nor a
    write of its own made it (``runner._hand_over`` keeps it in hand until then)."""
    return core.pending.get((request_id, handed.key)) == handed.done


def settle(core: Core, request_id: str, handed: Handed) -> None:
    """Make a folded hand-over its successor's delivery ended without (the iteration ran, was
    parked, refused or failed for good): the predecessor's done marker is in it, and a record
    must not show a node that finished as running."""
    if not owed(core, request_id, handed):
        return
    states, data = core.stores(request_id)
    try:
        markers.hand_over(states, data, handed)
    except Exception as exc:
        log.error("[Request `%s`] %s is left claimed: its move to handed was not written: %s",
                  request_id, handed.key, describe(exc))
    core.pending.pop((request_id, handed.key), None)


def _ends(core: Core, request_id: str, attempt: int, error: Exception) -> bool:
    """After ``attempt`` raised ``error``: True when the delivery ends here (the request is
    not running, the message is refused); else, before another attempt, a backoff."""
    if isinstance(error, RequestNotActive):
        log.debug("[Request `%s`] iteration refused: %s", request_id, error)
        return True
    if isinstance(error, MessageError | SignatureError):
        log.error("[Request `%s`] iteration rejected: %s", request_id, error)
        return True
    attempts = core.settings.iteration_attempts
    log.warning("[Request `%s`] iteration attempt %d of %d failed: %s",
                request_id, attempt, attempts, describe(error))
    if attempt < attempts:
        delay = min(0.05 * 2 ** (attempt - 1), 2.0)
        time.sleep(random.uniform(delay / 2, delay))
    return False


def _fail(core: Core, message: bytes, attempts: int, error: BaseException) -> None:
    try:
        msg = Message.decode(message, core.key)
    except Exception:
        log.exception("failing a request whose iteration failed %d times failed", attempts)
        return
    fail_message(core, msg, attempts, error)


def fail_message(
    core: Core, msg: Message, attempts: int, error: BaseException, handed: Handed | None = None
) -> None:
    """The iteration of ``msg`` failed every attempt: its request fails, naming the node
    (``handed``: the predecessor's folded hand-over, made first when it is still owed)."""
    try:
        rid = msg.request_id
        if handed is not None and handed.folded:
            settle(core, rid, handed)
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
