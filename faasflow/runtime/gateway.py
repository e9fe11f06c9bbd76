"""The local gateway: an OpenFaaS-compatible gateway for one ``stack.yml``, on one machine.

Architecture (see docs/runtime.md):

- the gateway process serves the gateway API (``/function``, ``/async-function``,
  ``/system/functions``, ``/healthz``) and proxies every call, over keep-alive loopback HTTP, to
  a pool of **worker processes**, each of which loads the stack's handlers and serves them on
  an internal port (``/<function>/<path>``);
- asynchronous calls go through a :class:`~faasflow.runtime.queue.DurableQueue` (SQLite in the
  data directory) and are delivered by a pool of dispatcher threads, so iterations of flows run
  in parallel, and a call accepted with 202 survives a killed gateway;
- flows use the ``openfaas`` invoker pointed at this gateway (forwards go to
  ``/async-function/<flow>/flow/<id>/forward``, as on OpenFaaS) and the persistent ``sqlite``
  StateStore and ``filesystem`` DataStore in the data directory, unless configured otherwise;
- the HMAC key that signs iterations is generated once per data directory and kept there, so
  queued iterations are still valid after a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import attrs
import requests

from faasflow.errors import ConfigurationError, FaasflowError
from faasflow.runtime.queue import DurableQueue, Job
from faasflow.runtime.server import Server, StartResponse, serve
from faasflow.runtime.stack import FunctionSpec, Stack
from faasflow.runtime.web import Request, Response, error, json_response, text
from faasflow.settings import EnvVars, Settings

__all__ = ["Gateway", "GatewayConfig", "flow_defaults"]

log = logging.getLogger("faasflow.gateway")

#: Statuses after which an asynchronous delivery is tried again (as OpenFaaS's queue-worker).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer",
    "proxy-authorization", "proxy-authenticate", "host", "content-length",
})
_ROUTE = re.compile(r"^/(?P<kind>function|async-function)/(?P<name>[^/?]+)(?P<rest>/.*)?$")


class Unreachable(FaasflowError):
    """A worker process could not be reached."""


@attrs.frozen
class GatewayConfig:
    """How ``faasflow up`` runs a stack."""

    stack: Stack
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    processes: int = 2
    """Worker processes serving the functions."""
    concurrency: int = 8
    """Asynchronous calls (flow iterations) delivered at once."""
    max_attempts: int = 10
    """Deliveries of one asynchronous call before it is dropped."""
    timeout: float = 300.0
    """Seconds a function call may take."""
    startup_timeout: float = 60.0


def flow_defaults(gateway_url: str, data_dir: Path, hmac_secret: str) -> dict[str, str]:
    """The settings flows get inside the local gateway unless the environment says otherwise."""
    return {
        EnvVars.STATE_STORE: "sqlite",
        EnvVars.DATA_STORE: "filesystem",
        EnvVars.INVOKER: "openfaas",
        EnvVars.GATEWAY_URL: gateway_url,
        EnvVars.DATA_DIR: str(data_dir),
        EnvVars.HMAC_SECRET: hmac_secret,
        EnvVars.option("sqlite", "path"): str(data_dir / "state.db"),
        EnvVars.option("filesystem", "path"): str(data_dir / "data"),
    }


class _Upstream:
    """Keep-alive HTTP connections to one worker process."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self.in_flight = 0

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in range(2):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                conn.request(method, path, body=body, headers=dict(headers))
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue  # the worker closed an idle keep-alive connection
                raise Unreachable(f"worker on port {self.port}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise Unreachable(f"worker on port {self.port}: {exc}") from exc
            if response.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
            return response.status, list(response.getheaders()), data
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Worker:
    """One worker process and its connections."""

    def __init__(self, pool: _Pool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.upstream: _Upstream | None = None

    def start(self, gateway: Gateway) -> None:
        self.spawn(gateway)
        self.wait_ready(gateway)

    def spawn(self, gateway: Gateway) -> None:
        """Start the process. Call it from a thread that lives as long as the gateway: on Linux
        the worker dies with the thread that spawned it."""
        config = {
            "stack": str(gateway.config.stack.path),
            "functions": list(self.pool.functions),
            "defaults": gateway.defaults,
            "name": f"{self.pool.name}-{self.index}",
            "sweep": self.index == 0 and any(
                gateway.stack.functions[f].is_flow for f in self.pool.functions
            ),
        }
        env = None
        if self.pool.environment:
            env = {**Settings.from_env().environ, **self.pool.environment}
        process = subprocess.Popen(
            [sys.executable, "-m", "faasflow.runtime.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            cwd=str(gateway.config.stack.directory),
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(config).encode() + b"\n")
        process.stdin.flush()
        self.process = process

    def wait_ready(self, gateway: Gateway) -> None:
        """Wait for the worker's port (or its error)."""
        process = self.process
        assert process is not None
        assert process.stdout is not None
        line = _readline(process.stdout, gateway.config.startup_timeout)
        try:
            ready = json.loads(line) if line else {}
        except ValueError:
            ready = {}
        if "port" not in ready:
            process.kill()
            process.wait()
            reason = ready.get("error") or (
                f"worker exited with status {process.returncode}" if line == b""
                else f"unexpected output {line[:200]!r}"
            )
            raise ConfigurationError(f"cannot start the functions of {gateway.config.stack.path}: "
                                     f"{reason}")
        old, self.upstream = self.upstream, _Upstream(int(ready["port"]), gateway.config.timeout)
        if old is not None:
            old.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if self.upstream is not None:
            self.upstream.close()
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()  # the worker exits when its stdin closes
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


class _Pool:
    """Worker processes serving a set of functions."""

    def __init__(self, name: str, functions: Iterable[str], environment: Mapping[str, str],
                 size: int) -> None:
        self.name = name
        self.functions = tuple(functions)
        self.environment = dict(environment)
        self.workers = [_Worker(self, i) for i in range(size)]
        self._next = 0
        self._lock = threading.Lock()

    def choose(self) -> _Worker:
        with self._lock:
            alive = [w for w in self.workers if w.upstream is not None]
            if not alive:
                raise Unreachable(f"no worker process of pool {self.name} is running")
            self._next = (self._next + 1) % len(alive)
            rotated = alive[self._next:] + alive[: self._next]
            return min(rotated, key=lambda w: w.upstream.in_flight if w.upstream else 0)

    def call(self, method: str, path: str, headers: Mapping[str, str], body: bytes
             ) -> tuple[int, list[tuple[str, str]], bytes]:
        worker = self.choose()
        upstream = worker.upstream
        assert upstream is not None
        with self._lock:
            upstream.in_flight += 1
        try:
            return upstream.request(method, path, headers, body)
        finally:
            with self._lock:
                upstream.in_flight -= 1


class Gateway:
    """Serves a stack; :meth:`start` returns once every worker is ready."""

    def __init__(self, config: GatewayConfig, settings: Settings | None = None) -> None:
        self.config = config
        self.settings = settings or Settings.from_env()
        self.stack = config.stack
        self.invocations: dict[str, int] = dict.fromkeys(self.stack.functions, 0)
        self.defaults: dict[str, str] = {}
        self.pools: dict[str, _Pool] = {}
        self._pool_of: dict[str, _Pool] = {}
        self._server: Server | None = None
        self._queue: DurableQueue | None = None
        self._dispatchers: list[threading.Thread] = []
        self._lock_file: IO[str] | None = None
        self._closing = threading.Event()
        self._count_lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._local = threading.local()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the gateway is not started"
        return self._server.url

    @property
    def queue(self) -> DurableQueue:
        assert self._queue is not None, "the gateway is not started"
        return self._queue

    def start(self) -> Gateway:
        data_dir = self.config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir(data_dir)
        try:
            self._queue = DurableQueue(data_dir / "queue.db")
            self._server = serve(self, self.config.host, self.config.port)
            self.defaults = flow_defaults(
                f"http://127.0.0.1:{self._server.port}", data_dir.resolve(), _hmac_secret(data_dir)
            )
            self._start_pools()
            self._server.start()
            for i in range(max(1, self.config.concurrency)):
                thread = threading.Thread(target=self._dispatch_loop, daemon=True,
                                          name=f"faasflow-dispatch-{i}")
                thread.start()
                self._dispatchers.append(thread)
            self._monitor = threading.Thread(target=self._watch_workers, daemon=True,
                                             name="faasflow-monitor")
            self._monitor.start()
        except BaseException:
            self.close()
            raise
        if self._queue.recovered:
            log.info("resuming %d queued asynchronous calls", self._queue.recovered)
        return self

    def close(self, grace: float = 5.0) -> None:
        """Stop serving; calls being delivered get ``grace`` seconds, queued ones stay queued."""
        self._closing.set()
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.close()
        if self._queue is not None:
            self._queue.stop()
        end = time.monotonic() + grace
        for thread in self._dispatchers:
            thread.join(max(0.0, end - time.monotonic()))
        for pool in self.pools.values():
            for worker in pool.workers:
                worker.stop()
        if self._queue is not None:
            self._queue.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lock_data_dir(self, data_dir: Path) -> None:
        lock = (data_dir / "gateway.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            owner = lock.read().strip() or "?"
            lock.close()
            raise ConfigurationError(
                f"another faasflow gateway (pid {owner}) is using {data_dir}; stop it or pass "
                "another --data-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock_file = lock

    def _start_pools(self) -> None:
        shared = [f.name for f in self.stack.functions.values()
                  if f.is_flow or not f.environment]
        size = max(1, self.config.processes)
        if shared:
            self.pools["shared"] = _Pool("shared", shared, {}, size)
        # python3-http handlers read os.environ, so a function with an environment runs in
        # processes started with it; functions with the same environment share them
        groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
        for spec in self.stack.functions.values():
            if not spec.is_flow and spec.environment:
                groups.setdefault(tuple(sorted(spec.environment.items())), []).append(spec.name)
        for environment, names in groups.items():
            self.pools[names[0]] = _Pool(names[0], names, dict(environment), size)
        for pool in self.pools.values():
            for name in pool.functions:
                self._pool_of[name] = pool
        workers = [w for pool in self.pools.values() for w in pool.workers]
        for worker in workers:
            worker.spawn(self)
        errors: list[BaseException] = []
        for worker in workers:
            try:
                worker.wait_ready(self)
            except BaseException as exc:  # the first one is raised once all are reaped
                errors.append(exc)
        if errors:
            raise errors[0]

    def _watch_workers(self) -> None:
        while not self._closing.wait(0.5):
            for pool in self.pools.values():
                for worker in pool.workers:
                    if self._closing.is_set() or worker.alive():
                        continue
                    code = worker.process.returncode if worker.process else None
                    log.warning("worker %s-%d exited (status %s); starting it again",
                                pool.name, worker.index, code)
                    try:
                        worker.start(self)
                    except FaasflowError as exc:
                        log.error("cannot restart worker %s-%d: %s", pool.name, worker.index, exc)

    # -- HTTP ----------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request.from_environ(environ)
        raw = str(environ.get("RAW_URI") or "")
        try:
            response = self.handle(request, raw.split("?", 1)[0] if raw else request.path)
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            response = error(request, 500, "internal error in the faasflow gateway; see its log")
        return response.send(start_response)

    def handle(self, request: Request, raw_path: str | None = None) -> Response:
        """Route one gateway request."""
        path = request.path
        if path in ("/healthz", "/healthz/"):
            return text("OK")
        if path.rstrip("/") == "/system/functions":
            if request.method != "GET":
                return error(request, 405, "use GET /system/functions (deploying is faas-cli's "
                             "job; edit stack.yml and restart faasflow up)", None,
                             ("Allow", "GET"))
            return json_response([self._describe(spec) for spec in self.stack.functions.values()])
        if path.startswith("/system/function/"):
            name = path[len("/system/function/"):].strip("/")
            spec = self.stack.functions.get(name)
            if spec is None:
                return error(request, 404, f"function {name!r} not found in "
                             f"{self.stack.path.name}")
            return json_response(self._describe(spec))
        if path.rstrip("/") == "/system/queue":
            return json_response({"pending": self.queue.pending(),
                                  "recovered": self.queue.recovered})
        if path.rstrip("/") == "/system/info":
            from faasflow import __version__

            return json_response({"provider": {"provider": "faasflow", "version": __version__,
                                               "orchestration": "local"},
                                  "version": {"release": __version__}})
        match = _ROUTE.match(raw_path or path)
        if match is None:
            return error(request, 404, f"no route {request.method} {path}; the local gateway "
                         "serves /function/<name>, /async-function/<name>, /system/functions "
                         "and /healthz")
        name = match["name"]
        pool = self._pool_of.get(name)
        if pool is None:
            return error(request, 404, f"function {name!r} not found in {self.stack.path.name} "
                         f"(it has {', '.join(sorted(self.stack.functions))})")
        rest = match["rest"] or "/"
        with self._count_lock:
            self.invocations[name] += 1
        call_id = request.header("X-Call-Id") or str(uuid.uuid4())
        if match["kind"] == "async-function":
            return self._enqueue(request, name, rest, call_id)
        return self._proxy(request, pool, name, rest, call_id)

    def _describe(self, spec: FunctionSpec) -> dict[str, Any]:
        pool = self._pool_of.get(spec.name)
        replicas = sum(1 for w in pool.workers if w.alive()) if pool else 0
        return {
            "name": spec.name,
            "image": spec.image or f"faasflow/{spec.lang}",
            "namespace": "local",
            "envProcess": spec.lang,
            "labels": dict(spec.labels),
            "annotations": dict(spec.annotations),
            "invocationCount": self.invocations.get(spec.name, 0),
            "replicas": replicas,
            "availableReplicas": replicas,
        }

    def _proxy(self, request: Request, pool: _Pool, name: str, rest: str, call_id: str
               ) -> Response:
        headers = _forwarded_headers(request.headers, call_id, request)
        target = f"/{name}{rest}" + (f"?{request.query}" if request.query else "")
        try:
            status, out_headers, body = pool.call(request.method, target, headers, request.body)
        except Unreachable as exc:
            timeout = isinstance(exc.__cause__, TimeoutError)
            return error(request, 504 if timeout else 502,
                         f"function {name!r} {'timed out' if timeout else 'is unreachable'}: "
                         f"{exc}", None, ("X-Call-Id", call_id))
        kept = tuple((k, v) for k, v in out_headers if k.lower() not in _HOP_BY_HOP)
        return Response(status, body, (*kept, ("X-Call-Id", call_id)))

    def _enqueue(self, request: Request, name: str, rest: str, call_id: str) -> Response:
        callback = request.header("X-Callback-Url") or None
        if callback is not None and not callback.startswith(("http://", "https://")):
            return error(request, 400, f"header X-Callback-Url: {callback!r} is not an http(s) "
                         "URL")
        headers = tuple(_forwarded_headers(request.headers, call_id, request).items())
        job = Job(id=call_id, function=name, path=rest, query=request.query,
                  method=request.method, headers=headers, body=request.body, callback=callback)
        try:
            self.queue.put(job)
        except Exception as exc:
            log.error("cannot queue call %s to %s: %s", call_id, name, exc)
            return error(request, 503, f"cannot queue the call to {name!r}: {exc}")
        return Response(202, b"", (("X-Call-Id", call_id),))

    # -- asynchronous delivery -----------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        assert self._queue is not None
        while True:
            job = self._queue.take()
            if job is None:
                return
            try:
                self._deliver(job)
            except Exception:
                log.exception("delivering call %s to %s failed", job.id, job.function)
                self._queue.done(job)

    def _deliver(self, job: Job) -> None:
        assert self._queue is not None
        pool = self._pool_of.get(job.function)
        if pool is None:
            log.error("dropping queued call %s: function %r is not in %s any more",
                      job.id, job.function, self.stack.path.name)
            self._queue.done(job)
            return
        target = f"/{job.function}{job.path}" + (f"?{job.query}" if job.query else "")
        started = time.monotonic()
        try:
            status, headers, body = pool.call(job.method, target, dict(job.headers), job.body)
        except Unreachable as exc:
            if self._closing.is_set():
                return  # stays queued for the next run
            if self._retry(job, f"unreachable: {exc}"):
                return
            status, headers, body = 502, [], f"function {job.function} unreachable: {exc}".encode()
        else:
            if status in RETRY_STATUSES and not self._closing.is_set() and \
                    self._retry(job, f"status {status}"):
                return
        if status >= 400:
            # 410: an iteration of a request that was stopped or ended meanwhile - expected
            log.log(logging.INFO if status == 410 else logging.WARNING,
                    "queued call %s to %s%s answered %d: %s", job.id, job.function,
                    job.path, status, body[:300].decode(errors="replace").strip())
        if job.callback:
            self._callback(job, status, headers, body, time.monotonic() - started)
        self._queue.done(job)

    def _retry(self, job: Job, why: str) -> bool:
        assert self._queue is not None
        if job.attempts + 1 >= self.config.max_attempts:
            log.error("giving up on call %s to %s after %d attempts (%s)",
                      job.id, job.function, job.attempts + 1, why)
            return False
        delay = min(5.0, 0.1 * 2 ** job.attempts)
        log.warning("call %s to %s: %s; trying again in %.1fs", job.id, job.function, why, delay)
        self._queue.retry(job, delay)
        return True

    def _callback(self, job: Job, status: int, headers: list[tuple[str, str]], body: bytes,
                  duration: float) -> None:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        out = {k: v for k, v in headers if k.lower() not in _HOP_BY_HOP}
        out.update({
            "X-Call-Id": job.id,
            "X-Function-Name": job.function,
            "X-Function-Status": str(status),
            "X-Duration-Seconds": f"{duration:.6f}",
        })
        assert job.callback is not None
        for attempt in range(3):
            try:
                reply = session.post(job.callback, data=body, headers=out, timeout=30)
            except requests.RequestException as exc:
                log.warning("callback of call %s to %s failed: %s", job.id, job.callback, exc)
            else:
                if reply.status_code < 500:
                    return
                log.warning("callback of call %s to %s answered %d", job.id, job.callback,
                            reply.status_code)
            if self._closing.wait(0.2 * 2 ** attempt):
                return


def _forwarded_headers(headers: Mapping[str, str], call_id: str, request: Request
                       ) -> dict[str, str]:
    out = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
    out["X-Call-Id"] = call_id
    out.setdefault("X-Start-Time", str(time.time_ns()))
    host = request.header("Host")
    if host:
        out["X-Forwarded-Host"] = host
    return out


def _hmac_secret(data_dir: Path) -> str:
    path = data_dir / "hmac-secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return path.read_text().strip()


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise ConfigurationError(f"a worker process did not start within {timeout:.0f}s")
    return result[0] if result else b""
