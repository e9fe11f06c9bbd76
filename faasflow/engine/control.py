"""Acting on a request from outside its iterations: pause, resume, stop, state, and the sweep
that finishes what crashed processes left (retention, deadlines, half-ended requests, held
iterations whose forward was lost)."""

from __future__ import annotations

import logging
import time

from faasflow.errors import FaasflowError, RequestNotActive, RequestNotFound

from .capture import forget as forget_captured
from .endings import failure_of, finalize, graph_of, node_marks, node_runs
from .ids import REQUEST_ID_HEADER
from .iteration import Core
from .nodestates import held_instances, node_states
from .records import RequestRecord
from .redrive import keeps, release
from .retrying import retry_backend
from .state import FINISHED, PAUSED, RUNNING, RequestControl

__all__ = ["pause", "record", "resume", "state", "stop", "sweep"]

log = logging.getLogger("faasflow.engine")

#: A running record without request state is a start that crashed; the sweep fails it after
#: this long (a repeated start within it carries on instead).
START_GRACE = 300.0


def ended_error(core: Core, request_id: str, action: str) -> FaasflowError:
    """Not running: NotActive when the request is recorded as ended, else NotFound."""
    found = core.records.entry(request_id)
    if found is None:
        return RequestNotFound(request_id, action)
    return RequestNotActive(request_id, found[1]["status"], action)


def pause(core: Core, request_id: str) -> None:
    try:
        core.control(request_id).pause()
    except RequestNotFound:
        raise ended_error(core, request_id, "pause") from None
    log.info("[Request `%s`] Paused", request_id)


def resume(core: Core, request_id: str) -> None:
    control = core.control(request_id)
    try:
        held = control.resume()
    except RequestNotFound:
        raise ended_error(core, request_id, "resume") from None
    except RequestNotActive:
        live = control.live()
        if live is not None and live.state == RUNNING and live.parked:
            forward_held(core, control, live.parked)  # an earlier resume failed half-way
        raise
    log.info("[Request `%s`] Resumed (%d held iterations)", request_id, len(held))
    forward_held(core, control, held)


def forward_held(core: Core, control: RequestControl, held: tuple[str, ...]) -> None:
    """Forward held iterations, each unlisted only once its forward was accepted (a crash in
    between forwards it again later: the copy is then a harmless duplicate)."""
    rid = control.request_id
    headers = {REQUEST_ID_HEADER: rid, "Content-Type": "application/json"}

    def send(body: bytes) -> None:
        retry_backend(
            core.settings.backend_retry,
            lambda: core.invoker.forward(core.name, rid, body, headers),
        )

    for key in held:
        body = control.parked_body(key)
        if body is not None:
            send(body)
        control.release_parked(key)


def stop(core: Core, request_id: str) -> None:
    """End the request now: no hooks, no callback; its state is deleted."""
    found = core.records.entry(request_id)
    if found is None:
        raise RequestNotFound(request_id, "stop")
    if found[1]["status"] != "running":
        raise RequestNotActive(request_id, found[1]["status"], "stop")
    control = core.control(request_id)
    tomb = control.end("stopped")
    if tomb is None:
        live = control.read()
        if live is not None and live[1].terminal:
            if live[1].status == "stopped":  # an earlier stop failed after its decision
                finalize(core, request_id, live[1], control.states, control.data)
                core.waiters.notify(request_id)
            raise RequestNotActive(request_id, live[1].status or "ended", "stop")
        raise RequestNotActive(request_id, "ended", "stop")
    finalize(core, request_id, tomb, control.states, control.data)
    log.info("[Request `%s`] Stopped", request_id)
    core.waiters.notify(request_id)


def state(core: Core, request_id: str) -> str:
    """``RUNNING``, ``PAUSED`` or ``FINISHED`` (also for unknown ids, as faas-flow)."""
    live = core.control(request_id).live()
    return FINISHED if live is None else live.state


def sweep(core: Core, now: float | None = None) -> int:
    """One maintenance pass over the flow's requests; how many it acted on."""
    now = time.time() if now is None else now
    acted = 0
    forgotten: set[str] = set()
    for rid, entry in core.records.entries().items():
        try:
            if _sweep_one(core, rid, entry, now, forgotten):
                acted += 1
        except FaasflowError as exc:  # one broken request must not stop the pass
            log.warning("[Request `%s`] sweep failed: %s", rid, exc)
    if forgotten:
        core.records.forget_calls(forgotten)
    return acted


def _sweep_one(
    core: Core, rid: str, entry: dict[str, object], now: float, forgotten: set[str]
) -> bool:
    control = core.control(rid)
    if entry["status"] != "running":
        found = control.read()
        expires = entry.get("expires")
        expired = isinstance(expires, (int, float)) and expires < now
        if found is not None and found[1].terminal:
            if not keeps(core, found[1]):
                finalize(core, rid, found[1], control.states, control.data)  # crash mid-cleanup
                return True
            if not expired:  # a failure kept for a redrive
                if core.records.load(rid) is None:
                    finalize(core, rid, found[1], control.states, control.data)
                    return True
                return False
            release(control)
        if expired:
            core.records.forget(rid)
            if core.settings.capture != "none":
                forget_captured(core, rid)
            forgotten.add(rid)
            return True
        return False
    found = control.read()
    if found is None:
        created = entry.get("created")
        if isinstance(created, (int, float)) and created + START_GRACE < now:
            tomb_record = RequestRecord(
                rid, core.name, "failure", float(created), now, None,
                f"request {rid} never started: its start crashed and was not repeated",
            )
            if core.records.close(tomb_record):
                core.waiters.notify(rid)
                return True
        return False
    current = found[1]
    if current.terminal:  # its ender crashed after the decision: finish the record
        finalize(core, rid, current, control.states, control.data)
        core.waiters.notify(rid)
        return True
    deadline = entry.get("deadline")
    if isinstance(deadline, (int, float)) and deadline < now:
        tomb = control.end("failure", error=f"request {rid} passed its deadline")
        if tomb is not None:
            log.warning("[Request `%s`] Failed: passed its deadline", rid)
            finalize(core, rid, tomb, control.states, control.data)
            core.waiters.notify(rid)
            return True
        return False
    if current.state == RUNNING and current.parked:  # a resume that crashed mid-way
        forward_held(core, control, current.parked)
        return True
    return False


#: The first look again for an ended request's full record, and how long it is looked for.
RECORD_FIRST_WAIT = 0.0005
RECORD_WAIT = 0.5


def record(core: Core, request_id: str) -> RequestRecord | None:
    """The request's record: live progress while it runs, the outcome once it ended."""
    found = core.records.entry(request_id)
    if found is None:
        return None
    entry = found[1]
    if entry["status"] == "running":
        ctl = core.control(request_id)
        read = ctl.read()
        marks = node_marks(ctl.states)
        digest = read[1].definition_hash if read is not None else str(entry.get("digest", ""))
        graph = graph_of(core, request_id, digest) if read is not None else None
        if read is None or not read[1].terminal:
            paused = read is not None and read[1].state == PAUSED
            held = []
            if read is not None and read[1].parked:
                bodies = [ctl.parked_body(key) for key in read[1].parked]
                held = held_instances(b for b in bodies if b is not None)
            return RequestRecord(
                request_id, core.name, "paused" if paused else "running",
                float(entry["created"]), nodes=node_runs(ctl.states, marks),
                states=node_states(graph, marks, ended=None, held=held),
            )
        tomb = read[1]  # decided, the record is being written
        return RequestRecord(
            request_id, core.name, tomb.status or "failure", float(entry["created"]),
            tomb.ended, ctl.output_of(tomb), tomb.error, node_runs(ctl.states, marks),
            failure_of(tomb),
            node_states(graph, marks, ended=tomb.status or "failure",
                        failed_node=tomb.error_node, ended_at=tomb.ended),
        )
    # The full record lands right after the status claim (``RecordBook.close``, then
    # ``save``: a millisecond or two): looked for again at once, then less often, half a
    # second in all. A fixed 10 ms here cost every waiter that looked inside that window
    # 10 ms (a ten-step chain on sqlite took 14 ms instead of 4 in a third of its requests).
    delay, waited = RECORD_FIRST_WAIT, 0.0
    while True:
        loaded = core.records.load(request_id)
        if loaded is not None:
            return loaded
        if waited >= RECORD_WAIT:
            break
        time.sleep(delay)
        waited += delay
        delay = min(delay * 2, 0.01)
    return RequestRecord(
        request_id, core.name, entry["status"], float(entry["created"]), entry.get("ended")
    )
