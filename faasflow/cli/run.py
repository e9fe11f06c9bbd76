"""``faasflow run``: run a flow to the end in this process and print its output."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

if TYPE_CHECKING:
    from faasflow.engine import Engine, RequestRecord
    from faasflow.runtime.stack import Stack

from faasflow.cli.targets import FORMS

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a flow here, with no server, and print its output",
        description=(
            "Run a flow to the end in this process (embedded backends unless FAASFLOW_* "
            f"variables choose others) and print its output. TARGET is {FORMS}. python3-http "
            "functions of the stack file run in-process; other function names go to "
            "FAASFLOW_GATEWAY_URL when it is set. On a terminal, a line per finished node is "
            "shown on stderr. Exit codes: 0 success, 1 the flow failed, 2 bad input, 3 flow not "
            "found, 130 interrupted (Ctrl-C)."
        ),
    )
    parser.add_argument("flow", metavar="TARGET", help=FORMS)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-d", "--data", help="request body (default: stdin when it is not a "
                        "terminal, else empty)")
    source.add_argument("--data-file", help="read the request body from this file")
    parser.add_argument("-f", "--file", default=None,
                        help="stack file whose functions the flow calls (default: stack.yml "
                             "when present)")
    parser.add_argument("--query", default="", help="query string the flow sees")
    parser.add_argument("--request-id", default=None, help="use this request id")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop the request after this many seconds")
    parser.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                        help="show finished nodes on stderr (default: when it is a terminal)")
    parser.add_argument("--json", action="store_true",
                        help="print the request record as JSON instead of the output")
    parser.add_argument("--traceback", action="store_true",
                        help="on a failure, print the traceback of the user code that raised "
                             "(modifier, aggregator, condition, foreach function, define())")
    parser.set_defaults(func=run)


def _print_traceback(args: argparse.Namespace, trace: str | None) -> None:
    if args.traceback and trace:
        sys.stderr.write(trace + "\n")
        sys.stderr.flush()


def http_function(handle: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A python3-http ``handle(event, context)`` as a local function of the engine."""
    from urllib.parse import urlencode

    from faasflow.interfaces import Response
    from faasflow.runtime.python3http import Event, Headers, QueryArgs, call_handler

    def call(data: bytes, request: Any) -> Response:
        event = Event(
            body=data,
            headers=Headers(request.headers.items()),
            method=request.method,
            query=QueryArgs(urlencode(request.query, doseq=True)),
            path="/",
        )
        status, headers, body = call_handler(handle, event, name)
        return Response(status, body, dict(headers), f"local:{name}")

    return call


def local_functions(stack: Stack | None) -> dict[str, Any]:
    """The python3-http functions of the stack, as the flow's in-process functions."""
    from faasflow.cli.targets import TargetError
    from faasflow.errors import ConfigurationError
    from faasflow.runtime.stack import load_handler
    from faasflow.runtime.worker import package_name

    functions: dict[str, Any] = {}
    for spec in stack.functions.values() if stack is not None else ():
        if spec.is_flow:
            continue
        try:
            module = load_handler(spec.handler, package_name(spec.name))
        except ConfigurationError as exc:
            raise TargetError(str(exc), 2) from exc
        functions[spec.name] = http_function(module.handle, spec.name)
    return functions


def _body(args: argparse.Namespace) -> bytes:
    if args.data is not None:
        return str(args.data).encode()
    if args.data_file:
        return Path(args.data_file).read_bytes()
    if not sys.stdin.isatty():
        return sys.stdin.buffer.read()
    return b""


class Progress:
    """Prints a line per node as it finishes, read from the request's live record."""

    def __init__(self, engine: Engine, request_id: str, out: TextIO) -> None:
        self.engine = engine
        self.request_id = request_id
        self.out = out
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Progress:
        self._thread.start()
        return self

    def show(self, record: RequestRecord | None) -> None:
        if record is None:
            return
        for node, run in sorted(record.nodes.items(), key=lambda item: item[1].end):
            if node in self.seen:
                continue
            self.seen.add(node)
            mark = "ok  " if run.status == "success" else "FAIL"
            detail = f"  {run.error}" if run.error else ""
            self.out.write(f"  {mark} {node:<32} {(run.end - run.start) * 1000:9.1f} ms"
                           f"{detail}\n")
        self.out.flush()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.show(self.engine.record(self.request_id))
            except Exception:  # the display must never break the run
                return

    def stop(self, final: RequestRecord | None) -> None:
        self._stop.set()
        self._thread.join(1)
        self.show(final)


def run(args: argparse.Namespace) -> int:
    import json

    from faasflow.cli import EXIT_FAILED, EXIT_USAGE, interrupted
    from faasflow.cli.targets import TargetError, default_stack_file, resolve
    from faasflow.engine import Engine
    from faasflow.engine.failures import user_traceback
    from faasflow.errors import FaasflowError
    from faasflow.runtime.client import fail
    from faasflow.runtime.stack import Stack
    from faasflow.settings import EnvVars, Settings

    try:
        file = default_stack_file(args.file)
        stack = Stack.load(file) if file is not None else None
        target = resolve(args.flow, stack)
        functions = local_functions(stack)
    except TargetError as exc:
        return fail(str(exc), exc.exit_code)
    except FaasflowError as exc:
        return fail(str(exc), EXIT_USAGE)
    define, name, environment = target.define, target.name, target.environment
    try:
        body = _body(args)
    except OSError as exc:
        return fail(f"cannot read {args.data_file}: {exc.strerror or exc}", EXIT_USAGE)
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    try:
        base = Settings.from_env().environ
        settings = Settings.from_env({**base, **environment, EnvVars.FLOW_NAME: name})
        # embedded: iterations run on this process's worker pool, whatever invoker is set
        engine = Engine.from_settings(define_flow(define, name),
                                      settings.with_backends(invoker="local"),
                                      functions=functions)
    except FaasflowError as exc:
        _print_traceback(args, user_traceback(exc))  # define() raised
        return fail(str(exc), EXIT_USAGE)
    try:
        started = engine.start(body, request_id=args.request_id, query=args.query,
                               timeout=args.timeout)
    except KeyboardInterrupt:
        interrupted()  # the first node (or a sync flow) was still running
    except FaasflowError as exc:
        engine.close()
        _print_traceback(args, user_traceback(exc))
        return fail(str(exc), EXIT_FAILED)
    try:
        record = None
        if started.status == "running":
            progress = Progress(engine, started.request_id, sys.stderr).start() if show \
                else None
            record = engine.wait(started.request_id, args.timeout)
            if record is None:
                engine.stop(started.request_id)
                record = engine.record(started.request_id)
            if progress is not None:
                progress.stop(record)
            status = record.status if record else "stopped"
            output = (record.output if record else None) or b""
            error = (record.error if record else None) or (
                f"request {started.request_id} did not finish within {args.timeout}s and "
                "was stopped" if status == "stopped" else None)
        else:
            status, output, error = started.status, started.output or b"", started.error
            if not started.sync:  # a DAG flow that ended while start() still ran
                record = engine.record(started.request_id)
                if show:
                    Progress(engine, started.request_id, sys.stderr).show(record)
    except KeyboardInterrupt:
        _stop_interrupted(engine, started.request_id)
    except FaasflowError as exc:
        engine.close()
        return fail(str(exc), EXIT_FAILED)
    abandoned = record is None or (status == "stopped" and args.timeout is not None)
    if not abandoned:
        engine.close()
    if args.json:
        doc = record.to_json() if record is not None else {
            "id": started.request_id, "flow": name, "status": status,
            "output": output.decode(errors="replace"), "error": error,
        }
        json.dump(doc, sys.stdout, indent=2)
        print()
    elif status == "success":
        sys.stdout.buffer.write(output)
        if output and not output.endswith(b"\n") and sys.stdout.isatty():
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    if status != "success":
        if record is not None and record.failure:
            _print_traceback(args, record.failure.get("traceback"))
        outcome = {"failure": "failed", "stopped": "was stopped"}.get(status, status)
        code = fail(f"request {started.request_id} {outcome}: {error or 'no error recorded'}",
                    EXIT_FAILED)
        if abandoned and started.status == "running":
            # a node of the stopped request may still be running in this process: leave now
            # rather than wait for it
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    return 0


def _stop_interrupted(engine: Engine, request_id: str) -> NoReturn:
    """Ctrl-C while the request runs: record it as stopped (for a shared store, so it does not
    stay "running" there), but give that a second at most, and leave."""
    import signal

    from faasflow.cli import interrupted

    signal.signal(signal.SIGINT, lambda signum, frame: interrupted())  # a second Ctrl-C
    done = threading.Event()

    def stop() -> None:
        try:
            engine.stop(request_id)
            done.set()
        except Exception:  # ended meanwhile, or the store is down: nothing more to do here
            pass

    threading.Thread(target=stop, daemon=True).start()
    stopped = done.wait(1.0)
    interrupted(f"request {request_id} {'stopped' if stopped else 'abandoned'}")


def define_flow(define: Callable[..., Any], name: str) -> Any:
    from faasflow.flow import Flow

    return Flow(define, name=name)

