"""The local gateway: an OpenFaaS-compatible gateway for one ``stack.yml``, on one machine.

Architecture (see docs/runtime.md):

- the gateway process serves the gateway API and proxies every call, over keep-alive loopback
  HTTP (:mod:`~faasflow.runtime.upstream`), to **worker processes**
  (:mod:`~faasflow.runtime.workers`), each of which loads the stack's handlers and serves them
  on an internal port (``/<function>/<path>``);
- ``/function/<name>[.<namespace>][/<path>]`` and ``/async-function/...`` are routed here, the
  ``/system/*`` API lives in :mod:`~faasflow.runtime.system`, behind basic auth when it is on
  (:mod:`~faasflow.runtime.auth`);
- asynchronous calls go through a :class:`~faasflow.runtime.queue.DurableQueue` (SQLite in the
  data directory) and are delivered by :mod:`~faasflow.runtime.dispatch`, so iterations of
  flows run in parallel, and a call accepted with 202 survives a killed gateway;
- flows use the ``openfaas`` invoker pointed at this gateway (forwards go to
  ``/async-function/<flow>/flow/<id>/forward``, as on OpenFaaS) and the persistent ``sqlite``
  StateStore and ``filesystem`` DataStore in the data directory, unless configured otherwise;
- the HMAC key that signs iterations is the configured one, or generated once per data
  directory and kept there (:mod:`~faasflow.runtime.datadir`), so queued iterations are still
  valid after a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import attrs

from faasflow.errors import ConfigurationError, FaasflowError
from faasflow.runtime.auth import Credentials, load_credentials
from faasflow.runtime.calls import FunctionRoutes
from faasflow.runtime.datadir import hmac_secret, secure_tree
from faasflow.runtime.dispatch import Dispatcher
from faasflow.runtime.kept import enabled
from faasflow.runtime.kepthub import KeptHub
from faasflow.runtime.logbook import LogBook
from faasflow.runtime.metrics import CONTENT_TYPE, GatewayMetrics
from faasflow.runtime.preflight import describe
from faasflow.runtime.queue import DurableQueue, Job
from faasflow.runtime.queues import (
    QUEUE_ENV,
    Queue,
    QueueContext,
    QueueKind,
    check_multi_host,
    open_queue,
)
from faasflow.runtime.server import (
    DEFAULT_KEEPALIVE,
    DEFAULT_THREADS,
    DISCONNECTED,
    Server,
    StartResponse,
    serve,
)
from faasflow.runtime.stack import Stack
from faasflow.runtime.system import Streamed, SystemAPI
from faasflow.runtime.watch import Watcher
from faasflow.runtime.web import WebRequest, WebResponse, error, text
from faasflow.runtime.workers import WorkerPool, WorkerSettings, build_pools, start_all
from faasflow.settings import EnvVars, Settings
from faasflow.webapps import WebMounts

__all__ = ["Gateway", "GatewayConfig", "flow_defaults"]

log = logging.getLogger("faasflow.gateway")



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
    """Deliveries of one asynchronous call before it is a dead letter."""
    timeout: float = 300.0
    """Seconds a function call may take."""
    startup_timeout: float = 60.0
    secrets_dir: Path | None = None
    """OpenFaaS secrets of the functions (default ``<data_dir>/secrets``)."""
    basic_auth: bool = False
    """Require the ``basic-auth-user``/``basic-auth-password`` secrets on ``/system/*``."""
    keepalive: float = DEFAULT_KEEPALIVE
    """Seconds an idle keep-alive connection stays open (gateway and workers)."""
    server_threads: int = DEFAULT_THREADS
    """Requests each process (gateway, worker) serves at once."""
    quiet: bool = False
    """Workers log warnings only."""
    upstream_gateway: str = ""
    """An OpenFaaS gateway serving the stack's functions of other languages."""
    filter: str | None = None
    regex: str | None = None
    watch: bool = False
    """Reload when the stack file or a handler changes."""
    queue: str = ""
    """The queue of asynchronous calls (``--queue``; default ``FAASFLOW_QUEUE``, else SQLite)."""

    @property
    def secrets(self) -> Path:
        return self.secrets_dir or self.data_dir / "secrets"


def flow_defaults(gateway_url: str, data_dir: Path, hmac_secret: str) -> dict[str, str]:
    """The settings flows get inside the local gateway unless the environment says otherwise."""
    return {
        EnvVars.STATE_STORE: "sqlite",
        EnvVars.DATA_STORE: "filesystem",
        EnvVars.INVOKER: "openfaas",
        EnvVars.GATEWAY_URL: gateway_url,
        EnvVars.DATA_DIR: str(data_dir),
        EnvVars.HMAC_SECRET: hmac_secret,
        EnvVars.REDRIVE: "true",  # a failed request can be redriven or re-run from the CLI
        EnvVars.CAPTURE: "all",  # records show node inputs and outputs (docs/history.md)
        EnvVars.option("sqlite", "path"): str(data_dir / "state.db"),
        EnvVars.option("filesystem", "path"): str(data_dir / "data"),
    }


class Gateway:
    """Serves a stack; :meth:`start` returns once every worker is ready."""

    def __init__(self, config: GatewayConfig, settings: Settings | None = None) -> None:
        self.config = config
        self.settings = settings or Settings.from_env()
        self.stack = config.stack
        self.secrets_dir = config.secrets
        self.invocations: dict[str, int] = dict.fromkeys(self.stack.functions, 0)
        self.defaults: dict[str, str] = {}
        self.pools: dict[str, WorkerPool] = {}
        self.pool_of: dict[str, WorkerPool] = {}
        self.logs = LogBook()
        self.closing = threading.Event()
        self.started_at = time.time()
        self.credentials: Credentials | None = None
        self.credentials_created = False
        self.hmac_source = ""
        self.system = SystemAPI(self)
        self.calls = FunctionRoutes(self)
        self._stack_mtime = _mtime(self.stack.path)
        self._server: Server | None = None
        self._queue: Queue | None = None
        self.queue_kind: QueueKind | None = None
        self._dispatcher: Dispatcher | None = None
        self._kept: KeptHub | None = None
        self._lock_file: IO[str] | None = None
        self._count_lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._monitor_wake = threading.Event()
        self._aborted = threading.Event()
        self.web_apps = WebMounts({}, {})
        """Plugin web apps under ``/ui`` (the dashboard), built at start."""
        self.metrics = GatewayMetrics(
            lambda: len(self.stack.functions),
            lambda: self._queue.pending() if self._queue is not None else 0,
            lambda: self._queue.path if self._queue is not None else None,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the gateway is not started"
        return self._server.url

    @property
    def queue(self) -> Queue:
        assert self._queue is not None, "the gateway is not started"
        return self._queue

    def start(self) -> Gateway:
        data_dir = self.config.data_dir
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_data_dir(data_dir)
        try:
            secure_tree(data_dir)
            self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.config.basic_auth:
                self.credentials, self.credentials_created = load_credentials(
                    self.secrets_dir, create=True)
            self._queue, self.queue_kind = open_queue(
                self.config.queue or self.settings.environ.get(QUEUE_ENV, ""),
                QueueContext("", data_dir, self.config.max_attempts, self.settings.environ,
                             self.stack.path.name, self._given_up), self.settings)
            self._server = serve(self, self.config.host, self.config.port,
                                 threads=self.config.server_threads,
                                 keepalive=self.config.keepalive)
            secret, self.hmac_source = hmac_secret(data_dir, self.secrets_dir,
                                                   self.settings.environ)
            self.defaults = flow_defaults(
                self._server.url, data_dir.resolve(), secret
            )
            check_multi_host(self.queue_kind, self.settings, self.defaults, self.hmac_source)
            self.web_apps = WebMounts.from_plugins(self._server.url,
                                                   self.settings)
            if isinstance(self._queue, DurableQueue) and enabled(self.settings.environ):
                # workers keep the iterations they hand on in this queue's file (handoff.py)
                self._kept = KeptHub(self._queue, self._count_kept)
            self._start_pools()
            self._server.start()
            self._dispatcher = Dispatcher(
                self._queue, self.pool_of, threads=self.config.concurrency,
                max_attempts=self.config.max_attempts, closing=self.closing,
                stack_name=self.stack.path.name,
            )
            if self._kept is not None:
                self._kept.dispatcher = self._dispatcher
                self._kept.watch(self.config.timeout, self.closing)
            self._dispatcher.start()
            self._monitor = threading.Thread(target=self._watch_workers, daemon=True,
                                             name="faasflow-monitor")
            self._monitor.start()
            if self.config.watch:
                Watcher(self._watched, self.reload, self.closing).start()
        except BaseException:
            self.close()
            raise
        self._warn_missing_secrets()
        if self._queue.recovered:
            log.info("resuming %d queued asynchronous calls", self._queue.recovered)
        return self

    def close(self, grace: float = 5.0) -> None:
        """Stop gracefully: no queued call is started any more, while calls already running
        (and the function calls and forwards they make through this gateway) get up to
        ``grace`` seconds to finish; then the port is released and the workers stop. Queued
        calls, and deliveries cut off at the end of the grace, stay in the queue for the next
        start. :meth:`abort` (a second Ctrl-C) ends the grace at once."""
        self.closing.set()
        self.logs.wake()
        if self._queue is not None:
            self._queue.stop()
        end = time.monotonic() + grace
        if self._kept is not None:
            # workers hand on through this gateway again (queued for the next start) and
            # finish the kept iterations they run, which this grace waits for as for deliveries
            self._kept.stop()
            for pool in self.pools.values():
                for worker in pool.workers:
                    worker.tell(b"closing")
        if self._dispatcher is not None:
            while not self._aborted.is_set() and time.monotonic() < end and (
                    self._dispatcher.busy() or self._kept_running()):
                self._aborted.wait(0.05)
        if self._server is not None:
            while not self._aborted.is_set() and time.monotonic() < end and \
                    self._server.busy > 0:
                self._aborted.wait(0.05)
            with contextlib.suppress(Exception):
                self._server.close()
        for pool in self.pools.values():
            for worker in pool.workers:
                worker.stop(timeout=0.5 if self._aborted.is_set() else 5.0)
        if self._dispatcher is not None:
            self._dispatcher.join(1.0)
        if self._queue is not None:
            self._queue.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _kept_running(self) -> bool:
        if self._kept is None or self._queue is None:
            return False
        try:
            return self._kept.queue.held() > 0
        except Exception:  # the queue file went away: nothing to wait for
            return False

    def abort(self) -> None:
        """End :meth:`close`'s grace now: running calls are cut off (queued ones stay)."""
        self._aborted.set()

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

    def _worker_settings(self, stack: Stack) -> WorkerSettings:
        environ = {**self.settings.environ,
                   EnvVars.SECRET_MOUNT_PATH: str(self.secrets_dir.resolve())}
        return WorkerSettings(
            stack=str(stack.path), directory=str(stack.directory),
            defaults=self.defaults, environ=environ, keepalive=self.config.keepalive,
            threads=self.config.server_threads, timeout=self.config.timeout,
            startup_timeout=self.config.startup_timeout, quiet=self.config.quiet,
            namespace_of={n: s.namespace for n, s in stack.functions.items()},
            logs=self.logs, flows=frozenset(n for n, s in stack.functions.items() if s.is_flow),
            filter=self.config.filter, regex=self.config.regex,
            handoff=self._kept_config(), listener=self._kept,
            on_served=self._served_in_worker,
        )

    def _served_in_worker(self, name: str, status: int, seconds: float) -> None:
        """A call a worker served in the flow's own process (``samecall``), counted as the
        gateway counts the calls it proxies."""
        self.count_invocation(name)
        self.metrics.invoked(name, status, seconds)

    def _kept_config(self) -> dict[str, str] | None:
        if self._kept is None or self._server is None:
            return None
        return {"queue": str(self._kept.queue.path.resolve()),
                "gateway": self._server.url,
                "host": self._server.url.split("://", 1)[-1].rstrip("/")}

    def _given_up(self, job: Job, why: str) -> None:
        """A call the queue gave up by itself (``QueueContext.given_up``)."""
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.given_up(job, why)

    def _count_kept(self, name: str, times: int) -> None:
        """Iterations a worker kept, counted as the ``/async-function`` calls they replace."""
        with self._count_lock:
            if name not in self.invocations and name not in self.stack.functions:
                return
            self.invocations[name] = self.invocations.get(name, 0) + times
        self.metrics.invocations.labels(name, "202").inc(times)

    def _start_pools(self) -> None:
        self.pools = build_pools(self.stack, self._worker_settings(self.stack),
                                 self.config.processes)
        self.pool_of.update({name: pool for pool in self.pools.values()
                             for name in pool.functions})
        start_all(self.pools.values())

    def _watched(self) -> list[Path]:
        """The stack file, its environment files and every handler directory."""
        paths = [self.stack.path]
        paths += [spec.handler for spec in self.stack.functions.values()]
        return [p for p in dict.fromkeys(paths) if p.exists()]

    def reload(self) -> bool:
        """Serve the stack file as it is now (``--watch``): new worker processes load it, calls
        switch to them once they are ready, and the old ones stop after their running calls.
        A stack that does not load leaves the running version serving."""
        try:
            stack = Stack.load(self.stack.path, self.settings.environ,
                               filter=self.config.filter, regex=self.config.regex)
            pools = build_pools(stack, self._worker_settings(stack), self.config.processes)
            start_all(pools.values())
        except FaasflowError as exc:
            log.error("%s changed but cannot be served: %s; still serving the previous version",
                      self.stack.path.name, exc)
            return False
        old = self.pools
        for pool in old.values():
            pool.retired = True
        self.stack, self.pools = stack, pools
        self.pool_of.clear()  # the dispatcher holds this dict: change it in place
        self.pool_of.update({name: pool for pool in pools.values() for name in pool.functions})
        with self._count_lock:
            self.invocations = {n: self.invocations.get(n, 0) for n in stack.functions}
        self._stack_mtime = _mtime(stack.path)
        for pool in old.values():
            pool.stop_all()
        log.warning("reloaded %s: serving %s", stack.path.name, ", ".join(stack.functions))
        for report in self.flow_reports:
            log.log(logging.WARNING if report.get("problems") else logging.INFO, "%s",
                    describe(report))
        return True

    def _warn_missing_secrets(self) -> None:
        for spec in self.stack.functions.values():
            for name in spec.secrets:
                if not (self.secrets_dir / name).is_file():
                    log.warning("function %s reads the secret %s, which is not in %s: create "
                                "it (faas-cli secret create %s --from-literal ... --gateway "
                                "<this gateway>, or write the file)", spec.name, name,
                                self.secrets_dir, name)

    @property
    def flow_reports(self) -> list[dict[str, Any]]:
        """What the workers found about each flow at start (``preflight``)."""
        return [report for pool in self.pools.values() for worker in pool.workers
                for report in worker.flow_reports]

    def wake_monitor(self) -> None:
        self._monitor_wake.set()

    def _watch_workers(self) -> None:
        while not self.closing.is_set():
            self._monitor_wake.wait(0.5)
            self._monitor_wake.clear()
            for pool in self.pools.values():
                if not self.closing.is_set():
                    pool.reconcile(self.closing.is_set, log)

    # -- HTTP ----------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        web_app = self.web_apps.route(environ)
        if web_app is not None:
            # the UI is behind basic auth in OpenFaaS too
            if self.credentials is not None:
                asked = WebRequest.from_environ(environ)
                if not self.credentials.allows(asked):
                    return self.credentials.challenge(asked).send(start_response)
            return web_app(environ, start_response)
        request = WebRequest.from_environ(environ)
        raw = str(environ.get("RAW_URI") or "")
        disconnected: Callable[[], bool] = environ.get(DISCONNECTED) or (lambda: False)
        try:
            response = self.handle(request, raw.split("?", 1)[0] if raw else request.path,
                                   remote=str(environ.get("REMOTE_ADDR") or ""),
                                   disconnected=disconnected)
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            response = error(request, 500, "internal error in the faasflow gateway; see its log")
        return response.send(start_response)

    def handle(self, request: WebRequest, raw_path: str | None = None, *, remote: str = "",
               disconnected: Callable[[], bool] = lambda: False) -> WebResponse | Streamed:
        """Route one gateway request."""
        path = request.path
        if path in ("/healthz", "/healthz/"):
            return text("OK")
        if path in ("/metrics", "/metrics/") and request.method in ("GET", "HEAD"):
            return WebResponse(200, self.metrics.exposition(), (("Content-Type", CONTENT_TYPE),))
        if path == "/system" or path.startswith("/system/"):
            if self.credentials is not None and not self.credentials.allows(request):
                return self.credentials.challenge(request)
            answer = self.system.handle(request, disconnected)
            if answer is not None:
                return answer
        return self.calls.handle(request, raw_path or path, remote)

    def count_invocation(self, name: str) -> None:
        """One more call of ``name`` (``invocationCount`` of ``/system/functions``)."""
        with self._count_lock:
            self.invocations[name] = self.invocations.get(name, 0) + 1

    def not_found(self, name: str, namespace: str | None) -> str:
        """Why ``name`` is not served, with what is."""
        where = f" in namespace {namespace!r}" if namespace else ""
        message = (f"function {name!r} not found{where} in {self.stack.path.name} (it has "
                   f"{', '.join(sorted(self.stack.functions))})")
        if _mtime(self.stack.path) != self._stack_mtime:
            message += f"; {self.stack.path.name} changed since faasflow up started: restart it"
        return message

def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


