"""The gateway's side of iterations kept on the worker (:mod:`faasflow.runtime.kept`): what it
does with its workers' reports. Hand-ons are counted as the invocations they replace; a row a
worker gives it (``deliver``) is made the least busy worker's and that worker told to run it,
or waits for one with room; a row handed back is retried by the dispatcher; the rows a dead or
hung worker held are delivered again.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faasflow.runtime.dispatch import Dispatcher
    from faasflow.runtime.queue import DurableQueue
    from faasflow.runtime.workers import WorkerPool, WorkerProcess

__all__ = ["BACKLOG", "ROUTED_PER_WORKER", "KeptHub"]

log = logging.getLogger("faasflow.gateway")

#: Rows the gateway gives one worker to run at a time: its ``RUNNERS`` threads for them
#: busy, and the rest hides the round trip of a ``ran`` report through the gateway; more
#: leaves one worker with the tail of a fan-out while the other is idle (16 measured best of
#: 6, 10, 16, 32 and 64 on W2 100 and W3).
ROUTED_PER_WORKER = 16
#: Rows of one pool waiting for a worker with room; beyond them the dispatcher delivers.
BACKLOG = 1024


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
        ended, flow = message.get("ended"), message.get("flow")
        if isinstance(ended, str) and isinstance(flow, str):
            self._tell_ended(holder, flow, ended)
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

    def _tell_ended(self, holder: str, flow: str, request_id: str) -> None:
        """Tell the other workers serving ``flow`` that the request ended in ``holder``: one
        of them may be waiting for its output."""
        pool = self._pool(flow)
        if pool is None or " " in flow:
            return
        line = f"ended {flow} {request_id}".encode()
        for worker in pool.workers:
            if worker.holder != holder and worker.alive():
                worker.tell(line)

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
