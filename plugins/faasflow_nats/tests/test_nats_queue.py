"""The JetStream queue against a real nats-server: what the gateway's dispatcher relies on."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faasflow_nats.options import NatsOptions
from faasflow_nats.queue import NatsQueue
from nats_server import NatsServer

from faasflow.errors import ConfigurationError
from faasflow.runtime.queue import CallIdInUse, Job
from faasflow.runtime.queues import QueueContext, open_queue
from faasflow.settings import Settings


def job(call_id: str, body: bytes = b"x", function: str = "f") -> Job:
    return Job(id=call_id, function=function, path="/p", query="a=1", method="POST",
               headers=(("X-Call-Id", call_id),), body=body, callback=None)


def make(server: NatsServer, max_attempts: int = 3, given_up: Any = None, **opts: str
         ) -> NatsQueue:
    environ = {"FAASFLOW_NATS_ACK_WAIT": "1", **opts}
    return NatsQueue(NatsOptions.from_environ(environ, server.url), max_attempts,
                     given_up=given_up)


@pytest.fixture
def queue(nats_server: NatsServer) -> Iterator[NatsQueue]:
    q = make(nats_server)
    try:
        yield q
    finally:
        q.close()


def test_a_put_job_is_taken_whole_and_gone_once_done(queue: NatsQueue) -> None:
    sent = job("c1", b"\x00body\nwith newline")
    assert queue.put(sent) is True
    assert queue.pending() == 1
    got = queue.take(timeout=5)
    assert got is not None
    assert (got.id, got.function, got.path, got.query, got.method, got.headers, got.body) == (
        sent.id, sent.function, sent.path, sent.query, sent.method, sent.headers, sent.body)
    assert got.attempts == 0
    queue.done(got)
    assert queue.pending() == 0
    assert queue.take(timeout=0.5) is None


def test_a_call_published_twice_is_stored_once(queue: NatsQueue) -> None:
    assert queue.put(job("same")) is True
    assert queue.put(job("same")) is False
    assert queue.pending() == 1
    assert queue.dedup_hits == 1


def test_the_same_call_id_with_another_body_is_refused_while_queued(queue: NatsQueue) -> None:
    queue.put(job("id-1", b"one"))
    with pytest.raises(CallIdInUse):
        queue.put(job("id-1", b"two"))


def test_a_retried_job_comes_back_after_its_delay_with_one_more_attempt(
        queue: NatsQueue) -> None:
    queue.put(job("r"))
    first = queue.take(timeout=5)
    assert first is not None
    queue.retry(first, 1.0)
    started = time.monotonic()
    again = queue.take(timeout=5)
    assert again is not None
    assert again.id == "r"
    assert time.monotonic() - started >= 0.7
    assert again.attempts == 1
    queue.done(again)


def test_a_released_job_is_delivered_again_at_once(queue: NatsQueue) -> None:
    queue.put(job("rel"))
    first = queue.take(timeout=5)
    assert first is not None
    queue.release(first)
    started = time.monotonic()
    again = queue.take(timeout=5)
    assert again is not None
    assert again.id == "rel"
    assert time.monotonic() - started < 0.9


def test_two_queues_on_one_consumer_share_the_work_without_duplicates(
        nats_server: NatsServer) -> None:
    a, b = make(nats_server), make(nats_server)
    try:
        for i in range(200):
            a.put(job(f"w{i}"))
        seen: dict[str, list[str]] = {"a": [], "b": []}

        def drain(name: str, q: NatsQueue) -> None:
            while (got := q.take(timeout=1.5)) is not None:
                seen[name].append(got.id)
                time.sleep(0.002)  # sleep-bound work: the other consumer gets its share
                q.done(got)

        threads = [threading.Thread(target=drain, args=item) for item in
                   (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        every = seen["a"] + seen["b"]
        assert sorted(every) == sorted(f"w{i}" for i in range(200))
        assert min(len(seen["a"]), len(seen["b"])) > 0, {k: len(v) for k, v in seen.items()}
        assert a.pending() == 0
    finally:
        a.close()
        b.close()


TAKER = """
    import sys, time
    from faasflow_nats.options import NatsOptions
    from faasflow_nats.queue import NatsQueue
    q = NatsQueue(NatsOptions.from_environ({"FAASFLOW_NATS_ACK_WAIT": "1"}, sys.argv[1]),
                  int(sys.argv[2]))
    got = q.take(timeout=10)
    print(got.id if got else "-", got.attempts if got else -1, flush=True)
    time.sleep(60)
"""


def take_and_die(server: NatsServer, max_attempts: int) -> tuple[str, int]:
    """Another process takes one job, then is killed with SIGKILL while holding it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(TAKER), server.url, str(max_attempts)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        call_id, attempts = proc.stdout.readline().split()
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    return call_id, int(attempts)


def test_a_job_held_by_a_killed_process_goes_to_another_after_ack_wait(
        queue: NatsQueue, nats_server: NatsServer) -> None:
    queue.put(job("held"))
    assert take_and_die(nats_server, 3) == ("held", 0)
    killed = time.monotonic()
    got = queue.take(timeout=10)
    assert got is not None
    assert got.id == "held"
    assert got.attempts == 1
    assert 0.5 < time.monotonic() - killed < 5
    queue.done(got)


def test_a_long_call_is_kept_by_heartbeats_past_ack_wait(
        queue: NatsQueue, nats_server: NatsServer) -> None:
    other = make(nats_server)
    try:
        queue.put(job("long"))
        got = queue.take(timeout=5)
        assert got is not None
        assert other.take(timeout=3.5) is None  # 3.5 x ack_wait: still held by heartbeats
        queue.done(got)
        assert other.take(timeout=1.5) is None
        assert queue.pending() == 0
    finally:
        other.close()


def test_a_dead_letter_leaves_the_work_stream_and_is_kept(queue: NatsQueue) -> None:
    queue.put(job("poison"))
    got = queue.take(timeout=5)
    assert got is not None
    queue.dead_letter(got, "status 503")
    assert queue.pending() == 0
    assert queue.dead() == 1
    assert queue.take(timeout=1.5) is None


def test_a_job_whose_every_delivery_dies_becomes_a_logged_dead_letter(
        nats_server: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "faasflow.nats")
    told: list[tuple[str, str]] = []
    q = make(nats_server, max_attempts=2, given_up=lambda j, why: told.append((j.id, why)))
    other = make(nats_server, max_attempts=2, given_up=lambda j, why: told.append((j.id, why)))
    try:
        q.put(job("doomed", function="fn"))
        assert take_and_die(nats_server, 2) == ("doomed", 0)
        assert take_and_die(nats_server, 2) == ("doomed", 1)
        deadline = time.monotonic() + 10
        # the server decides a third delivery (and sends the advisory) when someone pulls
        while q.dead() == 0 and time.monotonic() < deadline:
            assert q.take(timeout=0.5) is None
        assert q.dead() == 1
        assert q.pending() == 0
        warned = [r.getMessage() for r in caplog.records if "dead letter" in r.getMessage()]
        assert any("doomed" in m and "fn" in m and "2 times" in m for m in warned), warned
        # both gateways hear the advisory; one tells its dispatcher to fail the request
        while not told and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert [(i, "max_deliver" in why and "2 deliveries" in why) for i, why in told] == [
            ("doomed", True)]
    finally:
        q.close()
        other.close()


def test_an_unreachable_server_is_a_configuration_error_naming_the_fix(tmp_path: Path) -> None:
    from faasflow.testing import free_port

    options = NatsOptions.from_environ({"FAASFLOW_NATS_CONNECT_TIMEOUT": "1"},
                                       f"nats://127.0.0.1:{free_port()}")
    with pytest.raises(ConfigurationError, match="cannot reach NATS.*NATS_URL"):
        NatsQueue(options, 3)


def test_queue_nats_url_opens_the_plugin_queue_through_the_hook(
        nats_server: NatsServer, tmp_path: Path) -> None:
    context = QueueContext("", tmp_path, 3, {}, "stack.yml")
    q, kind = open_queue(nats_server.url, context, Settings.from_env({}))
    try:
        assert kind.name == "nats"
        assert kind.shared == "network"
        assert isinstance(q, NatsQueue)
        assert q.options.servers == (nats_server.url,)
    finally:
        q.close()


def test_options_come_from_faasflow_variables_then_nats_own() -> None:
    o = NatsOptions.from_environ({"NATS_URL": "nats://a:1,nats://b:2", "NATS_USER": "u",
                                  "FAASFLOW_NATS_USER": "v", "FAASFLOW_NATS_REPLICAS": "3"})
    assert o.servers == ("nats://a:1", "nats://b:2")
    assert (o.user, o.replicas) == ("v", 3)
    assert NatsOptions.from_environ({"NATS_URL": "nats://a:1"}, "nats://h1:4222,h2:4222"
                                    ).servers == ("nats://h1:4222", "nats://h2:4222")


def test_a_bad_number_option_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="FAASFLOW_NATS_ACK_WAIT='soon'"):
        NatsOptions.from_environ({"FAASFLOW_NATS_ACK_WAIT": "soon"})
