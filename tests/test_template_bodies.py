"""Request bodies of every framing reach the flow whole: chunked (as the of-watchdog always
sends them, one or many chunks, empty, large), with a Content-Length, or none, through raw
sockets to the template's entry point under gunicorn (gthread, 2 workers), to a python3-http
function under gunicorn, and to the built-in server."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from template_harness import function_dir, function_env, watchdog

from faasflow.runtime.app import FlowApp
from faasflow.runtime.server import serve
from faasflow.settings import Settings
from faasflow.testing.watchdog import free_port

pytest.importorskip("gunicorn", reason="the template's server; pip install gunicorn")

LIMIT = 8 * 1024 * 1024
DIGEST = """
    import hashlib


    def define(flow, context):
        flow.sync_node().modify(
            lambda data: f"{len(data)}:{hashlib.sha256(data).hexdigest()}".encode())
"""


def digest(body: bytes) -> str:
    return f"{len(body)}:{hashlib.sha256(body).hexdigest()}"


def exchange(address: tuple[str, int], request: bytes) -> tuple[int, bytes]:
    """Send raw bytes on a fresh connection (``Connection: close``); (status, body)."""
    with socket.create_connection(address, timeout=60) as sock:
        sock.sendall(request)
        data = b""
        while more := sock.recv(65536):
            data += more
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return int(head.split(b" ", 2)[1]), body


def dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2:]


def chunked(parts: list[bytes], host: str = "bodies.openfaas-fn") -> bytes:
    out = [f"POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
           "Connection: close\r\n\r\n".encode()]
    out += [b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p]
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def with_length(body: bytes, host: str = "bodies.openfaas-fn") -> bytes:
    return (f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def bodiless(host: str = "bodies.openfaas-fn") -> bytes:
    return f"POST / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


@pytest.fixture(scope="module")
def gunicorn_flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The template's entry point; the address is gunicorn's own (no watchdog in between)."""
    app = function_dir(tmp_path_factory.mktemp("bodies"), DIGEST)
    env = function_env(FAASFLOW_GATEWAY_URL="http://127.0.0.1:9", FAASFLOW_HMAC_SECRET="k",
                       FAASFLOW_MAX_BODY=str(LIMIT))
    with watchdog(app, env) as dog:
        parts = urlsplit(dog.upstream_url)
        yield parts.hostname or "127.0.0.1", parts.port or 80


@pytest.fixture(scope="module")
def builtin_flow() -> Iterator[tuple[str, int]]:
    def define(flow: object, context: object) -> None:
        flow.sync_node().modify(lambda data: digest(data).encode())  # type: ignore[attr-defined]

    server = serve(FlowApp(define, Settings.from_env({"FAASFLOW_MAX_BODY": str(LIMIT)}))).start()
    yield server.host, server.port
    server.close()


@pytest.fixture(scope="module")
def gunicorn_python3_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    root = tmp_path_factory.mktemp("p3h")
    (root / "p3h.py").write_text(textwrap.dedent("""
        import hashlib
        from faasflow.runtime.python3http import wsgi_app

        def handle(event, context):
            return f"{len(event.body)}:{hashlib.sha256(event.body).hexdigest()}"

        app = wsgi_app(handle, "p3h")
    """))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "4", "-b",
         f"127.0.0.1:{port}", "p3h:app"],
        cwd=root, env=function_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.05)
    yield "127.0.0.1", port
    process.terminate()
    process.wait(timeout=20)


SERVERS = ["gunicorn_flow", "builtin_flow", "gunicorn_python3_http"]
LARGE = bytes(range(256)) * (5 * 1024 * 1024 // 256)


@pytest.fixture(params=SERVERS)
def address(request: pytest.FixtureRequest) -> tuple[str, int]:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def test_a_chunked_body_in_several_chunks_arrives_whole(address: tuple[str, int]) -> None:
    assert exchange(address, chunked([b"dora", b"-the-", b"explorer"])) == (
        200, digest(b"dora-the-explorer").encode())


def test_a_chunked_body_of_one_chunk_arrives_whole(address: tuple[str, int]) -> None:
    assert exchange(address, chunked([b"dora"])) == (200, digest(b"dora").encode())


def test_an_empty_chunked_body_is_empty(address: tuple[str, int]) -> None:
    assert exchange(address, chunked([])) == (200, digest(b"").encode())


def test_a_large_chunked_body_arrives_whole(address: tuple[str, int]) -> None:
    pieces = [LARGE[i:i + 32 * 1024] for i in range(0, len(LARGE), 32 * 1024)]
    assert exchange(address, chunked(pieces)) == (200, digest(LARGE).encode())


def test_a_body_with_a_content_length_arrives_whole(address: tuple[str, int]) -> None:
    assert exchange(address, with_length(b"abc" * 1000)) == (200, digest(b"abc" * 1000).encode())


def test_a_request_without_a_body_has_an_empty_body(address: tuple[str, int]) -> None:
    assert exchange(address, bodiless()) == (200, digest(b"").encode())


@pytest.mark.parametrize("server", ["gunicorn_flow", "builtin_flow"])
def test_a_chunked_body_over_faasflow_max_body_is_413(
    server: str, request: pytest.FixtureRequest
) -> None:
    address = request.getfixturevalue(server)
    big = b"x" * (1024 * 1024)
    status, body = exchange(address, chunked([big] * 9))
    assert status == 413
    assert b"FAASFLOW_MAX_BODY" in body or b"over" in body


def test_a_content_length_over_faasflow_max_body_is_413(gunicorn_flow: tuple[str, int]) -> None:
    head = (f"POST / HTTP/1.1\r\nHost: bodies.openfaas-fn\r\nContent-Length: {LIMIT + 1}\r\n"
            "Connection: close\r\n\r\n").encode()
    status, body = exchange(gunicorn_flow, head + b"x" * 10)
    assert status == 413
    assert b"FAASFLOW_MAX_BODY" in body

