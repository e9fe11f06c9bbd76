"""Starting a request: idempotent admission of a DAG request, and sync flows run to the end.

A start may be delivered twice (the gateway redelivers a start whose worker was killed; a
client retries). The first delivery claims the request id in the records (with a digest of
the body, query and callback) and, without a client id, maps the gateway's call id to it; a
later delivery with the same call id, or the same client id and body, finds that entry and
carries on the same request (its first node is guarded by its marker like any iteration),
answering as the first delivery did.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping

from faasflow.context import Query, RequestView, running
from faasflow.errors import FlowFailure, RequestIdInUse, RequestNotActive
from faasflow.graph import Graph
from faasflow.interfaces import DataStore
from faasflow.results import Result, Status

from . import capture, control, endings, runner
from .ids import ATTEMPT_HEADER, header
from .iteration import Core
from .message import Message
from .state import RUNNING, RequestState

__all__ = ["StartResult", "run_sync", "start_dag"]

log = logging.getLogger("faasflow.engine")


StartResult = Result
"""Deprecated alias of :class:`faasflow.Result` (what ``Engine.start`` answers)."""


def as_started(core: Core, rid: str) -> Result:
    record = control.record(core, rid)
    if record is not None and record.done:
        return Result.from_record(record)
    return Result(rid, Status.RUNNING, flow=core.name)


def start_dag(
    core: Core,
    graph: Graph,
    data: bytes,
    rid: str,
    *,
    client_id: bool,
    call_id: str | None,
    query: str,
    callback_url: str | None,
    headers: Mapping[str, str],
    deadline: float | None,
) -> Result:
    if not client_id and call_id:
        first = core.records.start_id(call_id, rid)
        if first != rid:
            rid, graph = first, core.flow.graph(query, first)
    digest = hashlib.sha256(
        b"\0".join([data, query.encode(), (callback_url or "").encode()])
    ).hexdigest()
    existing = core.records.open(rid, deadline, digest, definition=graph.definition_hash)
    if existing is not None:
        if existing.get("digest") != digest:
            raise RequestIdInUse(rid, core.name)
        if existing["status"] != "running":
            return as_started(core, rid)
        deadline = existing.get("deadline")
        log.info("[Request `%s`] start delivered again: continuing it", rid)
    ctl = core.control(rid)
    state = RequestState(RUNNING, graph.definition_hash, deadline)
    # False: a repeated start, or our own write that landed before an error; the record
    # entry (created or matched above) says the id is this request's
    if ctl.begin(state):
        core.admit(rid, state.encode())  # the first claim checks it instead of reading it
    elif ctl.live() is None:
        return as_started(core, rid)
    ctl.states.init()
    ctl.data.init()
    if core.settings.redrive and existing is None:  # for a re-run, until the record expires
        core.records.keep_input(rid, data, query, callback_url)
    if existing is None:
        capture.capture_request(core, rid, data)
    event = core.waiters.watch(rid)
    if existing is None:
        log.info("[Request `%s`] Created (flow %s)", rid, core.name)
    msg = Message(
        rid, core.name, graph.definition_hash, graph.root.nodes[graph.root.start].unique_id,
        data=data, query=query, callback=callback_url, deadline=deadline, mid=f"start-{rid}",
    )
    raw_attempt = header(headers, ATTEMPT_HEADER) or ""
    try:
        runner.iterate(core, msg, b"", first=True, carrier=dict(headers),
                       token=call_id or f"start:{rid}",
                       attempt=int(raw_attempt) if raw_attempt.isdigit() else 1)
    except RequestNotActive:
        return as_started(core, rid)
    if event.is_set() or existing is not None:
        return as_started(core, rid)
    return Result(rid, Status.RUNNING, flow=core.name)


def run_sync(
    core: Core,
    store: DataStore,
    graph: Graph,
    data: bytes,
    rid: str,
    query: str,
    callback: str | None,
    headers: Mapping[str, str],
    deadline: float | None,
) -> Result:
    """A sync flow: its one node runs here, nothing is stored beyond the request."""
    node = graph.root.nodes[graph.root.start]
    tracer = core.tracer.scoped(core.name, rid)
    view = RequestView(core.name, rid, Query(query), node.unique_id, data_store=store)
    tracer.request_start(headers)
    msg = Message(
        rid, core.name, graph.definition_hash, node.unique_id, query=query,
        callback=callback, deadline=deadline,
    )
    try:
        with running(view):
            output, _ = runner.run_operations(core, msg, node, data, tracer, view, None)
            view.state = "success"
            endings.hook(graph.finally_, "success", rid)
    except FlowFailure as exc:
        log.warning("[Request `%s`] Failed: %s", rid, exc)
        with running(view):
            view.state = "failure"
            endings.hook(graph.on_failure, exc, rid)
            endings.hook(graph.finally_, "failure", rid)
        tracer.request_failure(exc)
        tracer.flush()
        store.cleanup()
        return Result(rid, Status.FAILURE, b"", str(exc), core.name, sync=True, cause=exc,
                      failure={"node": exc.node} if exc.node else None)
    store.cleanup()
    tracer.request_end({})
    tracer.flush()
    if callback:
        endings.callback(core, callback, rid, output)
    return Result(rid, Status.SUCCESS, output, None, core.name, sync=True)


def deadline_of(limit: float | None) -> float | None:
    return time.time() + limit if limit else None
