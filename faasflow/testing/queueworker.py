"""A stand-in for the OpenFaaS gateway's asynchronous path and its queue-worker, for tests.

It is not OpenFaaS: it does, over real sockets, what the CE gateway plus NATS queue-worker (mode
``"ce"``) or OpenFaaS Pro's JetStream queue-worker (mode ``"pro"``) do to a function:

- ``POST /async-function/<name>[.<namespace>][/<path>]`` answers 202 with ``X-Call-Id`` (the
  client's own when it sent one); any other method is 405; a malformed ``X-Callback-Url`` is 400;
- each job is delivered later to the function, with a chunked body, the caller's headers and
  ``X-Call-Id`` / ``X-Start-Time``: to ``functions[name]`` directly (standing in for the gateway
  and provider too), else to ``gateway`` at ``/function/<name>.<namespace>/<path>``;
- ``"ce"`` acks whatever the answer: a 5xx is never retried. ``"pro"`` retries 429, 502, 503 and
  504 (and a refused connection) with exponential backoff, at most ``max_attempts`` times;
- with ``X-Callback-Url`` the function's answer is POSTed there with ``X-Call-Id``,
  ``X-Function-Status``, ``X-Function-Name``, ``X-Duration-Seconds`` and the answer's headers;
- ``/function/<name>[.<namespace>][/<path>]`` (any method) is proxied synchronously, so a
  :class:`~faasflow.testing.watchdog.Watchdog` plus this behave as a one-function OpenFaaS.

A direct delivery sets ``Host`` as the provider's proxy would: faas-netes calls the function's
service (``<name>.<namespace>.svc.cluster.local:8080``), faasd its IP and port
(``host_header="faasd"``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from faasflow.testing.watchdog import HOP_BY_HOP, read_request_body, send_upstream

__all__ = ["Delivery", "QueueWorker"]

log = logging.getLogger("faasflow.testing.queueworker")

#: Statuses OpenFaaS Pro's queue-worker retries.
RETRIED = frozenset({429, 502, 503, 504})


@attrs.frozen
class Delivery:
    """One finished job: what the function answered, after how many attempts."""

    call_id: str
    function: str
    path: str
    status: int
    attempts: int


@attrs.frozen
class _Job:
    call_id: str
    function: str
    namespace: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    callback: str | None


def _split(route: str) -> tuple[str, str, str]:
    """``name.ns/rest?q`` -> (name, namespace or "", "/rest?q")."""
    head, slash, rest = route.partition("/")
    if "?" in head:
        head, _, query = head.partition("?")
        rest, slash = f"?{query}", ""
    name, _, namespace = head.partition(".")
    return name, namespace, (slash + rest) if slash else (rest or "/")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"",
                headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        for name, value in headers or [("Content-Type", "text/plain")]:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self) -> None:
        body = read_request_body(self)
        worker = self.server.worker
        if self.path.startswith("/async-function/"):
            if self.command != "POST":
                self._answer(405, b"async invocations are POST only\n", [("Allow", "POST")])
                return
            name, namespace, target = _split(self.path[len("/async-function/"):])
            callback = self.headers.get("X-Callback-Url")
            if callback is not None:
                try:
                    parts = urlsplit(callback)
                    parts.port  # noqa: B018 - parsing the port is the check
                except ValueError as exc:
                    self._answer(400, f"X-Callback-Url: {exc}\n".encode())
                    return
            call_id = self.headers.get("X-Call-Id") or str(uuid.uuid4())
            worker.submit(_Job(call_id, name, namespace or worker.namespace, target,
                               tuple(self.headers.items()), body, callback))
            self._answer(202, b"", [("X-Call-Id", call_id)])
        elif self.path.startswith("/function/"):
            name, namespace, target = _split(self.path[len("/function/"):])
            started = time.monotonic()
            try:
                status, headers, data = worker.invoke(
                    name, namespace or worker.namespace, self.command, target,
                    tuple(self.headers.items()), body)
            except OSError as exc:
                self._answer(502, f"function {name} unreachable: {exc}\n".encode())
                return
            extra = [("X-Duration-Seconds", f"{time.monotonic() - started:.6f}"),
                     ("X-Start-Time", str(int(time.time() * 1e9)))]
            self._answer(status, data, headers + extra)
        elif self.path == "/healthz":
            self._answer(200, b"OK")
        else:
            self._answer(404, f"no route {self.path}\n".encode())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    worker: QueueWorker


class QueueWorker:
    """The asynchronous half of an OpenFaaS gateway, served on 127.0.0.1.

    ``functions`` maps a function name to its base URL (a watchdog); others go to ``gateway``.
    ``max_inflight`` jobs run at once. :attr:`deliveries` lists finished jobs in order.
    """

    def __init__(
        self,
        functions: Mapping[str, str] | None = None,
        *,
        gateway: str | None = None,
        mode: Literal["ce", "pro"] = "ce",
        namespace: str = "openfaas-fn",
        host_header: Literal["faas-netes", "faasd"] = "faas-netes",
        max_inflight: int = 4,
        max_attempts: int = 5,
        backoff: float = 0.05,
        timeout: float = 60.0,
        port: int = 0,
    ) -> None:
        if mode not in ("ce", "pro"):
            raise ValueError(f"mode {mode!r}: use 'ce' or 'pro'")
        self.functions = dict(functions or {})
        self.gateway = gateway.rstrip("/") if gateway else None
        self.mode = mode
        self.namespace = namespace
        self.host_header = host_header
        self.max_attempts = max_attempts if mode == "pro" else 1
        self.backoff = backoff
        self.timeout = timeout
        self.deliveries: list[Delivery] = []
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._threads = [threading.Thread(target=self._work, daemon=True,
                                          name=f"queue-worker-{i}") for i in range(max_inflight)]
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.worker = self
        self._serving: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The gateway URL to give a flow (``FAASFLOW_GATEWAY_URL``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> QueueWorker:
        for thread in self._threads:
            thread.start()
        self._serving = threading.Thread(target=self._server.serve_forever, daemon=True,
                                         name=f"queue-worker-http-{self.port}")
        self._serving.start()
        return self

    def close(self) -> None:
        """Stop accepting calls; jobs still queued are dropped."""
        self._server.shutdown()
        self._server.server_close()
        for _ in self._threads:
            self._queue.put(None)

    def wait_idle(self, timeout: float = 30.0, settle: float = 0.2) -> bool:
        """Wait until no job is queued or running, and none arrived for ``settle`` seconds."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while True:
                remaining = deadline - time.monotonic()
                if self._pending == 0:
                    count = len(self.deliveries)
                    self._idle.wait(min(settle, max(remaining, 0)))
                    if self._pending == 0 and len(self.deliveries) == count:
                        return True
                elif remaining <= 0:
                    return False
                else:
                    self._idle.wait(remaining)

    def submit(self, job: _Job) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(job)

    # -- delivery ------------------------------------------------------------------------------

    def invoke(
        self, name: str, namespace: str, method: str, target: str,
        headers: tuple[tuple[str, str], ...], body: bytes,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Call one function as the gateway and its provider would."""
        sent = [(k, v) for k, v in headers if k.lower() != "host"]
        base = self.functions.get(name)
        if base is None:
            if self.gateway is None:
                return 404, [("Content-Type", "text/plain")], (
                    f"error finding function {name}.{namespace}: not deployed\n".encode())
            url, target = self.gateway, f"/function/{name}.{namespace}{target}"
        else:
            url = base
            if self.host_header == "faas-netes":
                sent.append(("Host", f"{name}.{namespace}.svc.cluster.local:8080"))
        return send_upstream(url, method, target, sent, body, timeout=self.timeout)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._deliver(job)
            except Exception:
                log.exception("delivery of call %s to %s failed", job.call_id, job.function)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _deliver(self, job: _Job) -> None:
        own = {"x-call-id", "x-start-time", "x-callback-url"}
        headers = (*((k, v) for k, v in job.headers if k.lower() not in own),
                   ("X-Call-Id", job.call_id), ("X-Start-Time", str(int(time.time() * 1e9))))
        attempts = 0
        started = time.monotonic()
        while True:
            attempts += 1
            try:
                status, answer_headers, data = self.invoke(
                    job.function, job.namespace, "POST", job.target, headers, job.body)
            except OSError as exc:
                status, answer_headers, data = 502, [], f"{exc}\n".encode()
            if status not in RETRIED or attempts >= self.max_attempts:
                break
            time.sleep(self.backoff * 2 ** (attempts - 1))
        duration = time.monotonic() - started
        with self._idle:
            self.deliveries.append(Delivery(job.call_id, job.function, job.target, status,
                                            attempts))
        if job.callback:
            self._call_back(job, status, answer_headers, data, duration)

    def _call_back(self, job: _Job, status: int, headers: list[tuple[str, str]], data: bytes,
                   duration: float) -> None:
        assert job.callback is not None
        parts = urlsplit(job.callback)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
        sent += [("X-Call-Id", job.call_id), ("X-Function-Status", str(status)),
                 ("X-Function-Name", job.function), ("X-Duration-Seconds", f"{duration:.6f}")]
        try:
            send_upstream(f"{parts.scheme}://{parts.netloc}", "POST", target, sent, data,
                          timeout=self.timeout)
        except OSError as exc:
            log.warning("callback of call %s to %s failed: %s", job.call_id, job.callback, exc)

    def __enter__(self) -> QueueWorker:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
