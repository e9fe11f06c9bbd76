"""The runtime's HTTP server: HTTP/1.1 keep-alive, TCP_NODELAY, whole bodies, bad framing."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from faasflow.runtime.server import MAX_BODY, Server, serve


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
