"""faasflow.http.HttpClient against real loopback servers."""

from __future__ import annotations

import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from faasflow.errors import FunctionError
from faasflow.http import FunctionTimeout, HttpClient
from faasflow.testing import LoopbackServer


class PeerHandler(BaseHTTPRequestHandler):
    """Answers with the client's port, so a test can tell connections apart."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        body = str(self.client_address[1]).encode()
        self.send_response(200)
        if self.path == "/close":
            self.send_header("Connection", "close")
        if self.path == "/twice":
            self.send_header("X-Twice", "a")
            self.send_header("X-Twice", "b")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_POST = do_GET


@pytest.fixture
def peer_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), PeerHandler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def client():
    http = HttpClient(timeout=10)
    yield http
    http.close()


@pytest.fixture
def gateway():
    server = LoopbackServer()
    yield server
    server.close()


def test_sequential_calls_reuse_one_connection(client, peer_server):
    first = client.request("GET", f"{peer_server}/a").body
    second = client.request("POST", f"{peer_server}/b", b"x").body
    assert first == second


def test_connection_close_answer_is_not_reused(client, peer_server):
    first = client.request("GET", f"{peer_server}/close").body
    second = client.request("GET", f"{peer_server}/a").body
    assert first != second


def test_a_connection_the_server_closed_while_idle_is_replaced(client):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def serve(count):
        for _ in range(count):
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.sendall(answer)
            conn.close()  # keep-alive promised, then dropped

    thread = threading.Thread(target=serve, args=(2,), daemon=True)
    thread.start()
    try:
        assert client.request("GET", url).body == b"ok"
        # Wait until the server's FIN has reached the pooled socket (it may be deferred).
        (idle,) = [conn for conns in client._idle.values() for conn in conns]
        assert select.select([idle.sock], [], [], 10)[0]
        assert client.request("GET", url).body == b"ok"
    finally:
        thread.join(10)
        listener.close()


def test_repeated_headers_are_joined(client, peer_server):
    response = client.request("GET", f"{peer_server}/twice")
    assert response.headers["X-Twice"] == "a, b"


def test_head_request_has_no_body_and_keeps_the_connection(client, peer_server):
    assert client.request("HEAD", f"{peer_server}/a").body == b""
    assert client.request("GET", f"{peer_server}/a").status == 200


def test_response_carries_the_url(client, peer_server):
    url = f"{peer_server}/path?q=1"
    assert client.request("GET", url).url == url


def test_timeout_raises_function_timeout(client, gateway):
    with pytest.raises(FunctionTimeout) as info:
        client.request("POST", f"{gateway.url}/function/slow", timeout=0.2)
    assert isinstance(info.value, FunctionError)
    assert info.value.timeout is True
    assert "did not answer within 0.2 s" in str(info.value)


def test_client_works_after_a_timeout(client, gateway):
    with pytest.raises(FunctionTimeout):
        client.request("POST", f"{gateway.url}/function/slow", timeout=0.2)
    assert client.request("POST", f"{gateway.url}/function/echo", b"hi").body == b"hi"


def test_default_timeout_comes_from_the_client(gateway):
    http = HttpClient(timeout=0.2)
    try:
        with pytest.raises(FunctionTimeout):
            http.request("POST", f"{gateway.url}/function/slow")
    finally:
        http.close()


def test_refused_connection_is_a_function_error_naming_the_url(client):
    from faasflow.testing import free_port

    url = f"http://127.0.0.1:{free_port()}/function/x"
    with pytest.raises(FunctionError) as info:
        client.request("POST", url)
    assert not isinstance(info.value, FunctionTimeout)
    assert url in str(info.value)
    assert "check that the endpoint is running" in str(info.value)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "not a url", "http:///nohost"])
def test_a_non_http_url_is_a_function_error(client, url):
    with pytest.raises(FunctionError, match="not an http:// or https:// URL"):
        client.request("GET", url)


def test_client_is_usable_after_close(client, peer_server):
    client.request("GET", f"{peer_server}/a")
    client.close()
    assert client.request("GET", f"{peer_server}/a").status == 200


def test_a_forked_child_opens_its_own_connections(client, peer_server):
    import os
    import warnings

    parent_port = client.request("GET", f"{peer_server}/a").body
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if client.request("GET", f"{peer_server}/a").body != parent_port else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.request("GET", f"{peer_server}/a").body == parent_port
