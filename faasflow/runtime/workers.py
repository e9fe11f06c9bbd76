"""The local gateway's worker processes: starting them, choosing one per call, their output.

Each worker (``python -m faasflow.runtime.worker``) loads a set of the stack's handlers and
serves them on a loopback port. A :class:`WorkerPool` is the workers serving one set of
functions (its replicas); the gateway's monitor thread restarts a worker that died and applies
a new replica count (:meth:`WorkerPool.scale`). Every line a worker writes to stderr goes to the
gateway's stderr and, tagged with the function that wrote it, to the :class:`LogBook`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any, Protocol

from faasflow.errors import ConfigurationError
from faasflow.runtime.callreports import Served, read_reports
from faasflow.runtime.logbook import LogBook, LogLine, decode
from faasflow.runtime.stack import Stack
from faasflow.runtime.upstream import Upstream, WorkerUnreachable

__all__ = ["WorkerListener", "WorkerPool", "WorkerProcess", "WorkerSettings", "build_pools",
           "start_all"]

#: Most worker processes one pool may be scaled to.
MAX_REPLICAS = 32


class WorkerListener(Protocol):
    """Hears what a worker process reports on its stdout after it is ready (one JSON object a
    line; see :mod:`~faasflow.runtime.kept`), and its death."""

    def report(self, holder: str, message: Mapping[str, Any]) -> None:
        ...

    def exited(self, holder: str) -> None:
        """The process started as ``holder`` is dead and reaped."""


class WorkerSettings:
    """What every worker of a gateway is started with."""

    def __init__(self, *, stack: str, directory: str, defaults: Mapping[str, str],
                 environ: Mapping[str, str], keepalive: float, threads: int, timeout: float,
                 startup_timeout: float, quiet: bool, namespace_of: Mapping[str, str],
                 logs: LogBook, flows: frozenset[str], filter: str | None = None,
                 regex: str | None = None, handoff: Mapping[str, Any] | None = None,
                 listener: WorkerListener | None = None, on_served: Served | None = None
                 ) -> None:
        self.stack = stack
        self.directory = directory
        self.defaults = dict(defaults)
        self.environ = dict(environ)
        self.keepalive = keepalive
        self.threads = threads
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.quiet = quiet
        self.namespace_of = dict(namespace_of)
        self.logs = logs
        self.flows = flows
        self.filter = filter
        self.regex = regex
        self.on_served = on_served
        """Counts a call a worker served without the gateway (:mod:`~.callreports`)."""
        self.handoff = dict(handoff) if handoff is not None else None
        """Where a worker keeps the iterations it hands on (``None``: it does not)."""
        self.listener = listener


class WorkerProcess:
    """One worker process and its connections."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.upstream: Upstream | None = None
        self.started = 0.0
        self.reported = False
        self.holder = ""
        """This start of the process, as the queue rows it holds name it."""
        self.flow_reports: list[dict[str, Any]] = []
        """What the first start found about the flows it serves (see ``preflight``)."""

    @property
    def name(self) -> str:
        return f"{self.pool.name}-{self.index}"

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start the process. Call it from a thread that lives as long as the gateway: on Linux
        the worker dies with the thread that spawned it."""
        settings = self.pool.settings
        old, self.upstream = self.upstream, None  # not chosen again until the new one is ready
        if old is not None:
            old.close()
        config = {
            "stack": settings.stack,
            "functions": list(self.pool.functions),
            "defaults": settings.defaults,
            "name": self.name,
            "sweep": self.index == 0 and any(f in settings.flows for f in self.pool.functions),
            "report": self.index == 0 and not self.reported,
            "keepalive": settings.keepalive,
            "threads": settings.threads,
            "quiet": settings.quiet,
            "filter": settings.filter,
            "regex": settings.regex,
            "timeout": settings.timeout,
        }
        if settings.handoff is not None and settings.listener is not None:
            from faasflow.runtime.kept import new_holder

            self.holder = new_holder(self.name)
            config["handoff"] = {**settings.handoff, "holder": self.holder}
        reports = os.pipe() if settings.on_served is not None else None
        if reports is not None:
            config["reports"] = reports[1]  # the worker writes its calls' reports there
        process = subprocess.Popen(
            [sys.executable, "-m", "faasflow.runtime.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**settings.environ, **self.pool.environment}, cwd=settings.directory,
            pass_fds=reports[1:] if reports is not None else (),
        )
        if reports is not None:
            os.close(reports[1])  # the worker's now: the reader sees its end when it exits
            threading.Thread(target=self._read_call_reports, args=(reports[0],), daemon=True,
                             name=f"faasflow-call-reports-{self.name}").start()
        assert process.stdin is not None
        process.stdin.write(json.dumps(config).encode() + b"\n")
        process.stdin.flush()
        self.process = process
        threading.Thread(target=self._read_output, args=(process,), daemon=True,
                         name=f"faasflow-log-{self.name}").start()

    def _read_output(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        settings = self.pool.settings
        alone = self.pool.functions[0] if len(self.pool.functions) == 1 else None
        out = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
        # the terminal shows each line under the function that wrote it, as docker compose
        # and faas-cli local-run do, names padded to one column
        width = max((len(n) for n in settings.namespace_of), default=0)
        for raw in process.stderr:
            tag, text = decode(raw)
            # a line no call wrote (start-up, background threads) belongs to the function
            # when the worker serves only one
            name = tag.function if tag else alone
            if out is not None:
                shown = f"{name:<{width}} | {text}" if name else text
                with contextlib.suppress(OSError, ValueError):
                    out.write(shown.encode(errors="replace") + b"\n")
                    out.flush()
            if name is not None:
                settings.logs.add(LogLine(
                    name=name, namespace=settings.namespace_of.get(name, ""),
                    instance=self.name, timestamp=time.time(), text=text,
                    call_id=tag.call_id if tag else None,
                    request_id=tag.request_id if tag else None,
                    node=tag.node if tag else None))
        with contextlib.suppress(OSError):
            process.stderr.close()

    def _read_call_reports(self, fd: int) -> None:
        settings = self.pool.settings
        assert settings.on_served is not None
        functions = frozenset(f for f in self.pool.functions if f not in settings.flows)
        with os.fdopen(fd, "rb") as stream:
            read_reports(stream, functions, settings.on_served)

    def wait_ready(self) -> None:
        """Wait for the worker's port (or its error)."""
        process = self.process
        assert process is not None
        assert process.stdout is not None
        settings = self.pool.settings
        line = _readline(process.stdout, settings.startup_timeout)
        try:
            ready = json.loads(line) if line else {}
        except ValueError:
            ready = {}
        if not isinstance(ready, dict) or "port" not in ready:
            process.kill()
            process.wait()
            reason = ready.get("error") if isinstance(ready, dict) else None
            reason = reason or (
                f"worker exited with status {process.returncode}" if line == b""
                else f"unexpected output {line[:200]!r}"
            )
            raise ConfigurationError(f"cannot start the functions of {settings.stack}: {reason}")
        if isinstance(ready.get("flows"), list):
            self.flow_reports = ready["flows"]
            self.reported = True
        self.upstream = Upstream(int(ready["port"]), settings.timeout, settings.keepalive)
        self.started = time.time()
        if settings.listener is not None and self.holder:
            threading.Thread(target=self._read_reports,
                             args=(process, self.holder, settings.listener), daemon=True,
                             name=f"faasflow-reports-{self.name}").start()
        self.pool.ready_changed()

    def _read_reports(self, process: subprocess.Popen[bytes], holder: str,
                      listener: WorkerListener) -> None:
        """Pass on the worker's reports; once its stdout closes and it is reaped, its death."""
        assert process.stdout is not None
        try:
            for raw in process.stdout:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    try:
                        listener.report(holder, message)
                    except Exception:  # one bad report must not deafen the gateway
                        import logging

                        logging.getLogger("faasflow.gateway").exception(
                            "handling a report of worker %s failed", self.name)
        except (OSError, ValueError):  # stop() closed the pipe: the process is gone too
            pass
        process.wait()  # the rows it held may go to another worker only once it is dead
        listener.exited(holder)

    def tell(self, line: bytes) -> None:
        """Write one line to the worker's stdin (``closing``: the gateway is stopping)."""
        process = self.process
        if process is None or process.stdin is None:
            return
        with contextlib.suppress(OSError, ValueError):
            process.stdin.write(line.rstrip(b"\n") + b"\n")
            process.stdin.flush()

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


class WorkerPool:
    """Worker processes serving a set of functions: the replicas of those functions."""

    def __init__(self, name: str, functions: Iterable[str], environment: Mapping[str, str],
                 size: int, settings: WorkerSettings) -> None:
        self.name = name
        self.functions = tuple(functions)
        self.environment = dict(environment)
        self.settings = settings
        self.workers = [WorkerProcess(self, i) for i in range(size)]
        self.target = size
        self.retired = False
        """Replaced by a reload: not restarted any more."""
        self._next = 0
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)

    def ready_changed(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def replicas(self) -> int:
        """Workers running now."""
        return sum(1 for w in self.workers if w.alive())

    def choose(self, wait: float) -> WorkerProcess:
        """The least busy running worker; waits up to ``wait`` seconds for one to (re)start."""
        deadline = time.monotonic() + wait
        with self._ready:
            while True:
                alive = [w for w in self.workers if w.upstream is not None and w.alive()]
                if alive:
                    self._next = (self._next + 1) % len(alive)
                    rotated = alive[self._next:] + alive[: self._next]
                    return min(rotated, key=lambda w: w.upstream.in_flight if w.upstream else 0)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkerUnreachable(f"no worker process of pool {self.name} is running")
                self._ready.wait(min(left, 0.25))

    def call(self, method: str, path: str, headers: Mapping[str, str], body: bytes, *,
             wait: float = 10.0, timeout: float | None = None
             ) -> tuple[str, tuple[int, list[tuple[str, str]], bytes]]:
        """Send one request to a worker: ``(worker name, (status, headers, body))``; ``wait``
        seconds for a worker to be running, ``timeout`` for its answer."""
        worker = self.choose(wait)
        upstream = worker.upstream
        assert upstream is not None
        with self._lock:
            upstream.in_flight += 1
        try:
            return worker.name, upstream.request(method, path, headers, body, timeout)
        finally:
            with self._lock:
                upstream.in_flight -= 1

    def scale(self, replicas: int) -> None:
        """Ask for ``replicas`` workers; the monitor starts or stops them."""
        with self._lock:
            self.target = replicas

    def stop_all(self) -> None:
        """Stop every worker once its running calls are done (the pool was replaced)."""
        self.retired = True
        for worker in list(self.workers):
            _drain(worker)
            worker.stop()

    def reconcile(self, closing: Callable[[], bool], log: Any) -> None:
        """Restart dead workers and apply the replica count (from the monitor thread)."""
        if self.retired:
            return
        while len(self.workers) > self.target:
            with self._lock:
                retired = self.workers.pop()
            _drain(retired)
            retired.stop()
            log.info("stopped worker %s (%s scaled to %d)", retired.name, self.name, self.target)
        while len(self.workers) < self.target and not closing():
            worker = WorkerProcess(self, len(self.workers))
            try:
                worker.start()
            except ConfigurationError as exc:
                log.error("cannot start worker %s: %s", worker.name, exc)
                self.target = len(self.workers)
                break
            with self._lock:
                self.workers.append(worker)
            log.info("started worker %s (%s scaled to %d)", worker.name, self.name, self.target)
        for worker in list(self.workers):
            if closing() or worker.alive():
                continue
            code = worker.process.returncode if worker.process else None
            log.warning("worker %s exited (status %s); starting it again", worker.name, code)
            try:
                worker.start()
            except ConfigurationError as exc:
                log.error("cannot restart worker %s: %s", worker.name, exc)


def build_pools(stack: Stack, settings: WorkerSettings, size: int) -> dict[str, WorkerPool]:
    """The pools serving ``stack``, not started: flows and functions without an environment
    share one; python3-http handlers read ``os.environ``, so functions with an environment run
    in processes started with it (functions with the same environment share them)."""
    size = max(1, size)
    pools: dict[str, WorkerPool] = {}
    shared = [f.name for f in stack.functions.values() if f.is_flow or not f.environment]
    if shared:
        pools["shared"] = WorkerPool("shared", shared, {}, size, settings)
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for spec in stack.functions.values():
        if not spec.is_flow and spec.environment:
            groups.setdefault(tuple(sorted(spec.environment.items())), []).append(spec.name)
    for environment, names in groups.items():
        pools[names[0]] = WorkerPool(names[0], names, dict(environment), size, settings)
    return pools


def start_all(pools: Iterable[WorkerPool]) -> None:
    """Start every worker of ``pools`` at once and wait for all; on an error every one is
    stopped and the first error raised. Call it from a thread that lives as long as the
    gateway (see :meth:`WorkerProcess.spawn`)."""
    workers = [w for pool in pools for w in pool.workers]
    for worker in workers:
        worker.spawn()
    errors: list[BaseException] = []
    for worker in workers:
        try:
            worker.wait_ready()
        except BaseException as exc:  # the first one is raised once all are reaped
            errors.append(exc)
    if errors:
        for worker in workers:
            worker.stop(timeout=1.0)
        raise errors[0]


def _drain(worker: WorkerProcess, timeout: float = 30.0) -> None:
    """Wait for the calls in flight on a worker taken out of rotation."""
    deadline = time.monotonic() + timeout
    while worker.upstream is not None and worker.upstream.in_flight and \
            time.monotonic() < deadline:
        time.sleep(0.05)


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise ConfigurationError(f"a worker process did not start within {timeout:.0f}s")
    return result[0] if result else b""
