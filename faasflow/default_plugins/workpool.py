"""The local invoker's worker pool: a queue of jobs drained by a fixed number of threads.

Lighter than :class:`concurrent.futures.ThreadPoolExecutor` on the path every fan-out branch
takes: a job is a plain tuple appended to a deque (no Future, no queue lock, no condition),
a worker that finds the deque empty parks on a lock of its own, and a submitter wakes one only
when one is parked. A busy pool therefore costs a submitter one ``append`` and a length check.

Like the executor's threads, the workers are not daemons: a process that exits with jobs
queued runs them first (the workers are told at interpreter shutdown, before it joins them).
A forked child starts with an empty pool: the parent's threads did not come along, nor do its
queued jobs (they are the parent's to run).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["WorkPool"]

log = logging.getLogger("faasflow.invoker")

_J = TypeVar("_J")

_pools: weakref.WeakSet[WorkPool[Any]] = weakref.WeakSet()


class WorkPool(Generic[_J]):
    """Up to ``size`` threads calling ``run(job)`` for every job :meth:`put` queues, in
    order. ``run`` handles its own errors; whatever escapes it is logged and the worker goes
    on (as an executor's would)."""

    def __init__(self, size: int, run: Callable[[_J], None], name: str = "pool") -> None:
        self.size = size
        self._run = run
        self._name = name
        self._reset()
        _pools.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()  # starting threads, stopping, waking waiters
        self.jobs: _Jobs[_J] = _Jobs(threading.Condition(self._lock))
        """Jobs queued and not yet taken by a worker (``len(pool)``, without a call)."""
        # the wake-up lock of each parked worker: held while it sleeps, released to wake it
        self._parked: list[threading.Lock] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        weakref.finalize(self, _wake_all, self._parked)

    def __len__(self) -> int:
        """Jobs queued and not yet taken by a worker."""
        return len(self.jobs)

    def put(self, job: _J) -> bool:
        """Queue ``job``; a parked worker is woken, or a new one started while fewer than
        ``size`` run. False (nothing queued) once the pool is stopping."""
        self.jobs.append(job)
        if self._stopping:
            # appended first, looked second: a stop that came later finds the job queued and
            # its workers run it before they end
            try:
                self.jobs.remove(job)
            except (ValueError, IndexError):  # IndexError: the deque changed meanwhile
                return True  # a worker took it already
            return False
        if self._parked:
            try:
                wake = self._parked.pop()
            except IndexError:  # another submitter woke the last one
                return True
            wake.release()
        elif len(self._threads) < self.size:
            self._start_worker()
        return True

    def _start_worker(self) -> None:
        # also while stopping: a job queued just before the stop needs a thread to end on
        with self._lock:
            if len(self._threads) >= self.size:
                return
            thread = threading.Thread(
                target=_work,
                args=(weakref.ref(self), self.jobs, self._parked, self._run, self._name),
                name=f"{self._name}-{len(self._threads)}",
                daemon=False,
            )
            self._threads.append(thread)
        thread.start()

    def wait_for_room(self, limit: int, timeout: float) -> None:
        """Block the calling thread while ``limit`` or more jobs are queued (at most
        ``timeout`` seconds per look), or until the pool stops."""
        room = self.jobs
        with room.condition:
            room.waiting += 1
            try:
                while len(self.jobs) >= limit and not self._stopping:
                    room.condition.wait(timeout)
            finally:
                room.waiting -= 1

    def stop(self, *, wait: bool = True, drop: bool = False) -> None:
        """Let the workers end once the queue is empty (``drop``: empty it now); with
        ``wait``, return when they have (the calling worker excepted)."""
        with self._lock:
            self._stopping = True
            if drop:
                self.jobs.clear()
            self.jobs.condition.notify_all()
            threads = list(self._threads)
        _wake_all(self._parked)
        if wait:
            me = threading.current_thread()
            for thread in threads:
                if thread is not me:
                    thread.join()


class _Jobs(deque[_J]):
    """A pool's queue, with the threads waiting for room in it (``wait_for_room``) and the
    condition they wait on: a worker looks at them for every job it takes, without the pool
    (which it holds only weakly)."""

    def __init__(self, condition: threading.Condition) -> None:
        super().__init__()
        self.condition = condition
        self.waiting = 0


def _work(
    ref: weakref.ref[WorkPool[Any]], jobs: _Jobs[Any], parked: list[threading.Lock],
    run: Callable[[Any], None], name: str,
) -> None:
    """A worker's loop. It holds its pool only through ``ref`` (and only while it looks at
    it), so a pool nobody closed goes with its last reference, as an executor's does: its
    finaliser wakes the parked workers, which find it gone and end."""
    wake = threading.Lock()
    wake.acquire()
    while True:
        try:
            job = jobs.popleft()
        except IndexError:
            pool = ref()
            if pool is None or pool._stopping:
                return
            parked.append(wake)
            # a job or the stop may have come between the empty popleft and the append,
            # from a submitter that found nobody parked: look again before sleeping
            again = bool(jobs) or pool._stopping
            del pool
            if again:
                try:
                    parked.remove(wake)
                except ValueError:
                    wake.acquire()  # a submitter took this wake-up: its release comes
                continue
            wake.acquire()
            continue
        if jobs.waiting:
            with jobs.condition:
                jobs.condition.notify()
        try:
            run(job)
        except BaseException:
            log.exception("a job of the %s pool raised", name)
        del job


def _wake_all(parked: list[threading.Lock]) -> None:
    while parked:
        try:
            wake = parked.pop()
        except IndexError:
            break
        wake.release()


def _stop_all() -> None:
    for pool in list(_pools):
        pool.stop(wait=False)


def _forget_parent() -> None:
    for pool in list(_pools):
        pool._reset()


# told before the interpreter joins its non-daemon threads (as concurrent.futures does), so
# parked workers end once the queue is drained instead of keeping the process alive
threading._register_atexit(_stop_all)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_forget_parent)
