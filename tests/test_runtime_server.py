"""The runtime's HTTP server: HTTP/1.1 keep-alive, TCP_NODELAY, whole bodies, bad framing."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from faasflow.runtime.server import DEFAULT_THREADS, MAX_BODY, Server, serve


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Path", environ["PATH_INFO"]),
                              ("X-Query", environ["QUERY_STRING"])])
    return [b"got:", body]


def broken_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    raise RuntimeError("bug")


@pytest.fixture
def server() -> Iterator[Server]:
    running = serve(echo_app).start()
    yield running
    running.close()


def raw(server: Server, request: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" in b"".join(chunks):
                break
        return b"".join(chunks)


def test_one_connection_serves_many_requests(server: Server) -> None:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    for i in range(5):
        conn.request("POST", f"/p{i}?q={i}", body=f"b{i}".encode())
        response = conn.getresponse()
        assert response.read() == f"got:b{i}".encode()
        assert (response.getheader("X-Path"), response.getheader("X-Query")) == (f"/p{i}",
                                                                                  f"q={i}")
        assert not response.will_close
    first_socket = conn.sock
    conn.request("GET", "/again")
    conn.getresponse().read()
    assert conn.sock is first_socket
    conn.close()


def test_accepted_connections_disable_nagle(server: Server) -> None:
    # the listening socket's TCP_NODELAY is inherited by every accepted connection
    assert server._server.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_chunked_request_bodies_are_read_whole(server: Server) -> None:
    answer = raw(server, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         b"Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"got:abcde")


def test_malformed_chunked_body_is_400(server: Server) -> None:
    answer = raw(server, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"zz\r\nabc\r\n")
    assert answer.startswith(b"HTTP/1.1 400")


def test_body_over_the_limit_is_413(server: Server) -> None:
    answer = raw(server, f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n"
                         "\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 413")


def test_negative_content_length_is_400(server: Server) -> None:
    answer = raw(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")


def test_head_answers_headers_without_a_body(server: Server) -> None:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request("HEAD", "/")
    response = conn.getresponse()
    assert response.getheader("Content-Length") == "4"
    assert response.read() == b""
    conn.close()


def test_an_app_that_raises_answers_500_and_keeps_serving() -> None:
    running = serve(broken_app).start()
    try:
        conn = http.client.HTTPConnection(running.host, running.port, timeout=10)
        for _ in range(2):
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 500
            assert b"internal server error" in response.read()
        conn.close()
    finally:
        running.close()


def test_closing_an_unstarted_server_releases_its_port() -> None:
    unstarted = serve(echo_app)
    port = unstarted.port
    unstarted.close()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


# -- bounded resources, idle connections, garbage, streaming ---------------------------------


def slow_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    time.sleep(0.2)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [threading.current_thread().name.encode()]


def streaming_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "application/x-ndjson")])
    for i in range(3):
        yield f'{{"line": {i}}}\n'.encode()
        time.sleep(0.05)


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("garbage", [b"\x00\x01\x02\x03\r\n\r\n", b"NOT HTTP AT ALL\r\n\r\n",
                                     b"GET / HTTP/7.0\r\n\r\n", b"BREW /pot HTTP/1.1\r\n\r\n"])
def test_garbage_answers_the_failed_text_not_an_html_page(server: Server,
                                                          garbage: bytes) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(garbage)
        answer = read_answer(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1][:1] in (b"4", b"5"), head
    assert b"Content-Type: text/plain" in head
    assert b"Connection: close" in head
    assert body.startswith(b"[ Failed ] ")


def test_idle_keepalive_connection_is_closed_after_the_timeout() -> None:
    running = serve(echo_app, keepalive=0.3).start()
    try:
        with socket.create_connection((running.host, running.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert sock.recv(1) == b""  # the server closed it
            assert 0.1 < time.monotonic() - started < 3
    finally:
        running.close()


def test_requests_are_served_by_at_most_the_configured_threads() -> None:
    running = serve(slow_app, threads=4).start()
    try:
        def call(_: int) -> int:
            conn = http.client.HTTPConnection(running.host, running.port, timeout=30)
            conn.request("GET", "/")
            status = conn.getresponse().status
            conn.close()
            return status

        with ThreadPoolExecutor(40) as pool:
            assert list(pool.map(call, range(40))) == [200] * 40
        assert running.threads == 4
    finally:
        running.close()


def test_idle_keepalive_connections_hold_no_thread() -> None:
    running = serve(slow_app, threads=2).start()
    idle = []
    try:
        for _ in range(20):
            conn = http.client.HTTPConnection(running.host, running.port, timeout=30)
            conn.request("GET", "/")
            conn.getresponse().read()
            idle.append(conn)  # open and idle from now on
        started = time.monotonic()
        fresh = http.client.HTTPConnection(running.host, running.port, timeout=30)
        fresh.request("GET", "/")
        assert fresh.getresponse().status == 200
        assert time.monotonic() - started < 2
        fresh.close()
        for conn in idle:  # and each idle one still works
            conn.request("GET", "/")
            assert conn.getresponse().status == 200
    finally:
        for conn in idle:
            conn.close()
        running.close()


def test_pipelined_requests_on_one_connection_are_all_answered(server: Server) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1"
                     b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close"
                     b"\r\n\r\n2")
        answer = read_answer(sock)
    assert answer.count(b"HTTP/1.1 200") == 2
    assert b"got:1" in answer and answer.endswith(b"got:2")


def test_a_generator_without_length_is_streamed_chunked() -> None:
    running = serve(streaming_app).start()
    try:
        conn = http.client.HTTPConnection(running.host, running.port, timeout=10)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read() == b'{"line": 0}\n{"line": 1}\n{"line": 2}\n'
        conn.request("GET", "/")  # the connection is still usable
        assert conn.getresponse().read().count(b"line") == 3
        conn.close()
    finally:
        running.close()


FILE_LIMITED_SERVER = """
import resource, sys, threading
from faasflow.runtime.server import serve
resource.setrlimit(resource.RLIMIT_NOFILE, (512, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
opened = [open(__file__) for _ in range(100)]  # files an app holds open anyway

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(threading.active_count()).encode()]

server = serve(app)
print(server.port, flush=True)
server.serve_forever()
"""


def test_300_connections_under_a_512_file_limit_keep_being_answered(tmp_path: Path) -> None:
    script = tmp_path / "limited.py"
    script.write_text(FILE_LIMITED_SERVER)
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(300)]

        def call(conn: http.client.HTTPConnection) -> tuple[int, int]:
            conn.request("GET", "/")
            response = conn.getresponse()
            return response.status, int(response.read())

        with ThreadPoolExecutor(100) as pool:
            for _ in range(2):  # every connection is open, kept alive, and used again
                answers = list(pool.map(call, conns))
                assert {status for status, _ in answers} == {200}
                assert max(threads for _, threads in answers) <= DEFAULT_THREADS + 2
        for conn in conns:
            conn.close()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_calls_nested_on_the_same_server_do_not_deadlock_a_full_pool() -> None:
    port: list[int] = []

    def nesting(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/outer":  # as a flow calling a function through the gateway
            conn = http.client.HTTPConnection("127.0.0.1", port[0], timeout=30)
            conn.request("GET", "/inner")
            body = conn.getresponse().read()
            conn.close()
        else:
            body = b"inner"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    running = serve(nesting, threads=2).start()
    port.append(running.port)
    try:
        def call(_: int) -> bytes:
            conn = http.client.HTTPConnection(running.host, running.port, timeout=30)
            conn.request("GET", "/outer")
            body = conn.getresponse().read()
            conn.close()
            return body

        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(call, range(6))) == [b"inner"] * 6
        assert time.monotonic() - started < 10
    finally:
        running.close()


FILE_LIMITED_FLOW = """
import resource, sys
from faasflow.runtime.app import FlowApp
from faasflow.runtime.server import serve
from faasflow.settings import Settings
resource.setrlimit(resource.RLIMIT_NOFILE, (512, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

def define(flow, context):
    flow.sync_node().modify(lambda data: b"hello " + data)

data = sys.argv[1]
settings = Settings.from_env({"FAASFLOW_STATE_STORE": "sqlite", "FAASFLOW_DATA_STORE": "sqlite",
                              "FAASFLOW_SQLITE_PATH": data + "/state.db",
                              "FAASFLOW_FLOW_NAME": "hello", "FAASFLOW_HMAC_SECRET": "k"})
server = serve(FlowApp(define, settings))
print(server.port, flush=True)
server.serve_forever()
"""


def test_300_connections_to_a_flow_on_sqlite_under_a_512_file_limit(tmp_path: Path) -> None:
    script = tmp_path / "flow.py"
    script.write_text(FILE_LIMITED_FLOW)
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(300)]

        def call(conn: http.client.HTTPConnection) -> tuple[int, bytes]:
            conn.request("POST", "/", body=b"you")
            response = conn.getresponse()
            return response.status, response.read()

        with ThreadPoolExecutor(150) as pool:
            for _ in range(2):
                assert set(pool.map(call, conns)) == {(200, b"hello you")}
        for conn in conns:
            conn.close()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


@pytest.mark.parametrize(("host", "prefix"), [("0.0.0.0", "http://127.0.0.1:"),
                                              ("::1", "http://[::1]:")])
def test_url_is_one_a_local_client_can_use(host: str, prefix: str) -> None:
    try:
        running = serve(echo_app, host).start()
    except OSError as exc:  # no IPv6 on this machine
        pytest.skip(str(exc))
    try:
        assert running.url.startswith(prefix)
        conn = http.client.HTTPConnection(running.url.split("://")[1].rsplit(":", 1)[0]
                                          .strip("[]"), running.port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        running.close()
