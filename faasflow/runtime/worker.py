"""A worker process of the local gateway: loads a stack's handlers and serves them on loopback.

Started by :class:`faasflow.runtime.gateway.Gateway` as ``python -m faasflow.runtime.worker``.
Protocol: the first line of stdin is a JSON config (stack path, function names, flow defaults);
the worker answers one JSON line on stdout (``{"port": N}`` or ``{"error": "..."}``), then
serves ``/<function>/<path>`` until its stdin closes (the gateway stopped or was killed).
Everything else the worker and its handlers print goes to stderr, one line at a time, tagged
with the function being served (see :mod:`faasflow.runtime.logbook`).
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from faasflow.context import current
from faasflow.errors import ConfigurationError, FaasflowError
from faasflow.runtime import samecall
from faasflow.runtime.kept import SameWorkerIterations, enabled
from faasflow.runtime.logbook import Tag, encode
from faasflow.runtime.preflight import check_flow
from faasflow.runtime.python3http import wsgi_app
from faasflow.runtime.server import (
    DEFAULT_KEEPALIVE,
    DEFAULT_THREADS,
    StartResponse,
    WSGIApp,
    serve,
)
from faasflow.runtime.stack import FunctionSpec, Stack, load_handler
from faasflow.settings import EnvVars, Settings

__all__ = ["FunctionsApp", "build_app", "main"]

log = logging.getLogger("faasflow.worker")

#: Seconds between sweeps of expired records and requests past their deadline.
SWEEP_INTERVAL = 10.0

#: The function (and call id) the current thread is serving, for tagging its output.
_serving: contextvars.ContextVar[Tag | None] = contextvars.ContextVar(
    "faasflow_serving", default=None
)
#: A flow's request id in the path of its routes (``/flow/<id>/...``).
_FLOW_PATH = re.compile(r"^/flow/([^/]+)")


class TaggedStream(io.TextIOBase):
    """A text stream writing whole lines to a file descriptor, each tagged with the function
    the writing thread serves; used as ``sys.stdout``, ``sys.stderr`` and the log stream."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, text: str) -> int:
        pending: str = getattr(self._local, "pending", "") + text
        *lines, rest = pending.split("\n")
        self._local.pending = rest
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        pending: str = getattr(self._local, "pending", "")
        if pending:
            self._local.pending = ""
            self._emit(pending)

    def _emit(self, line: str) -> None:
        serving = _serving.get()
        running = current()  # the request (and node) this thread runs, once the engine knows it
        if serving is not None and running is not None and running.request_id:
            serving = attrs.evolve(serving, request_id=serving.request_id or running.request_id,
                                   node=running.node or None)
        data = (encode(serving, line) if serving else line.encode(errors="replace")) + b"\n"
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]


class FunctionsApp:
    """Dispatches ``/<function>/<path>`` to each function's WSGI app."""

    def __init__(self, apps: Mapping[str, WSGIApp]) -> None:
        self.apps = dict(apps)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "/")
        name, _, rest = path.lstrip("/").partition("/")
        app = self.apps.get(name)
        if app is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"[ Failed ] no function {name!r} in this worker\n".encode()]
        environ["SCRIPT_NAME"] = f"/{name}"
        environ["PATH_INFO"] = "/" + rest
        raw = str(environ.get("RAW_URI") or "")
        if raw.startswith(f"/{name}"):
            environ["RAW_URI"] = raw[len(name) + 1:] or "/"
        in_path = _FLOW_PATH.match(environ["PATH_INFO"])
        request_id = environ.get("HTTP_X_FAAS_FLOW_REQID") or (in_path and in_path.group(1))
        token = _serving.set(Tag(name, environ.get("HTTP_X_CALL_ID"), request_id or None))
        try:
            result = app(environ, start_response)
            try:
                return list(result)  # drawn here, so what it prints is tagged too
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            _serving.reset(token)


def package_name(function: str) -> str:
    """The import name a function's handler directory gets."""
    return "faasflow_fn_" + re.sub(r"[^a-zA-Z0-9_]", "_", function)


def flow_settings(spec: FunctionSpec, defaults: Mapping[str, str]) -> Settings:
    """Settings of one flow: the process environment, then the function's ``environment:``
    from stack.yml, over the gateway's defaults; the flow's name is the function's."""
    base = Settings.from_env().environ
    environ = {**base, **spec.environment, EnvVars.FLOW_NAME: spec.name}
    return Settings.from_env(environ, defaults=defaults)


def build_app(spec: FunctionSpec, defaults: Mapping[str, str]) -> WSGIApp:
    """Load the handler of ``spec`` and return the WSGI app serving it."""
    module = load_handler(spec.handler, package_name(spec.name))
    if spec.is_flow:
        define = getattr(module, "define", None)
        if not callable(define):
            raise ConfigurationError(
                f"{spec.handler / 'handler.py'} (function {spec.name!r}, lang {spec.lang}) "
                "defines no define(flow, context)"
            )
        from faasflow.runtime.app import FlowApp

        # the gateway's start-up check already printed an invalid definition, once
        return FlowApp(define, flow_settings(spec, defaults), report_invalid=False)
    handle = getattr(module, "handle", None)
    if not callable(handle):
        raise ConfigurationError(
            f"{spec.handler / 'handler.py'} (function {spec.name!r}, lang {spec.lang}) "
            "defines no handle(event, context)"
        )
    return wsgi_app(handle, spec.name)


#: Seconds a stopping worker gives its flows to hand queued spans and the like to their
#: backends, inside the gateway's own stop timeout.
CLOSE_GRACE = 3.0


def _watch_stdin(apps: Mapping[str, WSGIApp], kept: SameWorkerIterations | None = None
                 ) -> None:
    rest = b""
    try:
        while True:
            chunk = os.read(sys.stdin.fileno(), 65536)  # returns what is there
            if not chunk:
                break
            *lines, rest = (rest + chunk).split(b"\n")
            if kept is None:
                continue
            for line in lines:
                if line.startswith(b"run "):  # a queued row the gateway made this worker's
                    kept.routed(line[4:].decode(errors="replace"))
                elif line.startswith(b"ended "):  # a request ended in another worker
                    flow, _, request_id = line[6:].decode(errors="replace").partition(" ")
                    kept.ended(flow, request_id)
                elif line == b"closing":
                    kept.stop_keeping()  # the gateway is stopping: hand-ons go to its queue
    finally:
        # the gateway is stopping us: close the flows' backends (a tracer exports what it
        # queued) for a bounded time, then leave at once, whatever is still running
        closing = threading.Thread(target=_close_all, args=(apps,), daemon=True)
        closing.start()
        closing.join(CLOSE_GRACE)
        samecall.flush_reports()  # the gateway counts calls served here until the end
        os._exit(0)


def _close_all(apps: Mapping[str, WSGIApp]) -> None:
    for app in apps.values():
        close = getattr(app, "close", None)
        if close is None:
            continue
        try:
            close()
        except Exception:  # one flow's backend must not keep the others open
            log.exception("closing %s failed", type(app).__name__)


def _sweep(apps: Mapping[str, WSGIApp], interval: float) -> None:
    from faasflow.runtime.app import FlowApp

    flows = [app for app in apps.values() if isinstance(app, FlowApp)]
    while flows:
        time.sleep(interval)
        for app in flows:
            try:
                app.sweep()
            except FaasflowError as exc:
                log.warning("sweeping request records failed: %s", exc)


def _die_with_parent() -> None:
    # Linux: the kernel kills this worker the moment the gateway dies, before a call the
    # worker has in flight through the gateway can fail and be recorded as a flow failure
    # (the iteration is delivered again after the restart instead). stdin EOF is the
    # portable fallback.
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the gateway died before prctl took effect
        os._exit(0)


def _keep_iterations(config: Mapping[str, Any], functions: FunctionsApp, stack: Stack
                     ) -> SameWorkerIterations | None:
    """Install the shortcut keeping hand-ons on this worker, when the gateway offers its queue
    (the built-in one; see :mod:`faasflow.runtime.kept`)."""
    offer = config.get("handoff")
    flows = [name for name in functions.apps if stack.functions[name].is_flow]
    if not isinstance(offer, dict) or not flows or not enabled(os.environ):
        return None
    from faasflow import shortcuts

    kept = SameWorkerIterations(functions, flows, offer["queue"], offer["holder"],
                                offer["host"])
    shortcuts.install(offer["gateway"], forward=kept)
    return kept


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the gateway, which stops us
    os.umask(0o077)  # request bodies and outputs written here are the owner's only
    _die_with_parent()
    # stdout is the protocol with the gateway; whatever else prints (handlers print logs to
    # stdout, as on OpenFaaS; C code writes to fd 1) goes to stderr, the log the gateway reads
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    stream = TaggedStream(2)
    sys.stdout = sys.stderr = stream
    try:
        config = json.loads(sys.stdin.buffer.readline())
    except ValueError as exc:
        print(json.dumps({"error": f"bad worker config: {exc}"}), file=protocol, flush=True)
        return 1
    logging.basicConfig(level=logging.WARNING if config.get("quiet") else logging.INFO,
                        stream=stream, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        stack = Stack.load(config["stack"], Settings.from_env().environ,
                           filter=config.get("filter"), regex=config.get("regex"))
        apps = {name: build_app(stack.get(name), config["defaults"])
                for name in config["functions"]}
        functions = FunctionsApp(apps)
        kept = _keep_iterations(config, functions, stack)
        server = serve(kept.wrap(functions) if kept else functions, "127.0.0.1", 0,
                       threads=int(config.get("threads") or DEFAULT_THREADS),
                       keepalive=float(config.get("keepalive") or DEFAULT_KEEPALIVE))
        # a flow's calls of the python3-http functions served here skip the gateway
        samecall.install(config, functions, [name for name in apps
                                             if not stack.functions[name].is_flow], server.port)
    except (FaasflowError, ValueError, KeyError, OSError) as exc:
        print(json.dumps({"error": str(exc)}), file=protocol, flush=True)
        return 1
    except Exception as exc:  # a bug in faasflow or a plugin: name it rather than hang
        log.exception("worker start failed")
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), file=protocol, flush=True)
        return 1
    if kept is not None:
        kept.reports_to(protocol)
    ready: dict[str, Any] = {"port": server.port}
    if config.get("report"):
        known = set(stack.functions) | set(stack.skipped)
        ready["flows"] = [check_flow(app, name, known, stack.path.name)
                          for name, app in apps.items() if stack.functions[name].is_flow]
    print(json.dumps(ready), file=protocol, flush=True)
    threading.Thread(target=_watch_stdin, args=(apps, kept), daemon=True).start()
    if config.get("sweep"):
        threading.Thread(target=_sweep, args=(apps, SWEEP_INTERVAL), daemon=True).start()
    log.info("worker %s serving %s", config.get("name", "?"), ", ".join(apps))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
