"""A lock that lets whoever runs first take it, for locks held across a call that gives up
the GIL (a SQLite statement)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque

__all__ = ["ParkingLock"]


class ParkingLock:
    """A mutex whose release hands it to nobody: it wakes one waiter, which tries again once
    it runs, and the lock stays free for whichever thread gets there first.

    A plain lock's release gives the lock to the waiter it wakes before that waiter has the
    GIL back. The releasing thread keeps running, soon wants the lock again and waits in its
    turn, and from then on every acquisition waits and switches threads: a convoy as long as
    the load, paid in futex calls and GIL hand-offs (measured on sqlite, 8 threads recording
    fan-in arrivals on 2 cores: half a branch's CPU). A woken waiter that loses the race is
    the next one woken. ``acquire``, ``release`` and ``locked`` as ``threading.Lock``'s."""

    __slots__ = ("_lock", "_parked")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parked: deque[threading.Lock] = deque()  # each waiter's wake-up

    def locked(self) -> bool:
        return self._lock.locked()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(False):
            return True
        if not blocking:
            return False
        return self._wait(None if timeout < 0 else time.monotonic() + timeout)

    def release(self) -> None:
        self._lock.release()
        if self._parked:
            self._wake()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _wake(self) -> None:
        try:
            wake = self._parked.popleft()
        except IndexError:  # another release woke the last one
            return
        wake.release()

    def _wait(self, deadline: float | None) -> bool:
        wake = threading.Lock()
        wake.acquire()
        parked = self._parked
        # parked before the next try: a release between a failed try and the parking would
        # otherwise wake nobody
        parked.append(wake)
        try:
            while True:
                if self._lock.acquire(False):
                    return True
                if deadline is None:
                    wake.acquire()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0 or not wake.acquire(timeout=left):
                        return self._give_up(wake)
                # woken (a release took the wake-up out of the queue): first in line again
                parked.appendleft(wake)
        except BaseException:  # interrupted (Ctrl-C): a wake-up that came to it goes on
            try:
                parked.remove(wake)
            except ValueError:
                self._wake()
            raise
        finally:
            # gone when a release took it: its wake-up comes to a lock now unused
            with contextlib.suppress(ValueError):
                parked.remove(wake)

    def _give_up(self, wake: threading.Lock) -> bool:
        """Stop waiting at the deadline: the lock if it is free now, else False, and a wake-up
        that came meanwhile passed on."""
        try:
            self._parked.remove(wake)
        except ValueError:  # a release woke this waiter as it gave up
            if self._lock.acquire(False):
                return True
            self._wake()
            return False
        return self._lock.acquire(False)
