"""The of-watchdog and queue-worker stand-ins do to a request what the real ones do (the
behaviour measured in docs/shared reference openfaas-real.md), so template tests can trust them."""

from __future__ import annotations

import contextlib
import socket
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from faasflow.runtime.server import Server, serve
from faasflow.testing.queueworker import QueueWorker
from faasflow.testing.watchdog import Watchdog, free_port

CAPTURE = """
    import os, socket, urllib.parse
    url = urllib.parse.urlsplit(os.environ["upstream_url"])
    server = socket.create_server((url.hostname, url.port))
    while True:
        conn, _ = server.accept()
        data = b""
        while True:
            head, ended, rest = data.partition(b"\\r\\n\\r\\n")
            if ended and (b"chunked" not in head.lower() or b"0\\r\\n\\r\\n" in rest):
                break  # a bodiless request's headers, or a chunked body's last chunk
            more = conn.recv(65536)
            if not more:  # the watchdog's readiness probe
                break
            data += more
        if data:
            open("captured", "ab").write(data + b"\\n=====\\n")
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
        conn.close()
"""


def capture_watchdog(workdir: Path) -> Watchdog:
    """A watchdog (not started) whose upstream appends every request it gets to ``captured``."""
    (workdir / "capture.py").write_text(textwrap.dedent(CAPTURE))
    return Watchdog([sys.executable, "capture.py"], cwd=workdir)


@pytest.fixture
def capturing(tmp_path: Path) -> Iterator[Watchdog]:
    with capture_watchdog(tmp_path) as watchdog:
        yield watchdog


def captured(watchdog: Watchdog) -> bytes:
    return (Path(str(watchdog.cwd)) / "captured").read_bytes()


def test_watchdog_sends_bodies_chunked_without_a_content_length(capturing: Watchdog) -> None:
    reply = requests.post(capturing.url, data=b"dora", timeout=10)
    assert reply.text == "ok"
    head, _, body = captured(capturing).partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"content-length" not in head.lower()
    assert body.startswith(b"4\r\ndora\r\n0\r\n\r\n")


def test_watchdog_passes_the_host_header_through(capturing: Watchdog) -> None:
    requests.post(capturing.url, data=b"x", timeout=10,
                  headers={"Host": "flow.openfaas-fn.svc.cluster.local:8080"})
    assert b"Host: flow.openfaas-fn.svc.cluster.local:8080\r\n" in captured(capturing)


def test_watchdog_adds_x_duration_seconds(capturing: Watchdog) -> None:
    reply = requests.get(capturing.url, timeout=10)
    assert float(reply.headers["X-Duration-Seconds"]) >= 0


def test_watchdog_writes_its_lock_file_while_up(tmp_path: Path) -> None:
    watchdog = capture_watchdog(tmp_path).start()
    lock = watchdog.lock_file
    assert lock.exists()
    watchdog.close()
    assert not lock.exists()


def test_watchdog_reports_an_fprocess_that_never_listens(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="did not listen"):
        Watchdog([sys.executable, "-c", "print('bye')"], cwd=tmp_path).start()


# -- the queue-worker -----------------------------------------------------------------------------


class Function:
    """A function answering a status from a script; records what it received."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server: Server = serve(self.app).start()

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        with self.lock:
            self.seen.append({"path": environ["PATH_INFO"], "body": body,
                              "host": environ.get("HTTP_HOST"),
                              "call_id": environ.get("HTTP_X_CALL_ID"),
                              "chunked": "HTTP_TRANSFER_ENCODING" in environ})
            status = self.statuses.pop(0) if self.statuses else 200
        start_response(f"{status} X", [("X-Fn", "yes")])
        return [b"answer:" + body]


@contextlib.contextmanager
def queue_to(
    statuses: list[int] | None = None, **options: Any
) -> Iterator[tuple[Function, QueueWorker]]:
    """A queue-worker in front of a function answering ``statuses`` (then 200s); both are
    stopped on the way out."""
    function = Function(statuses or [])
    try:
        with QueueWorker({"fn": function.server.url}, backoff=0.01, **options) as queue:
            yield function, queue
    finally:
        function.server.close()


class Callbacks:
    """A callback receiver: the headers and body of every call it gets."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.server: Server = serve(self.app).start()

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.calls.append({k: v for k, v in environ.items() if k.startswith("HTTP_")}
                          | {"body": environ["wsgi.input"].read()})
        start_response("200 OK", [])
        return [b""]


@pytest.fixture
def callbacks() -> Iterator[Callbacks]:
    receiver = Callbacks()
    yield receiver
    receiver.server.close()


def test_async_call_is_202_with_a_call_id_and_is_delivered_chunked() -> None:
    with queue_to() as (function, queue):
        reply = requests.post(f"{queue.url}/async-function/fn.openfaas-fn/a/b", data=b"job",
                              timeout=10)
        assert reply.status_code == 202
        assert queue.wait_idle(10)
    (seen,) = function.seen
    assert (seen["path"], seen["body"], seen["chunked"]) == ("/a/b", b"job", True)
    assert seen["call_id"] == reply.headers["X-Call-Id"]
    assert seen["host"] == "fn.openfaas-fn.svc.cluster.local:8080"


def test_async_call_keeps_the_clients_call_id() -> None:
    with queue_to() as (function, queue):
        reply = requests.post(f"{queue.url}/async-function/fn", data=b"x", timeout=10,
                              headers={"X-Call-Id": "mine-1"})
        assert queue.wait_idle(10)
    assert reply.headers["X-Call-Id"] == "mine-1"
    assert function.seen[0]["call_id"] == "mine-1"


def test_async_call_is_post_only() -> None:
    with queue_to() as (_, queue):
        assert requests.get(f"{queue.url}/async-function/fn", timeout=10).status_code == 405


def deliveries(statuses: list[int], **options: Any) -> list[tuple[int, int]]:
    """``(status, attempts)`` of each delivery of one async call to a function answering
    ``statuses``."""
    with queue_to(statuses, **options) as (_, queue):
        requests.post(f"{queue.url}/async-function/fn", data=b"x", timeout=10)
        assert queue.wait_idle(10)
    return [(d.status, d.attempts) for d in queue.deliveries]


def test_ce_never_retries_a_5xx() -> None:
    assert deliveries([503, 503], mode="ce") == [(503, 1)]


def test_pro_retries_429_502_503_504_until_an_answer() -> None:
    assert deliveries([429, 502, 503, 504], mode="pro", max_attempts=6) == [(200, 5)]


def test_pro_gives_up_after_max_attempts() -> None:
    assert deliveries([503] * 10, mode="pro", max_attempts=3) == [(503, 3)]


def test_callback_carries_the_answer_and_the_call_headers(callbacks: Callbacks) -> None:
    with queue_to([201]) as (_, queue):
        requests.post(f"{queue.url}/async-function/fn", data=b"x", timeout=10,
                      headers={"X-Callback-Url": f"{callbacks.server.url}/done",
                               "X-Call-Id": "c1"})
        assert queue.wait_idle(10)
    (call,) = callbacks.calls
    assert call["body"] == b"answer:x"
    assert (call["HTTP_X_CALL_ID"], call["HTTP_X_FUNCTION_STATUS"],
            call["HTTP_X_FUNCTION_NAME"], call["HTTP_X_FN"]) == ("c1", "201", "fn", "yes")
    assert float(call["HTTP_X_DURATION_SECONDS"]) >= 0


def test_a_malformed_callback_url_is_400() -> None:
    with queue_to() as (_, queue):
        reply = requests.post(f"{queue.url}/async-function/fn", data=b"x", timeout=10,
                              headers={"X-Callback-Url": "http://[::1"})
    assert reply.status_code == 400


def test_sync_calls_go_straight_to_the_function_with_its_name_namespace() -> None:
    with queue_to(host_header="faasd") as (function, queue):
        reply = requests.put(f"{queue.url}/function/fn.openfaas-fn/p?q=1", data=b"s", timeout=10)
    assert (reply.status_code, reply.text) == (200, "answer:s")
    assert "X-Duration-Seconds" in reply.headers
    assert function.seen[0]["host"] == f"127.0.0.1:{function.server.port}"


def test_an_unknown_function_is_404() -> None:
    with QueueWorker() as queue:
        assert requests.post(f"{queue.url}/function/nope", timeout=10).status_code == 404


def test_free_port_is_free() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
