"""Redrive and re-run: continue a failed request from the node(s) that failed, or start it again.

With ``FAASFLOW_REDRIVE=true`` a failed request's namespace is not cleaned when it fails: the
done and handed markers, the stored outputs and fan-in arrivals stay until its record expires.
The iteration that failed, and every iteration refused because the request had failed (a
parallel branch that went on, or was interrupted between two operations), is kept as
``redrive--<mid>`` (a state key to list it, the message in the DataStore).

A redrive is decided like an end, by compare-and-swap: first the record entry moves from
``failure`` back to ``running`` (the one redrive that wins it goes on, any other answers 409),
then the tombstone goes back to ``RUNNING`` with a new deadline; then each kept iteration's
interrupted claim is dropped and the iteration forwarded again. A succeeded node is never run
again: its marker says done. A crash after the decision leaves the request running with some
iterations not forwarded: the request then ends by its deadline, like any lost iteration.
"""

from __future__ import annotations

import json
import logging
import os
import time

import attrs

from faasflow.errors import (
    CompareFailed,
    FaasflowError,
    KeyNotFound,
    RequestNotActive,
    RequestNotFound,
)

from .ids import CLAIM, REQUEST_ID_HEADER, exec_id
from .iteration import Core, Iteration
from .message import Message
from .retrying import retry_backend
from .state import RUNNING, RequestControl, RequestState

__all__ = ["KEPT", "RedriveRefused", "keep_iteration", "keeps", "redrive", "release"]

log = logging.getLogger("faasflow.engine")

KEPT = "redrive--"


class RedriveRefused(RequestNotActive):
    """The request cannot be redriven (answered 409 with the reason)."""

    def __init__(self, request_id: str, reason: str) -> None:
        self.request_id = request_id
        self.state = "failure"
        FaasflowError.__init__(self, f"cannot redrive request {request_id}: {reason}")


def keeps(core: Core, tomb: RequestState) -> bool:
    """Whether this ended request's namespace stays for a redrive."""
    return core.settings.redrive and tomb.status == "failure"


def keep_iteration(it: Iteration) -> None:
    """Keep this iteration's message so that a redrive can forward it again."""
    key = KEPT + it.msg.mid
    it.data.set(key, it.msg.encode(None))
    it.states.set(key, str(time.time()))


def redrive(core: Core, request_id: str) -> int:
    """Continue a failed request from its failed iterations; how many were forwarded."""
    if not core.settings.redrive:
        raise RedriveRefused(request_id, "FAASFLOW_REDRIVE is off, so its state was cleaned "
                             "when it failed; set FAASFLOW_REDRIVE=true for later failures, or "
                             "re-run it (POST /flow/<id>/rerun)")
    found = core.records.entry(request_id)
    if found is None:
        raise RequestNotFound(request_id, "redrive")
    raw, entry = found
    if entry["status"] != "failure":
        raise RedriveRefused(request_id, f"it is {entry['status']}; only a failed request can "
                             "be redriven (POST /flow/<id>/rerun starts any request again)")
    control = core.control(request_id)
    state = control.read()
    kept = sorted(control.states.scan(KEPT))
    if state is None or not state[1].terminal or not kept:
        raise RedriveRefused(request_id, "its state is gone (it failed before FAASFLOW_REDRIVE "
                             "was on, or the failed iteration was not kept); re-run it instead")
    deadline = time.time() + core.settings.request_timeout if core.settings.request_timeout \
        else None
    if not core.records.reopen(request_id, raw, entry, deadline):
        raise RedriveRefused(request_id, "another redrive of it won")
    _reopen_state(control, deadline)
    log.info("[Request `%s`] Redriven (%d kept iterations)", request_id, len(kept))
    for key in kept:
        _forward(core, control, key, deadline)
    return len(kept)


def _reopen_state(control: RequestControl, deadline: float | None) -> None:
    while True:
        found = control.read()
        if found is None or not found[1].terminal:
            return
        raw, tomb = found
        running = RequestState(RUNNING, tomb.definition_hash, deadline)
        try:
            control.states.update("request-state", raw, running.encode())
        except (CompareFailed, KeyNotFound):
            continue
        control.states.delete("hooks-done")  # the redriven request's own end runs them again
        return


def _forward(core: Core, control: RequestControl, key: str, deadline: float | None) -> None:
    try:
        msg = Message.decode(control.data.get(key), None)
    except KeyNotFound:
        control.states.delete(key)
        return
    eid = exec_id(_start_of(core, msg), msg.branches)
    try:
        mark = json.loads(control.states.get(CLAIM + eid))
        if mark.get("p") == "claimed":  # interrupted by the failure: run it again
            control.states.delete(CLAIM + eid)
    except KeyNotFound:
        pass
    again = attrs.evolve(msg, deadline=deadline, mid=os.urandom(12).hex())
    body = again.encode(core.key)
    headers = {REQUEST_ID_HEADER: msg.request_id, "Content-Type": "application/json"}
    retry_backend(core.settings.backend_retry,
                  lambda: core.invoker.forward(core.name, msg.request_id, body, headers))
    control.states.delete(key)
    control.data.delete(key)


def _start_of(core: Core, msg: Message) -> str:
    """The node whose claim the message's iteration takes (a static sub-DAG: its start)."""
    try:
        graph = core.flow.graph(msg.query, msg.request_id)
    except Exception:
        return msg.node
    node = graph.nodes.get(msg.node)
    while node is not None and node.sub_dag is not None and not node.is_dynamic:
        node = node.sub_dag.nodes[node.sub_dag.start]
    return msg.node if node is None else node.unique_id


def release(control: RequestControl) -> None:
    """The record of a kept failure expired: its namespace goes too."""
    control.data.cleanup()
    control.states.cleanup()
