"""The local invoker's queue stays bounded when iterations are handed on faster than its pool
runs them: a caller's thread waits, a pool worker runs the next one itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import pytest

from faasflow.default_plugins import invokers
from faasflow.default_plugins.invokers import LocalInvoker

LIMIT = 4


@pytest.fixture(autouse=True)
def small_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(invokers, "QUEUE_LIMIT", LIMIT)


def test_a_caller_handing_on_past_the_limit_waits_for_the_pool() -> None:
    invoker = LocalInvoker(workers=1)
    gate = threading.Event()
    delivered: list[bytes] = []
    returned: list[int] = []

    def deliver(flow: str, rid: str, message: bytes, headers: Mapping[str, str]) -> None:
        gate.wait(10)
        delivered.append(message)

    invoker.bind(deliver)

    def send() -> None:
        for i in range(20):
            invoker.forward("f", "r", str(i).encode(), {})
            returned.append(i)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        time.sleep(0.3)
        # one iteration held by the only worker, at most LIMIT waiting behind it
        assert sender.is_alive()
        assert len(returned) <= LIMIT + 1
    finally:
        gate.set()
        sender.join(10)
        invoker.close()
    assert sorted(delivered) == sorted(str(i).encode() for i in range(20))


def test_a_pool_worker_handing_on_past_the_limit_runs_the_next_itself() -> None:
    invoker = LocalInvoker(workers=1)
    delivered: list[tuple[bytes, str]] = []
    root_done = threading.Event()

    def deliver(flow: str, rid: str, message: bytes, headers: Mapping[str, str]) -> None:
        if message == b"root":
            for i in range(20):
                invoker.forward("f", "r", str(i).encode(), {})
            root_done.set()
        delivered.append((message, "before" if not root_done.is_set() else "after"))

    invoker.bind(deliver)
    invoker.forward("f", "r", b"root", {})
    deadline = time.monotonic() + 10
    while len(delivered) < 21 and time.monotonic() < deadline:
        time.sleep(0.01)
    invoker.close()
    expected = [b"root", *(str(i).encode() for i in range(20))]
    assert sorted(m for m, _ in delivered) == sorted(expected)
    # the only worker was busy with the root: the hand-ons past the queue's limit ran inside it
    assert sum(1 for m, when in delivered if m != b"root" and when == "before") >= 1
