"""The local invoker's worker pool: every queued iteration runs once, on at most ``workers``
threads; closing waits for the queue or drops it; a process exits only after its queue ran,
and a forked child runs its own iterations."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping

import pytest

from faasflow.default_plugins.invokers import LocalInvoker
from faasflow.errors import BackendError


def _collecting(invoker: LocalInvoker, delay: float = 0.0) -> list[bytes]:
    seen: list[bytes] = []

    def deliver(flow: str, rid: str, message: bytes, headers: Mapping[str, str]) -> None:
        if delay:
            time.sleep(delay)
        seen.append(message)

    invoker.bind(deliver)
    return seen


def test_iterations_forwarded_from_many_threads_each_run_once() -> None:
    invoker = LocalInvoker(workers=4)
    seen = _collecting(invoker)

    def send(t: int) -> None:
        for i in range(2000):
            invoker.forward("f", "r", f"{t}-{i}".encode(), {})
            if i % 97 == 0:
                time.sleep(0.001)  # let the workers run dry and park, then wake them again

    senders = [threading.Thread(target=send, args=(t,)) for t in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    invoker.close()
    assert sorted(seen) == sorted(f"{t}-{i}".encode() for t in range(4) for i in range(2000))


def test_no_more_iterations_run_at_once_than_workers() -> None:
    invoker = LocalInvoker(workers=3)
    running = 0
    most = 0
    lock = threading.Lock()

    def deliver(flow: str, rid: str, message: bytes, headers: Mapping[str, str]) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.005)
        with lock:
            running -= 1

    invoker.bind(deliver)
    for i in range(40):
        invoker.forward("f", "r", str(i).encode(), {})
    invoker.close()
    assert most == 3


def test_close_runs_every_queued_iteration_before_it_returns() -> None:
    invoker = LocalInvoker(workers=2)
    seen = _collecting(invoker, delay=0.002)
    for i in range(50):
        invoker.forward("f", "r", str(i).encode(), {})
    invoker.close()
    assert len(seen) == 50


def test_close_without_wait_drops_queued_iterations_and_returns_at_once() -> None:
    invoker = LocalInvoker(workers=1)
    gate = threading.Event()
    seen: list[bytes] = []

    def deliver(flow: str, rid: str, message: bytes, headers: Mapping[str, str]) -> None:
        gate.wait(10)
        seen.append(message)

    invoker.bind(deliver)
    for i in range(10):
        invoker.forward("f", "r", str(i).encode(), {})
    time.sleep(0.05)  # the first one is running, nine are queued
    started = time.monotonic()
    invoker.close(wait=False)
    assert time.monotonic() - started < 1
    gate.set()
    time.sleep(0.2)
    assert seen == [b"0"]


def test_a_forward_after_close_fails_naming_the_request() -> None:
    invoker = LocalInvoker(workers=1)
    _collecting(invoker)
    invoker.forward("f", "r1", b"x", {})
    invoker.close()
    with pytest.raises(BackendError, match="the invoker is closed; iteration of request r2"):
        invoker.forward("f", "r2", b"y", {})


def test_an_iteration_that_raises_is_logged_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    invoker = LocalInvoker(workers=1)
    seen: list[bytes] = []

    def deliver(flow: str, rid: str, message: bytes, headers: Mapping[str, str]) -> None:
        if message == b"bad":
            raise RuntimeError("boom")
        seen.append(message)

    invoker.bind(deliver)
    with caplog.at_level(logging.ERROR, logger="faasflow.invoker"):
        invoker.forward("f", "r-bad", b"bad", {})
        invoker.forward("f", "r", b"good", {})
        invoker.close()
    assert seen == [b"good"]
    assert "iteration of request r-bad of flow f failed" in caplog.text


def test_a_process_ends_after_its_queued_iterations_ran() -> None:
    script = textwrap.dedent("""
        import sys
        import time
        from faasflow.default_plugins.invokers import LocalInvoker
        invoker = LocalInvoker(workers=2)
        def deliver(flow, rid, message, headers):
            time.sleep(0.01)
            sys.stdout.write(message.decode() + "\\n")  # one write: lines never interleave
        invoker.bind(deliver)
        for i in range(20):
            invoker.forward("f", "r", str(i).encode(), {})
        # no close: the interpreter's shutdown tells the pool
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split(), key=int) == [str(i) for i in range(20)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_its_own_iterations_and_none_of_its_parents() -> None:
    invoker = LocalInvoker(workers=2)
    gate = threading.Event()
    seen: list[bytes] = []

    def deliver(flow: str, rid: str, message: bytes, headers: Mapping[str, str]) -> None:
        if message.startswith(b"parent"):
            gate.wait(10)
        seen.append(message)

    invoker.bind(deliver)
    for i in range(4):  # two running, two queued at the fork
        invoker.forward("f", "r", f"parent-{i}".encode(), {})
    time.sleep(0.05)
    pid = os.fork()
    if pid == 0:  # the child: exits with a code saying what it saw
        code = 1
        try:
            invoker.forward("f", "r", b"child", {})
            deadline = time.monotonic() + 10
            while not seen and time.monotonic() < deadline:
                time.sleep(0.01)
            code = 0 if seen == [b"child"] else 2
        finally:
            os._exit(code)
    gate.set()
    _, status = os.waitpid(pid, 0)
    invoker.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(seen) == [f"parent-{i}".encode() for i in range(4)]


def test_an_iteration_handed_on_during_interpreter_shutdown_is_refused() -> None:
    script = textwrap.dedent("""
        import sys
        import time
        from faasflow.default_plugins.invokers import LocalInvoker
        invoker = LocalInvoker(workers=1)
        def deliver(flow, rid, message, headers):
            if message == b"first":
                time.sleep(0.2)  # the main thread ends meanwhile
                try:
                    invoker.forward("f", "r", b"second", {})
                    invoker.forward("f", "r", b"third", {})
                except RuntimeError as exc:
                    sys.stdout.write(f"refused: {exc}\\n")
            else:
                sys.stdout.write(message.decode() + "\\n")
        invoker.bind(deliver)
        invoker.forward("f", "r", b"first", {})
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # the first hand-on of a running iteration runs next on its worker; the next is refused
    assert done.stdout.splitlines() == [
        "refused: iteration of request r not queued: the interpreter is shutting down",
        "second",
    ]


def test_the_workers_of_an_invoker_dropped_without_close_end() -> None:
    before = set(threading.enumerate())
    invoker = LocalInvoker(workers=3)
    seen = _collecting(invoker)
    for i in range(6):
        invoker.forward("f", "r", str(i).encode(), {})
    deadline = time.monotonic() + 10
    while len(seen) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = [t for t in set(threading.enumerate()) - before if t.name.startswith("faasflow-")]
    assert workers
    del invoker
    gc.collect()
    for thread in workers:
        thread.join(10)
    assert not any(thread.is_alive() for thread in workers)
