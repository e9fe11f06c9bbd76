"""The sqlite write lock (``parking.ParkingLock``): one holder at a time, every waiter woken
in the end, timeouts that leave nothing behind, under real threads."""

from __future__ import annotations

import threading
import time

from faasflow.parking import ParkingLock

JOIN = 60.0


def _run(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN)
    assert not any(thread.is_alive() for thread in threads), "a thread never got the lock"


def test_one_holder_at_a_time_and_no_increment_lost() -> None:
    lock = ParkingLock()
    state = {"count": 0, "inside": 0, "most": 0}

    def work() -> None:
        for _ in range(2000):
            with lock:
                state["inside"] += 1
                state["most"] = max(state["most"], state["inside"])
                count = state["count"]
                time.sleep(0)  # give the GIL away while holding the lock, as a statement does
                state["count"] = count + 1
                state["inside"] -= 1

    _run([threading.Thread(target=work) for _ in range(8)])
    assert state["count"] == 16000
    assert state["most"] == 1
    assert not lock.locked() and not lock.parked


def test_every_waiter_parked_behind_a_holder_gets_the_lock() -> None:
    lock = ParkingLock()
    lock.acquire()
    got: list[int] = []
    started = threading.Barrier(9)

    def wait(index: int) -> None:
        started.wait(JOIN)
        with lock:
            got.append(index)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    started.wait(JOIN)
    deadline = time.monotonic() + JOIN
    while len(lock.parked) < 8 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(lock.parked) == 8  # all of them asleep, none spinning
    lock.release()
    for thread in threads:
        thread.join(JOIN)
    assert sorted(got) == list(range(8))
    assert not lock.locked() and not lock.parked


def test_a_timed_out_waiter_answers_false_and_leaves_nothing_parked() -> None:
    lock = ParkingLock()
    lock.acquire()
    answers: list[bool] = []
    thread = threading.Thread(target=lambda: answers.append(lock.acquire(timeout=0.05)))
    _run([thread])
    assert answers == [False]
    assert not lock.parked
    assert lock.acquire(blocking=False) is False  # still the first holder's
    lock.release()
    assert lock.acquire(blocking=False) is True
    lock.release()


def test_timeouts_racing_releases_lose_no_wake_up() -> None:
    lock = ParkingLock()
    stop = threading.Event()
    held = [0]

    def impatient() -> None:
        while not stop.is_set():
            if lock.acquire(timeout=0.0005):  # mostly times out: the holders keep it busy
                held[0] += 1
                lock.release()

    def holder() -> None:
        for _ in range(3000):
            with lock:
                time.sleep(0)

    impatients = [threading.Thread(target=impatient) for _ in range(4)]
    for thread in impatients:
        thread.start()
    _run([threading.Thread(target=holder) for _ in range(3)])
    stop.set()
    for thread in impatients:
        thread.join(JOIN)
    assert held[0] > 0
    # whatever the races left, the lock is free and a blocking waiter is served at once
    assert not lock.locked() and not lock.parked
    done = threading.Event()

    def last() -> None:
        with lock:
            done.set()

    _run([threading.Thread(target=last)])
    assert done.is_set()


def test_a_free_lock_is_taken_without_blocking_and_a_held_one_is_not() -> None:
    lock = ParkingLock()
    assert lock.acquire(blocking=False) is True and lock.locked()
    answers: list[bool] = []
    _run([threading.Thread(target=lambda: answers.append(lock.acquire(blocking=False)))])
    assert answers == [False]
    lock.release()
    assert not lock.locked()
