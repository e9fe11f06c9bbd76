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
    the next one woken. ``acquire``, ``release`` and ``locked`` as ``threading.Lock``'s.

    A hot path may take and give it inline, a call less each way: ``lock.acquire(False)`` or
    else :meth:`wait`; ``lock.release()``, then :meth:`wake` if ``parked``."""

    __slots__ = ("lock", "parked")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        """The mutex itself: free or held, never handed over."""
        self.parked: deque[threading.Lock] = deque()
        """The wake-up lock of each thread waiting for :attr:`lock`."""

    def locked(self) -> bool:
        return self.lock.locked()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self.lock.acquire(False):
            return True
        if not blocking:
            return False
        return self.wait(None if timeout < 0 else time.monotonic() + timeout)

    def release(self) -> None:
        self.lock.release()
        if self.parked:
            self.wake()

    def __enter__(self) -> None:
        if not self.lock.acquire(False):
            self.wait()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def wake(self) -> None:
        """Wake one waiting thread (after releasing :attr:`lock`)."""
        try:
            wake = self.parked.popleft()
        except IndexError:  # another release woke the last one
            return
        wake.release()

    def wait(self, deadline: float | None = None) -> bool:
        """Take :attr:`lock`, which another thread holds: True, or False at ``deadline`` (a
        ``time.monotonic()``; None waits as long as it takes)."""
        wake = threading.Lock()
        wake.acquire()
        parked = self.parked
        # parked before the next try: a release between a failed try and the parking would
        # otherwise wake nobody
        parked.append(wake)
        try:
            while True:
                if self.lock.acquire(False):
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
                self.wake()
            raise
        finally:
            # gone when a release took it: its wake-up comes to a lock now unused
            with contextlib.suppress(ValueError):
                parked.remove(wake)

    def _give_up(self, wake: threading.Lock) -> bool:
        """Stop waiting at the deadline: the lock if it is free now, else False, and a wake-up
        that came meanwhile passed on."""
        try:
            self.parked.remove(wake)
        except ValueError:  # a release woke this waiter as it gave up
            if self.lock.acquire(False):
                return True
            self.wake()
            return False
        return self.lock.acquire(False)
