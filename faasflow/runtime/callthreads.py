"""Threads that run calls handed to them, for callers that must stop waiting at a deadline.

A call of a function served in the same worker (:mod:`faasflow.runtime.samecall`) runs on one
of these threads, not the caller's: a thread cannot be interrupted, so only a caller that does
not run the handler itself can answer 504 at the gateway's deadline and leave the handler to
finish, as the gateway does. The hand-off is a lock released, not a queue with a condition:
about what it costs to wake one thread. Threads start on demand (a handler that calls another
function in-process never waits for a free one) and end after a minute idle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["IDLE_SECONDS", "Job", "Runner"]

T = TypeVar("T")

#: Seconds an idle thread waits for a call before it ends.
IDLE_SECONDS = 60.0


class Job(Generic[T]):
    """One call handed to a thread: wait for its result, or leave it to finish alone."""

    def __init__(self, work: Callable[[], T]) -> None:
        self.work = work
        self.result: T | None = None
        self.error: BaseException | None = None
        self._finished = threading.Lock()
        self._finished.acquire()
        self._lock = threading.Lock()
        self._done = False
        self._then: Callable[[Job[T]], None] | None = None

    def wait(self, timeout: float | None) -> bool:
        """True once the call has ended (within ``timeout`` seconds; ``None``: no limit)."""
        if self._done:
            return True
        if self._finished.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._finished.release()  # a second wait returns at once
            return True
        return False

    def then(self, callback: Callable[[Job[T]], None]) -> None:
        """Call ``callback(job)`` when the call ends (at once if it has)."""
        with self._lock:
            if not self._done:
                self._then = callback
                return
        callback(self)

    def _run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:  # handed to the waiter, not lost in this thread
            self.error = exc
        with self._lock:
            self._done = True
            callback = self._then
        self._finished.release()
        if callback is not None:
            callback(self)


class _Thread:
    def __init__(self, runner: Runner, first: Job[object]) -> None:
        self.runner = runner
        self.job: Job[object] | None = first
        self.wake = threading.Lock()
        self.wake.acquire()
        threading.Thread(target=self._loop, daemon=True, name=runner.name).start()

    def give(self, job: Job[object]) -> None:
        self.job = job
        self.wake.release()

    def _loop(self) -> None:
        while True:
            job, self.job = self.job, None
            if job is not None:
                job._run()
            if not self.runner._rest(self):
                return


class Runner:
    """Runs each submitted call on an idle thread, or on a new one when none is idle."""

    def __init__(self, name: str = "faasflow-call", idle: float = IDLE_SECONDS) -> None:
        self.name = name
        self.idle_seconds = idle
        self._lock = threading.Lock()
        self._idle: list[_Thread] = []

    def submit(self, work: Callable[[], T]) -> Job[T]:
        job: Job[T] = Job(work)
        with self._lock:
            thread = self._idle.pop() if self._idle else None
        if thread is None:
            _Thread(self, job)  # type: ignore[arg-type]
        else:
            thread.give(job)  # type: ignore[arg-type]
        return job

    def idle(self) -> int:
        """Threads waiting for a call."""
        with self._lock:
            return len(self._idle)

    def _rest(self, thread: _Thread) -> bool:
        """Wait for the next call; False when the thread should end."""
        with self._lock:
            self._idle.append(thread)
        if thread.wake.acquire(timeout=self.idle_seconds):
            return True
        with self._lock:
            if thread in self._idle:
                self._idle.remove(thread)
                return False
        # taken by a submit between the timeout and the lock: its call is on the way
        thread.wake.acquire()
        return True
