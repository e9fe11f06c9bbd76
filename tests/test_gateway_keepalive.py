"""No stale connections: the gateway never sends a call on a pooled connection its worker closed
(idle timeout passed, worker killed), so every call after those answers 200."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from test_gateway import wait_for

from faasflow.runtime.process import GatewayProcess
from faasflow.runtime.server import Server, serve
from faasflow.runtime.upstream import Upstream, WorkerUnreachable

SLOW_ECHO = """
    import time

    def handle(event, context):
        time.sleep(0.05)
        return event.body
"""
IDLE = 1.0  # FAASFLOW_KEEPALIVE_TIMEOUT of the gateway under test


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keepalive")
    (root / "echo").mkdir()
    (root / "echo" / "handler.py").write_text(textwrap.dedent(SLOW_ECHO).lstrip())
    path = root / "stack.yml"
    path.write_text("functions:\n  echo:\n    lang: python3-http\n    handler: ./echo\n")
    return path


def start(stack: Path, processes: int) -> GatewayProcess:
    env = {**os.environ, "FAASFLOW_KEEPALIVE_TIMEOUT": str(IDLE)}
    return GatewayProcess(stack, data_dir=stack.parent / f"data-{processes}", env=env,
                          processes=processes).start()


@pytest.fixture
def gateway(stack: Path) -> Iterator[GatewayProcess]:
    process = start(stack, 2)
    yield process
    process.stop()


def burst(gateway: GatewayProcess, calls: int = 24) -> list[int]:
    """``calls`` concurrent calls, each on its own client connection."""
    def call(i: int) -> int:
        return requests.post(gateway.url + "/function/echo.openfaas-fn", data=str(i),
                             timeout=30).status_code

    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(call, range(calls)))


def workers_of(gateway: GatewayProcess) -> list[int]:
    return gateway.workers()


def test_calls_after_the_idle_timeout_all_answer_200(gateway: GatewayProcess) -> None:
    assert burst(gateway) == [200] * 24
    time.sleep(IDLE * 2)  # every pooled connection is past the workers' idle timeout
    assert burst(gateway) == [200] * 24
    time.sleep(IDLE + 0.2)
    assert burst(gateway) == [200] * 24


def test_calls_after_a_worker_was_killed_and_restarted_all_answer_200(
    gateway: GatewayProcess,
) -> None:
    assert burst(gateway) == [200] * 24
    victim = workers_of(gateway)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: "starting it again" in gateway.text, what="the restart")
    wait_for(lambda: len(workers_of(gateway)) == 2 and victim not in workers_of(gateway),
             what="the new worker")
    assert burst(gateway) == [200] * 24


def test_a_call_while_the_only_worker_restarts_waits_for_it(stack: Path) -> None:
    gateway = start(stack, 1)
    try:
        assert burst(gateway, 4) == [200] * 4
        os.kill(workers_of(gateway)[0], signal.SIGKILL)
        time.sleep(0.1)
        assert burst(gateway, 8) == [200] * 8
    finally:
        gateway.stop()


# -- the pool itself, against a real server that closes idle connections -------------------


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def quick_closer() -> Iterator[Server]:
    server = serve(hello, keepalive=0.2).start()
    yield server
    server.close()


def test_pooled_connection_closed_by_the_server_is_dropped_before_use(
    quick_closer: Server,
) -> None:
    upstream = Upstream(quick_closer.port, timeout=10, keepalive=75)  # thinks they live long
    assert upstream.request("POST", "/", {}, b"x")[0] == 200
    assert upstream.idle() == 1
    time.sleep(0.6)  # the server closed it meanwhile
    assert upstream.request("POST", "/", {}, b"x")[0] == 200
    assert upstream.stale_dropped == 1
    upstream.close()


def test_pooled_connection_past_the_idle_timeout_is_not_reused(quick_closer: Server) -> None:
    upstream = Upstream(quick_closer.port, timeout=10, keepalive=0.2)
    upstream.request("GET", "/", {}, b"")
    time.sleep(0.15)
    assert upstream.request("GET", "/", {}, b"")[0] == 200
    assert upstream.stale_dropped == 0  # retired by age, not found dead
    upstream.close()


def test_concurrent_requests_through_the_pool_after_idle_all_answer(
    quick_closer: Server,
) -> None:
    upstream = Upstream(quick_closer.port, timeout=10, keepalive=75)
    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(lambda _: upstream.request("POST", "/", {}, b"x")[0],
                            range(64))) == {200}
        time.sleep(0.6)
        assert set(pool.map(lambda _: upstream.request("POST", "/", {}, b"x")[0],
                            range(64))) == {200}
    upstream.close()


def test_a_worker_that_is_gone_is_unreachable(quick_closer: Server) -> None:
    port = quick_closer.port
    quick_closer.close()
    with pytest.raises(WorkerUnreachable, match=str(port)):
        Upstream(port, timeout=2, keepalive=75).request("POST", "/", {}, b"x")


@pytest.mark.parametrize(("method", "deliveries"), [("POST", 1), ("GET", 2)])
def test_a_lost_answer_is_replayed_only_for_idempotent_methods(method: str,
                                                               deliveries: int) -> None:
    seen: list[bytes] = []
    lock = threading.Lock()

    def hang_up(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        if body != b"warm":
            with lock:
                seen.append(body)
            raise ConnectionResetError("the worker died mid-call")
        start_response("200 OK", [])
        return [b""]

    server = serve(hang_up).start()
    try:
        upstream = Upstream(server.port, timeout=5, keepalive=75)
        upstream.request(method, "/", {}, b"warm")  # leaves a pooled connection
        with pytest.raises(WorkerUnreachable):
            upstream.request(method, "/", {}, b"once")
        assert seen == [b"once"] * deliveries
        upstream.close()
    finally:
        server.close()
