"""``faasflow up``: serve a stack.yml's flows and python3-http functions on this machine."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from faasflow.errors import FaasflowError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run a stack.yml locally behind an OpenFaaS-compatible gateway",
        description=(
            "Serve every function of a faas-cli stack.yml (lang faasflow and python3-http) "
            "behind a local OpenFaaS-compatible gateway: /function/<name>, "
            "/async-function/<name>, /system/functions, /healthz. Asynchronous calls are kept "
            "in a durable queue in the data directory and resume after a restart. Stop with "
            "Ctrl-C."
        ),
    )
    parser.add_argument("-f", "--file", "--yaml", dest="file", default=None,
                        help="the stack file (default: stack.yml, then stack.yaml)")
    parser.add_argument("--port", type=int, default=8080,
                        help="port to listen on (default 8080; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--data-dir", default=None,
                        help="queue, request state and signing key (default: .faasflow next to "
                             "the stack file, or FAASFLOW_DATA_DIR)")
    parser.add_argument("--processes", type=int, default=2,
                        help="worker processes serving the functions (default 2)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="asynchronous calls delivered at once (default FAASFLOW_WORKERS, 8)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a function call may take (default 300)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.set_defaults(func=run)


def find_stack(file: str | None) -> Path:
    if file:
        return Path(file)
    for name in ("stack.yml", "stack.yaml"):
        if Path(name).exists():
            return Path(name)
    return Path("stack.yml")


def run(args: argparse.Namespace) -> int:
    from faasflow.cli import EXIT_USAGE
    from faasflow.runtime.client import fail
    from faasflow.runtime.gateway import Gateway, GatewayConfig
    from faasflow.runtime.stack import Stack
    from faasflow.settings import EnvVars, Settings

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if args.processes < 1:
        return fail("--processes must be at least 1", EXIT_USAGE)
    if args.concurrency is not None and args.concurrency < 1:
        return fail("--concurrency must be at least 1", EXIT_USAGE)
    if not 0 <= args.port <= 65535:
        return fail(f"--port {args.port} is not a port number", EXIT_USAGE)
    try:
        settings = Settings.from_env()
        stack = Stack.load(find_stack(args.file), settings.environ)
    except FaasflowError as exc:
        return fail(str(exc), EXIT_USAGE)
    if args.data_dir:
        data_dir = Path(args.data_dir)
    elif settings.environ.get(EnvVars.DATA_DIR):
        data_dir = Path(settings.data_dir)
    else:
        data_dir = stack.directory / ".faasflow"
    config = GatewayConfig(
        stack=stack, data_dir=data_dir.resolve(), host=args.host, port=args.port,
        processes=args.processes, concurrency=args.concurrency or settings.workers,
        timeout=args.timeout,
    )
    gateway = Gateway(config, settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        try:
            gateway.start()
        except OSError as exc:
            return fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc} "
                        "(pass another --port)", EXIT_USAGE)
        except FaasflowError as exc:
            return fail(str(exc), EXIT_USAGE)
        names = ", ".join(
            f"{name} ({spec.lang})" for name, spec in stack.functions.items()
        )
        print(f"faasflow gateway listening on {gateway.url}", flush=True)
        print(f"functions: {names}", flush=True)
        print(f"data: {data_dir}", flush=True)
        if gateway.queue.recovered:
            print(f"resuming {gateway.queue.recovered} queued asynchronous calls", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        print("stopping", file=sys.stderr, flush=True)
        return 0
    finally:
        gateway.close()
        signal.signal(signal.SIGTERM, previous)
