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

import collections
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
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from faasflow.runtime.queue import CallIdInUse, Job, finish_job, held_job, insert_job, open_db
from faasflow.runtime.server import StartResponse, WSGIApp

if TYPE_CHECKING:
    from faasflow.runtime.dispatch import Dispatcher
    from faasflow.runtime.queue import DurableQueue
    from faasflow.runtime.workers import WorkerPool, WorkerProcess

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
#: Rows the gateway gives one worker to run at a time: its :data:`RUNNERS` threads for them
#: busy, and the rest hides the round trip of a ``ran`` report through the gateway; more
#: leaves one worker with the tail of a fan-out while the other is idle (16 measured best of
#: 6, 10, 16, 32 and 64 on W2 100 and W3).
ROUTED_PER_WORKER = 16
#: Rows of one pool waiting for a worker with room; beyond them the dispatcher delivers.
BACKLOG = 1024

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

    def stop_keeping(self) -> None:
        """Keep no more hand-ons (the gateway is stopping: it waits for the held ones, and a
        hand-on over HTTP stays queued for its next start)."""
        self._keeping = False

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


# -- the gateway's side --------------------------------------------------------------------------


class KeptHub:
    """What the gateway does with its workers' reports on kept iterations: counted as the
    invocations they replace, handed back ones retried by the dispatcher, those a dead worker
    held delivered."""

    def __init__(self, queue: DurableQueue, count: Callable[[str, int], None]) -> None:
        self.queue = queue
        self.count = count
        self.dispatcher: Dispatcher | None = None
        self._lock = threading.Lock()
        self._routed: dict[str, int] = {}
        """Rows made each live worker's (by holder) that it has not reported run yet."""
        self._dead: set[str] = set()
        self._backlog: dict[str, collections.deque[tuple[str, str]]] = {}
        """Per pool: rows (id, the worker holding it) waiting for a worker with room."""
        self._pools: dict[str, WorkerPool] = {}
        self._stopped = False
        self._pool_of: dict[str, WorkerPool] = {}
        """The pool of each worker (by holder) given rows."""

    def report(self, holder: str, message: Mapping[str, Any]) -> None:
        kept = message.get("kept")
        if isinstance(kept, dict):
            for function, times in kept.items():
                if isinstance(times, int) and times > 0:
                    self.count(str(function), times)
        queued = message.get("deliver")
        if isinstance(queued, str):
            function = message.get("function")
            if not (isinstance(function, str) and self._route(queued, holder, function)):
                self.queue.take_over(queued, holder, claim=False)
        if isinstance(message.get("ran"), str):
            self._ran(holder)
        job_id = message.get("hand_back")
        if isinstance(job_id, str):
            status = message.get("status")
            self._hand_back(job_id, holder, status if isinstance(status, int) else None,
                            str(message.get("why") or ""))

    def _route(self, job_id: str, holder: str, function: str) -> bool:
        """Give the row ``holder`` committed to the least busy worker serving ``function``, or
        keep its id until one has room (:data:`ROUTED_PER_WORKER`): no HTTP delivery, and the
        branches of a fan-out go to whichever worker is free first. False when the backlog is
        full (the dispatcher delivers it then)."""
        pool = self._pool(function)
        if pool is None:
            return False
        with self._lock:
            if holder in self._dead or self._stopped:
                return False  # its rows are being (or were) released; the gateway stops
            backlog = self._backlog.setdefault(pool.name, collections.deque())
            self._pools[pool.name] = pool
            if len(backlog) >= BACKLOG:
                return False
            backlog.append((job_id, holder))
            self._drain(pool)
        return True

    def stop(self) -> None:
        """The gateway is stopping: the rows still waiting for a worker stay queued for its
        next start, as its dispatcher's do (the rows given to workers run to their end)."""
        with self._lock:
            self._stopped = True
            waiting = [entry for backlog in self._backlog.values() for entry in backlog]
            self._backlog.clear()
        for job_id, holder in waiting:
            self.queue.take_over(job_id, holder, claim=False)

    def _ran(self, holder: str) -> None:
        """The worker ``holder`` ran a row it was given: give it (or another) the next."""
        with self._lock:
            if self._routed.get(holder, 0) > 0:
                self._routed[holder] -= 1
            pool = self._pool_of.get(holder)
            if pool is not None:
                self._drain(pool)

    def _drain(self, pool: WorkerPool) -> None:
        """Give the waiting rows of ``pool`` to its workers while one has room (under
        ``_lock``)."""
        backlog = self._backlog.get(pool.name)
        while backlog:
            job_id, source = backlog[0]
            # a dead worker's rows were released with the rest of what it held
            if source in self._dead or self._give(job_id, source, pool):
                backlog.popleft()
            else:
                return  # every worker has its fill

    def _pool(self, function: str) -> WorkerPool | None:
        dispatcher = self.dispatcher
        return None if dispatcher is None else dispatcher.pool_of.get(function)

    def _give(self, job_id: str, holder: str, pool: WorkerPool) -> bool:
        """Hand the row over to the least busy worker of ``pool`` and tell it (under
        ``_lock``); False when every worker has its fill."""
        choice: WorkerProcess | None = None
        least = ROUTED_PER_WORKER
        for worker in pool.workers:
            to = worker.holder
            if not to or to in self._dead or worker.upstream is None or not worker.alive():
                continue
            load = self._routed.get(to, 0) + worker.upstream.in_flight
            if load < least:
                choice, least = worker, load
        if choice is None:
            return False
        # committed before the worker hears of it; a worker that dies from here on releases
        # it, as exited() marks the holder dead under this lock first
        if self.queue.hand_over(job_id, holder, choice.holder):
            self._routed[choice.holder] = self._routed.get(choice.holder, 0) + 1
            self._pool_of[choice.holder] = pool
            choice.tell(b"run " + job_id.encode())
        # else not held by that worker any more: delivered otherwise
        return True

    def _hand_back(self, job_id: str, holder: str, status: int | None, why: str) -> None:
        job = self.queue.take_over(job_id, holder)
        if job is None:
            return
        dispatcher = self.dispatcher
        if dispatcher is None:  # the dispatcher is being set up: its threads take it soon
            self.queue.retry(job, 0.1)
            return
        dispatcher.settle_elsewhere(job, status, why)

    def watch(self, timeout: float, closing: threading.Event) -> None:
        """Deliver, from a thread of its own until ``closing``, the held rows older than twice
        the gateway's call ``timeout``: a worker that hangs (SIGSTOP, a deadlock) never closes
        its pipe, and through the gateway such an iteration would have timed out and been
        delivered again. A row waits at most one iteration before its own starts, hence two."""
        limit = 2 * timeout + 10.0

        def loop() -> None:
            while not closing.wait(min(5.0, limit / 4)):
                try:
                    holders = self.queue.release_stale(limit)
                except Exception as exc:  # tried again on the next round
                    log.warning("cannot release stale held calls: %s", exc)
                    continue
                if holders:
                    logging.getLogger("faasflow.gateway").warning(
                        "calls held longer than %.0fs by %s delivered again (the worker "
                        "hangs, or a call outlasted --timeout)", limit, ", ".join(holders))
                with self._lock:  # rows waiting while no worker reported a run (restarts)
                    for pool in list(self._pools.values()):
                        self._drain(pool)

        threading.Thread(target=loop, daemon=True, name="faasflow-kept-watch").start()

    def exited(self, holder: str) -> None:
        """The worker process ``holder`` is dead (reaped): deliver what it held."""
        with self._lock:  # no row is made its own from here on
            self._dead.add(holder)
            self._routed.pop(holder, None)
            pool = self._pool_of.pop(holder, None)
        try:
            released = self.queue.release_holder(holder)
        except Exception as exc:  # the next gateway start delivers them
            log.warning("cannot release the calls worker %s held: %s", holder, exc)
            return
        finally:
            if pool is not None:  # the others take what waited for this one
                with self._lock:
                    self._drain(pool)
        if released:
            logging.getLogger("faasflow.gateway").warning(
                "worker %s died holding %d queued calls; delivering them again", holder,
                released)
