"""Iterations kept on the worker: a flow's next iteration goes into the durable queue from the
worker process itself and runs on that worker, without the two HTTP hops through the gateway.

Through the gateway, a hand-on is a POST ``/async-function/<flow>/flow/<id>/forward`` (the
gateway commits the job to its SQLite queue and answers 202), then a dispatcher thread's POST of
the job to a worker: two HTTP round trips per chain step. A worker started by a gateway whose
queue is the built-in :class:`~faasflow.runtime.queue.DurableQueue` instead commits the job to
that queue's file itself, *held* by this worker process (the row's ``holder``), and runs it on
one of its own threads:

- inside an iteration the worker runs, the first iteration it hands on is kept: it runs right
  after the current one on the same thread (a chain is a loop, never a recursion);
- an iteration the gateway delivered (or a flow's start) keeps its first hand-on only when one
  of :data:`RUNNERS` runner threads is free; a runner gives its chain back to the gateway after
  :data:`BURST_STEPS` steps or :data:`BURST_SECONDS`, so deliveries of other requests are not
  starved;
- every other hand-on (a fan-out's further branches, a chain past its burst) is committed the
  same way, then given to the gateway (a ``deliver`` line on the pipe below). The gateway makes
  the row the least busy worker's (``holder`` set to it, committed) and tells that worker on
  its stdin (``run <id>``), which runs it on threads of its own and reports it ``ran``: the
  branches spread over the workers without any HTTP request. A worker has at most
  :data:`ROUTED_PER_WORKER` such rows not yet run; the others wait in the gateway (ids only,
  the rows still held by the worker that committed them) and go to the first worker that
  reports one ``ran``. Past :data:`BACKLOG` waiting, the gateway's dispatcher delivers the row
  over HTTP instead;
- a kept iteration answered with a retry status (``dispatch.RETRY_STATUSES``), or that could
  not run, is handed back: a line on the worker's protocol stdout (the pipe the gateway reads)
  names it, and the gateway's :class:`KeptHub` takes the row over and retries it with the
  dispatcher's backoff, attempt count and dead-lettering;
- otherwise its row is deleted (and its call id remembered) as the dispatcher's ``done`` does.

Crash safety is the queue's: a row is committed before the hand-on returns, so a worker killed
at any point leaves it in the file; the gateway sees the worker's pipe close, reaps it, and
delivers every row that worker held (:meth:`DurableQueue.release_holder`) — a row given to
another worker is that worker's before it is told, and no row is given to a worker whose death
the gateway saw; a gateway killed
takes its workers with it and delivers every row on start. A redelivered iteration whose work
was done is a duplicate the engine's markers recognise.

Hand-ons are counted as invocations of the flow, as the HTTP ones are, reported to the gateway
in batches on the same pipe. ``FAASFLOW_SAME_WORKER_ITERATIONS=0`` turns it all off.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from faasflow.engine.records import RequestRecord
from faasflow.runtime.kepthub import KeptHub  # the gateway's side, named here too
from faasflow.runtime.queue import CallIdInUse, Job, finish_job, held_job, insert_job, open_db
from faasflow.runtime.server import StartResponse, WSGIApp

__all__ = ["BURST_SECONDS", "BURST_STEPS", "RUNNERS", "KeptHub", "SameWorkerIterations",
           "enabled", "new_holder"]

log = logging.getLogger("faasflow.worker")

#: Threads of one worker running kept iterations (a chain each).
RUNNERS = 4
#: Steps, and seconds, a runner keeps one chain before handing it to the gateway.
BURST_STEPS = 64
BURST_SECONDS = 0.5
#: Hand-ons counted before the worker reports them (also at the end of every burst).
REPORT_EVERY = 32

#: Request headers never stored with a job (as the gateway's ``/async-function`` drops them).
_DROPPED = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer",
    "proxy-authorization", "proxy-authenticate", "host", "content-length",
})


def enabled(environ: Mapping[str, str]) -> bool:
    """False when ``FAASFLOW_SAME_WORKER_ITERATIONS`` turns the shortcut off."""
    from faasflow.settings import EnvVars

    value = environ.get(EnvVars.SAME_WORKER_ITERATIONS, "").strip().lower()
    return value not in ("0", "false", "no", "off")


def new_holder(worker_name: str) -> str:
    """A name for one start of a worker process (a restarted worker holds nothing yet)."""
    return f"{worker_name}:{uuid.uuid4().hex[:12]}"


# -- the worker's side ---------------------------------------------------------------------------


class _Reports:
    """One JSON object a line on the pipe the gateway reads (the worker's protocol stdout).

    Each line is one ``os.write`` of less than ``PIPE_BUF`` bytes, so it never interleaves
    with the lines other reporters of this process write to the same pipe."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._counted = 0

    def send(self, message: Mapping[str, Any]) -> None:
        with self._lock:
            self._write(message)

    def count(self, function: str) -> None:
        with self._lock:
            self._counts[function] = self._counts.get(function, 0) + 1
            self._counted += 1
            if self._counted >= REPORT_EVERY:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._counts:
            counts, self._counts, self._counted = self._counts, {}, 0
            self._write({"kept": counts})

    def _write(self, message: Mapping[str, Any]) -> None:
        if self.fd is None:
            return
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with contextlib.suppress(OSError):  # the gateway is gone; this worker dies with it
            os.write(self.fd, line)


class _EndReports:
    """A :class:`~faasflow.engine.records.RecordWatcher` reporting each end of a request."""

    def __init__(self, reports: _Reports, flow: str) -> None:
        self.reports = reports
        self.flow = flow

    def request_opened(self, flow: str, request_id: str) -> None:
        pass

    def request_ended(self, record: RequestRecord) -> None:
        self.reports.send({"ended": record.request_id, "flow": self.flow})


class SameWorkerIterations:
    """The worker's :class:`~faasflow.shortcuts.ForwardShortcut`: commits a hand-on to the
    gateway's queue, held by this worker, and runs it on this worker."""

    def __init__(self, app: WSGIApp, flows: Iterable[str], queue_path: str | Path, holder: str,
                 gateway_host: str, *, runners: int = RUNNERS) -> None:
        self.app = app
        self.flows = frozenset(flows)
        self.holder = holder
        self.gateway_host = gateway_host
        self._db = open_db(Path(queue_path))
        self._db_lock = threading.Lock()
        self._reports = _Reports()
        self._slots = threading.BoundedSemaphore(max(1, runners))
        self._runners = ThreadPoolExecutor(max(1, runners), thread_name_prefix="faasflow-kept")
        # rows the gateway made this worker's: their own threads, never waiting for a slot a
        # hand-on queued behind them holds
        self._routed = ThreadPoolExecutor(max(1, runners), thread_name_prefix="faasflow-routed")
        self._local = threading.local()
        self._keeping = True
        self._waiters: dict[str, Any] = {}
        self._hear_ends()

    def stop_keeping(self) -> None:
        """Keep no more hand-ons (the gateway is stopping: it waits for the held ones, and a
        hand-on over HTTP stays queued for its next start)."""
        self._keeping = False

    def _hear_ends(self) -> None:
        """Report every end of a request of the flows served here, so the gateway can tell the
        other workers: a start waiting for its output there (``X-Faas-Flow-Wait``) polls the
        records with a growing interval, up to 0.1 s, when the end is not in its process -
        a fan-out's last branch or a chain past its burst often runs on another worker."""
        apps = getattr(self.app, "apps", {})
        for name in self.flows:
            try:
                engine = apps[name].engine(name)
            except Exception:  # an invalid flow (it answers 500), or not a FlowApp
                continue
            records = getattr(engine, "records", None)
            core = getattr(engine, "core", None)
            if records is None or core is None:
                continue
            records.watchers.append(_EndReports(self._reports, name))
            self._waiters[name] = core.waiters

    def ended(self, flow: str, request_id: str) -> None:
        """A request of ``flow`` ended in another worker (an ``ended`` line on stdin): wake a
        thread here waiting for it."""
        waiters = self._waiters.get(flow)
        if waiters is not None:
            waiters.notify(request_id)

    def reports_to(self, stream: IO[str]) -> None:
        """Report to ``stream`` (the worker's protocol stdout, once its ready line is out)."""
        stream.flush()
        self._reports.fd = stream.fileno()

    # the served iteration's side

    def wrap(self, app: WSGIApp) -> WSGIApp:
        """``app`` as the worker's server runs it: a request may keep its first hand-on, which
        a runner starts at once (the request may go on for long: a flow's start waiting for
        its output, say)."""

        def served(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            local = self._local
            pending: list[Job] = []
            local.pending = pending
            local.runner = False
            try:
                return app(environ, start_response)
            finally:
                local.pending = None

        return served

    def forward(self, flow_name: str, request_id: str, message: bytes,
                headers: Mapping[str, str]) -> bool:
        local = self._local
        pending: list[Job] | None = getattr(local, "pending", None)
        if pending is None or flow_name not in self.flows or not self._keeping:
            return False  # not in an iteration of this worker: over HTTP
        if any(k.lower() == "x-callback-url" for k in headers):
            return False  # the gateway's dispatcher posts such a call's answer
        # the first hand-on runs here; the others (a fan-out's further branches, a chain past
        # its burst, every runner busy) are queued for the gateway to deliver to any worker,
        # without the HTTP request
        keep = not pending and (
            local.steps < BURST_STEPS and time.monotonic() < local.until if local.runner
            else self._slots.acquire(blocking=False))
        job = self._job(flow_name, request_id, message, headers)
        stored: bool | None
        try:
            with self._db_lock:
                stored = insert_job(self._db, job, self.holder)
        except CallIdInUse:
            stored = None  # the gateway answers the 409 naming the id
        except Exception as exc:  # sqlite trouble: the gateway's queue takes it as before
            log.warning("cannot keep the iteration of request %s on this worker: %s",
                        request_id, exc)
            stored = None
        if not stored:
            if keep and not local.runner:
                self._slots.release()
            # False: the same call was queued before, nothing to do (the gateway answers 202)
            return stored is False
        self._reports.count(flow_name)
        if not keep:
            # the gateway hands it to the least busy worker's runners (this one's too), or to
            # its dispatcher when every worker has enough of them
            self._reports.send({"deliver": job.id, "function": flow_name})
            return True
        pending.append(job)
        if not local.runner:
            self._runners.submit(self._burst, job)
        return True

    def _job(self, flow_name: str, request_id: str, message: bytes,
             headers: Mapping[str, str]) -> Job:
        """The row the gateway's ``/async-function`` would have stored for this forward."""
        now = time.time()
        stored = {k: v for k, v in headers.items() if k.lower() not in _DROPPED}
        call_id = next((v for k, v in stored.items() if k.lower() == "x-call-id"), "")
        stored = {k: v for k, v in stored.items()
                  if k.lower() not in ("x-call-id", "content-type")}
        stored["Content-Type"] = "application/json"
        stored["X-Call-Id"] = call_id or str(uuid.uuid4())
        stored.setdefault("X-Start-Time", str(int(now * 1e9)))
        stored["X-Forwarded-Host"] = self.gateway_host
        stored["X-Forwarded-For"] = "127.0.0.1"
        return Job(id=stored["X-Call-Id"], function=flow_name,
                   path=f"/flow/{quote(request_id, safe='')}/forward", query="", method="POST",
                   headers=tuple(stored.items()), body=message, enqueued=now)

    # the runner's side

    def routed(self, job_id: str) -> None:
        """The gateway made the row ``job_id`` this worker's (a ``run`` line on its stdin):
        run it on a thread of its own, as a burst."""
        self._routed.submit(self._run_routed, job_id)

    def _run_routed(self, job_id: str) -> None:
        try:
            with self._db_lock:
                job = held_job(self._db, job_id, self.holder)
            if job is not None:  # else delivered meanwhile (held past the stale limit)
                self._burst(job, slot=False)
        except Exception as exc:  # the row stays held: delivered when this worker dies
            log.warning("cannot run the call %s the gateway gave this worker: %s", job_id, exc)
        finally:
            self._reports.send({"ran": job_id})

    def _burst(self, first: Job, *, slot: bool = True) -> None:
        """Run a kept iteration, then the one it kept, and so on, up to the burst's bound."""
        local = self._local
        local.runner = True
        local.steps = 0
        local.until = time.monotonic() + BURST_SECONDS
        job: Job | None = first
        try:
            while job is not None:
                pending: list[Job] = []
                local.pending = pending
                local.steps += 1
                try:
                    self._run(job)
                finally:
                    local.pending = None
                job = pending[0] if pending else None  # it runs when this one returned
        finally:
            local.runner = False
            self._reports.flush()
            if slot:
                self._slots.release()

    def _run(self, job: Job) -> None:
        from faasflow.runtime.dispatch import ATTEMPT_HEADER, RETRY_STATUSES

        headers = dict(job.headers)
        headers[ATTEMPT_HEADER] = str(job.attempts + 1)
        answer: list[str] = []

        def start_response(status: str, response_headers: list[tuple[str, str]],
                           exc_info: object = None) -> Callable[[bytes], object]:
            answer[:] = [status]
            return lambda data: None

        try:
            body = b"".join(self.app(_environ(job, headers), start_response))
            status = int(answer[0].split(" ", 1)[0]) if answer else 500
        except Exception as exc:
            log.exception("kept call %s to %s failed to run", job.id, job.function)
            self._hand_back(job, None, f"{type(exc).__name__}: {exc}")
            return
        if status in RETRY_STATUSES:
            self._hand_back(job, status, body[:300].decode(errors="replace").strip())
            return
        if status >= 400:
            # 410: an iteration of a request that was stopped or ended meanwhile - expected
            log.log(logging.INFO if status == 410 else logging.WARNING,
                    "kept call %s to %s%s (attempt %d) answered %d: %s", job.id, job.function,
                    job.path, job.attempts + 1, status,
                    body[:300].decode(errors="replace").strip())
        try:
            with self._db_lock:
                finish_job(self._db, job)
        except Exception as exc:  # the row stays held: the gateway takes it back
            log.warning("cannot finish kept call %s: %s", job.id, exc)
            self._hand_back(job, None, f"cannot delete its row: {exc}")

    def _hand_back(self, job: Job, status: int | None, why: str) -> None:
        self._reports.flush()
        self._reports.send({"hand_back": job.id, "status": status, "why": why[:300]})

    def close(self) -> None:
        self._runners.shutdown(wait=False, cancel_futures=True)
        self._routed.shutdown(wait=False, cancel_futures=True)


def _environ(job: Job, headers: Mapping[str, str]) -> dict[str, Any]:
    """The WSGI environ of the dispatcher's delivery of ``job`` to this worker."""
    path = f"/{job.function}{job.path}"
    environ: dict[str, Any] = {
        "REQUEST_METHOD": job.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "RAW_URI": path + (f"?{job.query}" if job.query else ""),
        "QUERY_STRING": job.query,
        "CONTENT_LENGTH": str(len(job.body)),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "0",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(job.body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key != "CONTENT_LENGTH":
            environ[f"HTTP_{key}"] = value
    return environ
