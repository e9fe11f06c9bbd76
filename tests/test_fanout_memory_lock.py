"""The memory state store's lock under many threads: one holder at a time, no waiter left
asleep, released whatever the step raises."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping

import pytest

from faasflow.default_plugins.memory import MemoryStateStore

THREADS = 8
STEPS = 300


def _count_up(store: MemoryStateStore, inside: list[int], most: list[int]) -> None:
    def decide(values: Mapping[str, str | None]) -> dict[str, str]:
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0)  # lets another thread run while the lock is held
        inside[0] -= 1
        return {"n": str(int(values["n"] or 0) + 1)}

    for _ in range(STEPS):
        store.locked_transaction(["n"], decide)


def test_locked_steps_of_many_threads_count_every_step_once() -> None:
    store = MemoryStateStore().scoped("flow", "request")
    inside, most = [0], [0]
    threads = [threading.Thread(target=_count_up, args=(store, inside, most))
               for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a waiter was never woken"
    assert store.get("n") == str(THREADS * STEPS)
    assert most[0] == 1


def test_transactions_and_locked_steps_exclude_each_other() -> None:
    store = MemoryStateStore().scoped("flow", "request")
    store.set("n", "0")
    inside, most = [0], [0]

    def swap() -> None:
        done = 0
        while done < STEPS:
            current = store.get("n")
            if store.transaction({"n": current}, {"n": str(int(current) + 1)}):
                done += 1

    threads = [threading.Thread(target=swap) for _ in range(THREADS // 2)]
    threads += [threading.Thread(target=_count_up, args=(store, inside, most))
                for _ in range(THREADS // 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a waiter was never woken"
    assert store.get("n") == str(THREADS * STEPS)


def test_a_step_that_raises_leaves_the_store_usable() -> None:
    store = MemoryStateStore().scoped("flow", "request")

    def fail(values: Mapping[str, str | None]) -> dict[str, str]:
        raise RuntimeError("decide failed")

    with pytest.raises(RuntimeError, match="decide failed"):
        store.locked_transaction(["n"], fail)
    store.set("n", "1")  # would block forever with the lock still held
    assert store.get("n") == "1"


def test_a_waiter_interrupted_passes_its_turn_on() -> None:
    store = MemoryStateStore().scoped("flow", "request")
    shelf = store._shelf
    holding, go = threading.Event(), threading.Event()

    def hold(values: Mapping[str, str | None]) -> None:
        holding.set()
        go.wait(30)

    holder = threading.Thread(target=store.locked_transaction, args=(["n"], hold))
    holder.start()
    assert holding.wait(30)
    main = threading.get_ident()

    def interrupt_when_parked() -> None:
        while not shelf.parked:
            time.sleep(0.001)
        signal.pthread_kill(main, signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_when_parked)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        store.set("a", "1")  # waits for the holder, and is interrupted
    interrupter.join(30)
    later = threading.Thread(target=store.set, args=("b", "1"))
    later.start()
    while not shelf.parked:
        time.sleep(0.001)
    go.set()
    holder.join(30)
    later.join(30)
    assert not later.is_alive(), "the release woke the interrupted waiter instead"
    assert store.get("b") == "1"
    assert not shelf.parked
