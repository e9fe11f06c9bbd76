"""A request ends: success, failure or stop, decided once by the tombstone CAS.

Whoever wins the CAS of ``request-state`` to its terminal tombstone (see ``state``) runs the
hooks and the callback; then the record is written and the namespace cleaned. Everything after
the CAS can be redone by :func:`finalize` from the tombstone alone, which is what the sweep does
for a request whose ender crashed: its record and cleanup are finished. A redelivery of the
ending iteration itself runs the hooks again when they had not finished (no ``hooks-done``
marker yet; :func:`redo_hooks`): at least once across a crash of the ender, twice only if it
died between its hooks and the marker. The sweep does not run hooks (on OpenFaaS CE, which
never redelivers, hooks of a crashed ender are lost).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from faasflow.context import running
from faasflow.errors import BackendError, FlowFailure, KeyNotFound
from faasflow.graph import Graph
from faasflow.interfaces import DataStore, StateStore
from faasflow.results import remember_failure

from .failures import details
from .ids import CLAIM, REQUEST_ID_HEADER
from .iteration import Core, Iteration
from .marked import MarkedRuns, MarkedStates, Marks, marks_of, runs_of
from .nodestates import instance_node, node_states, runnable_nodes
from .records import NodeRun, RequestRecord
from .redrive import keep_iteration, keeps
from .state import RequestControl, RequestState

__all__ = ["fail", "finalize", "finish", "graph_of", "node_marks", "node_runs", "redo_hooks"]

log = logging.getLogger("faasflow.engine")

#: Written by the ender once the hooks ran, so a redelivery of a crashed ender knows whether to
#: run them again (only a crash between the hooks and this write runs them twice).
HOOKS_DONE = "hooks-done"


def node_marks(states: StateStore) -> dict[str, Mapping[str, Any]]:
    """Every node instance's marker by execution id (one scan)."""
    skip = len(CLAIM)
    raw = {key[skip:]: value for key, value in states.scan(CLAIM).items()}
    return marks_of(raw)


def node_runs(
    states: StateStore, marks: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, NodeRun]:
    """The node instances that completed, from their markers."""
    return runs_of(node_marks(states) if marks is None else marks)


def graph_of(core: Core, rid: str, digest: str) -> Graph | None:
    """The request's graph when it can be rebuilt without its query (a definition that does
    not vary per request, or does not use the query) and is the one the request started with."""
    try:
        graph = core.flow.graph("", rid)
    except Exception:  # a per-request define() that needs its query: show what ran only
        return None
    return graph if graph.definition_hash == digest else None


def failure_of(tomb: RequestState) -> dict[str, Any] | None:
    """The record's ``failure`` member: the failed node and what its failure kept."""
    if tomb.status != "failure":
        return None
    doc: dict[str, Any] = {"node": tomb.error_node}
    if tomb.failure:
        with contextlib.suppress(ValueError):  # a tombstone of an older version
            doc.update(json.loads(tomb.failure))
    return doc


def failed_run(
    tomb: RequestState, marks: Mapping[str, Mapping[str, Any]]
) -> tuple[str, NodeRun] | None:
    """The failed node's run: its real start and attempt from its claim (when it got one)."""
    node = tomb.error_node
    if not node:
        return None
    at = tomb.ended or time.time()
    for eid, doc in marks.items():
        if doc.get("p") == "claimed" and instance_node(eid) == node:
            return eid, NodeRun(eid, float(doc.get("start", at)), at,
                                attempts=int(doc.get("att", 1)), status="failure",
                                error=tomb.error, deliveries=int(doc.get("att", 1)))
    return node, NodeRun(node, at, at, status="failure", error=tomb.error)


def created(core: Core, rid: str) -> float:
    found = core.records.entry(rid)
    return float(found[1]["created"]) if found else time.time()


def finalize(
    core: Core, rid: str, tomb: RequestState, states: StateStore, data: DataStore,
    graph: Graph | None = None,
) -> None:
    """Write the record of an ended request and clean its namespace (idempotent)."""
    control = RequestControl(rid, states, data)
    if graph is None:
        graph = graph_of(core, rid, tomb.definition_hash)
    if tomb.status == "success" and not tomb.error_node:
        runs, marked_states = _marked(states, graph)
        record = RequestRecord(
            rid, core.name, "success", created(core, rid), tomb.ended,
            control.output_of(tomb), tomb.error, runs, failure_of(tomb), marked_states,
        )
    else:
        marks = node_marks(states)
        nodes = node_runs(states, marks)
        failed = failed_run(tomb, marks)
        if failed is not None:
            nodes[failed[0]] = failed[1]
        record = RequestRecord(
            rid, core.name, tomb.status or "failure", created(core, rid), tomb.ended,
            control.output_of(tomb), tomb.error, nodes,
            failure_of(tomb),
            node_states(graph, marks, ended=tomb.status or "failure",
                        failed_node=tomb.error_node, ended_at=tomb.ended),
        )
    if not core.records.close(record):
        found = core.records.entry(rid)
        if found is not None and found[1]["status"] == record.status and (
            core.records.load(rid) is None
        ):
            core.records.save(record)  # an ender crashed between the status and the record
    core.setups.forget(rid)
    if keeps(core, tomb):
        return  # kept for a redrive until the record expires (``redrive``)
    data.cleanup()
    states.cleanup()


def _marked(states: StateStore, graph: Graph | None) -> tuple[MarkedRuns, MarkedStates]:
    """A successful request's runs and states, from its markers kept undecoded (``marked``)."""
    skip = len(CLAIM)
    raw = {key[skip:]: value for key, value in states.scan(CLAIM).items()}
    if graph is None:
        marks = Marks(raw, None, None)
    else:
        runnable = runnable_nodes(graph)
        ids = {n.unique_id for n in runnable}
        marks = Marks(raw, [n.unique_id for n in runnable],
                      [uid for uid in graph.nodes if uid not in ids])
    return MarkedRuns(marks), MarkedStates(marks)


def hook(fn: Callable[[Any], object] | None, arg: Any, rid: str) -> None:
    if fn is None:
        return
    try:
        fn(arg)
    except Exception:
        log.exception("[Request `%s`] %s hook raised", rid, getattr(fn, "__name__", "flow"))


STATUS_HEADER = "X-Faas-Flow-Status"


def callback(core: Core, url: str, rid: str, output: bytes, status: str = "success") -> None:
    """POST the outcome to the request's callback URL: the output of a success, the error of
    a failure, told apart by ``X-Faas-Flow-Status``."""
    try:
        response = core.invoker.request(
            "POST", url, output, headers={REQUEST_ID_HEADER: rid, STATUS_HEADER: status},
            timeout=30.0,
        )
        if not response.ok:
            log.warning("[Request `%s`] callback %s answered %s", rid, url, response.status)
    except Exception as exc:
        log.warning("[Request `%s`] callback %s failed: %s", rid, url, exc)


def finish(core: Core, it: Iteration, output: bytes) -> None:
    """The last node produced ``output``: end the request successfully (once)."""
    rid = it.msg.request_id
    tomb = it.control.end("success", output=output, by=it.token)
    if tomb is None:  # ended by a stop or a failure of another branch meanwhile
        clean_if_ended(it)
        return
    it.view.state = "success"
    hook(it.graph.finally_, "success", rid)
    _hooks_ran(it)
    finalize(core, rid, tomb, it.states, it.data, it.graph)
    it.tracer.request_end({"faasflow.status": "success"})
    it.ended = True
    log.info("[Request `%s`] Completed successfully", rid)
    if it.msg.callback:
        callback(core, it.msg.callback, rid, output)
    core.waiters.notify(rid)


def fail(core: Core, it: Iteration, error: FlowFailure) -> None:
    """End the request as failed (once); hooks run in the winner only."""
    rid = it.msg.request_id
    found = details(error)
    tomb = it.control.end(
        "failure", error=str(error), error_node=error.node or None, by=it.token,
        failure=json.dumps(found) if found else "",
    )
    if tomb is None:
        clean_if_ended(it)
        return  # another branch already failed it, or it was stopped: hooks ran once
    if core.invoker.in_process:  # faasflow.run hands the exception to its caller
        remember_failure(rid, error)
    if keeps(core, tomb):
        keep_iteration(it)  # before the record: a redrive finds what to forward
    trace = found.get("traceback")
    # the warning names where the user's code raised; the whole traceback is an info line
    # (shown by `faasflow up`, and by `faasflow run --traceback`)
    where = f" (at {found['where']})" if trace else ""
    log.warning("[Request `%s`] Failed: %s%s", rid, error, where)
    if trace:
        log.info("[Request `%s`] %s", rid, trace)
    with running(it.view):
        it.view.state = "failure"
        hook(it.graph.on_failure, error, rid)
        hook(it.graph.finally_, "failure", rid)
    _hooks_ran(it)
    finalize(core, rid, tomb, it.states, it.data, it.graph)
    it.tracer.request_failure(error)
    it.ended = True
    if it.msg.callback:  # a caller waiting on its callback hears of the failure too
        callback(core, it.msg.callback, rid, str(error).encode(), "failure")
    core.waiters.notify(rid)


def redo_hooks(core: Core, it: Iteration, tomb: RequestState) -> None:
    """``it`` is a redelivery of the iteration that ended the request with ``tomb``: its
    process died after the decision. The ender runs the hooks before it writes the record, so
    while the record still says running they may not have run: run them now. Hooks therefore
    run once when nothing crashes and at least once across a crash of their ender, when its
    iteration is delivered again (the local gateway's queue, OpenFaaS Pro)."""
    rid = it.msg.request_id
    found = core.records.entry(rid)
    if found is None or found[1]["status"] != "running":
        return
    try:
        it.states.get(HOOKS_DONE)
        return
    except KeyNotFound:
        pass
    log.info("[Request `%s`] ended by an iteration that did not finish: its hooks run again", rid)
    with running(it.view):
        if tomb.status == "success":
            it.view.state = "success"
            hook(it.graph.finally_, "success", rid)
        elif tomb.status == "failure":
            it.view.state = "failure"
            error = FlowFailure(
                tomb.error or f"request {rid} failed", node=tomb.error_node or "", request_id=rid
            )
            hook(it.graph.on_failure, error, rid)
            hook(it.graph.finally_, "failure", rid)
    _hooks_ran(it)


def _hooks_ran(it: Iteration) -> None:
    if it.graph.finally_ is None and it.graph.on_failure is None:
        return
    try:
        it.states.create(HOOKS_DONE, "1")
    except BackendError as exc:
        # the hooks did run: failing the iteration here would run them again on redelivery,
        # while a missing marker matters only if this process also dies before the record
        log.warning("[Request `%s`] could not mark its hooks done: %s", it.msg.request_id, exc)


def clean_if_ended(it: Iteration) -> None:
    """This iteration wrote state and hands nothing on: if the request ended meanwhile and its
    namespace is gone, what this iteration wrote after the cleanup goes too."""
    if it.control.read() is None:
        it.states.cleanup()
        it.data.cleanup()
