"""A stand-in for OpenFaaS's of-watchdog in ``mode=http``, for tests of a function's image
entry point without Docker.

It is not the of-watchdog: it reproduces what the real one (0.10.7 and 0.11.6, measured) does
to a request, which is what a function must survive:

- it starts the function process (``fprocess``, e.g. ``python index.py``) with the watchdog's
  environment plus ``upstream_url``, and waits until that address accepts connections;
- it proxies every request to ``upstream_url`` with ``Transfer-Encoding: chunked`` and no
  ``Content-Length`` (a bodiless request goes without a body, as Go's ``net/http`` sends it);
- it passes the ``Host`` header through unchanged;
- it adds ``X-Duration-Seconds`` to every answer;
- it writes its lock file once the function is up (the image's ``HEALTHCHECK``) and removes it
  when it stops.

An upstream that cannot be reached answers 500 naming it (the stand-in's own wording). Use it as
a context manager::

    with Watchdog("python index.py", cwd=app_dir, env=env) as watchdog:
        requests.post(watchdog.url, data=b"x", headers={"Host": "my-flow.openfaas-fn"})
"""

from __future__ import annotations

import http.client
import os
import shlex
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = ["HOP_BY_HOP", "Watchdog", "free_port", "read_request_body", "send_upstream"]

#: Headers that describe one connection, never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
    "upgrade", "content-length",
})
#: Bytes per chunk sent upstream (Go's ``io.Copy`` buffer).
CHUNK = 32 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_OWN = frozenset({"server", "date"})  # every hop writes its own


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_request_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The whole body of the request ``handler`` is serving, chunked or with a length."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size = int(handler.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline(8)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def send_upstream(
    url: str,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    timeout: float,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send one request to ``url`` (scheme, host and port) as the of-watchdog and the
    queue-worker do: end-to-end headers as given (``Host`` included), a non-empty body always
    chunked. Returns (status, headers, body); connection errors raise ``OSError``."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                            timeout=timeout)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        sent_host = False
        for name, value in headers:
            if name.lower() in HOP_BY_HOP:
                continue
            sent_host = sent_host or name.lower() == "host"
            connection.putheader(name, value)
        if not sent_host:
            connection.putheader("Host", parts.netloc)
        if body:
            connection.putheader("Transfer-Encoding", "chunked")
        elif method.upper() in _BODY_METHODS:
            connection.putheader("Content-Length", "0")
        connection.endheaders()
        if body:
            for start in range(0, len(body), CHUNK):
                piece = body[start:start + CHUNK]
                connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            connection.send(b"0\r\n\r\n")
        answer = connection.getresponse()
        data = answer.read()
        kept = [(k, v) for k, v in answer.getheaders()
                if k.lower() not in HOP_BY_HOP and k.lower() not in _OWN]
        return answer.status, kept, data
    finally:
        connection.close()


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        started = time.monotonic()
        body = read_request_body(self)
        watchdog = self.server.watchdog
        try:
            status, headers, data = send_upstream(
                watchdog.upstream_url, self.command, self.path, self.headers.items(), body,
                timeout=watchdog.exec_timeout,
            )
        except OSError as exc:
            status, headers = 500, [("Content-Type", "text/plain")]
            data = f"Can't reach service for: {watchdog.upstream_url}: {exc}\n".encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Duration-Seconds", f"{time.monotonic() - started:.6f}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    watchdog: Watchdog


class Watchdog:
    """A stand-in for of-watchdog in http mode around one function process.

    ``fprocess`` is the command (a string is split like a shell would). ``env`` is the
    function's environment (default: this process's); ``upstream_url`` is added to it, on
    ``upstream_port`` (default: a free port). ``lock_file`` defaults to a fresh temporary path
    (the real one is ``/tmp/.lock``, which tests running side by side would share).
    ``exec_timeout`` bounds one upstream call, as of-watchdog's ``exec_timeout`` does.
    """

    def __init__(
        self,
        fprocess: str | Sequence[str],
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        port: int = 0,
        upstream_port: int | None = None,
        lock_file: str | Path | None = None,
        exec_timeout: float = 60.0,
        ready_timeout: float = 60.0,
    ) -> None:
        self.command = shlex.split(fprocess) if isinstance(fprocess, str) else list(fprocess)
        self.cwd = cwd
        self.upstream_url = f"http://127.0.0.1:{upstream_port or free_port()}"
        self.env = {**(os.environ if env is None else env), "upstream_url": self.upstream_url}
        self.exec_timeout = exec_timeout
        self.ready_timeout = ready_timeout
        self._scratch = Path(tempfile.mkdtemp(prefix="faasflow-watchdog-"))
        self.lock_file = Path(lock_file) if lock_file else self._scratch / ".lock"
        self.log_file = self._scratch / "fprocess.log"
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the watchdog is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Where to send requests, as a gateway would."""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the function process wrote to stdout and stderr so far."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> Watchdog:
        """Start the function process, wait for it, then serve; raises ``RuntimeError`` with
        the process's output when it exits or never listens."""
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        parts = urlsplit(self.upstream_url)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                socket.create_connection((parts.hostname, parts.port or 80), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(
                        f"fprocess {' '.join(self.command)!r} did not listen on "
                        f"{self.upstream_url}:\n{self.output()}"
                    ) from None
                time.sleep(0.05)
        self._server = _Server(("127.0.0.1", self._port), _Proxy)
        self._server.watchdog = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"watchdog-{self.port}")
        self._thread.start()
        self.lock_file.write_text("")
        return self

    def close(self) -> None:
        """Stop serving, remove the lock file, and stop the function process."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.lock_file.unlink(missing_ok=True)
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
