"""``faasflow up``: serve a stack.yml's flows and python3-http functions on this machine."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from faasflow.errors import FaasflowError

__all__ = ["register"]


def _say(line: str) -> None:
    """One line on stdout in one write. Worker output reaches the same pipe from other threads,
    and ``print`` writes the text and the newline apart, which lets one of their lines in
    between (a script reading "listening on <url>" then read a worker's name into the URL)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run a stack.yml locally behind an OpenFaaS-compatible gateway",
        description=(
            "Serve every function of a faas-cli stack.yml (lang faasflow and python3-http) "
            "behind a local OpenFaaS-compatible gateway that faas-cli can use: "
            "/function/<name>[.<namespace>], /async-function/<name>, /system/..., /healthz. "
            "Functions of other languages are skipped (or sent to --upstream-gateway). "
            "Asynchronous calls are kept in a durable queue in the data directory and resume "
            "after a restart. Stop with Ctrl-C."
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
    parser.add_argument("--watch", action="store_true",
                        help="reload when the stack file or a handler changes (new worker "
                             "processes take over once they are ready)")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds running calls get to finish when stopping (Ctrl-C, "
                             "SIGTERM); queued calls stay queued for the next start; a second "
                             "Ctrl-C stops at once (default 5)")
    parser.add_argument("--max-attempts", type=int, default=10,
                        help="deliveries of one asynchronous call (429/502/503/504 and "
                             "unreachable workers are tried again) before it is a dead letter "
                             "(default 10)")
    parser.add_argument("--queue", default="", metavar="KIND|URL",
                        help="queue of asynchronous calls: sqlite (default, one host), or a "
                             "plugin's kind, e.g. nats://h1:4222,h2:4222 shared by gateways on "
                             "many hosts (default FAASFLOW_QUEUE)")
    parser.add_argument("--secrets-dir", default=None,
                        help="the functions' OpenFaaS secrets, one file each (default "
                             "FAASFLOW_SECRET_MOUNT_PATH if set, else <data-dir>/secrets)")
    parser.add_argument("--basic-auth", action="store_true", default=None,
                        help="require basic auth on /system/* as OpenFaaS does (also "
                             "basic_auth=true); the secrets basic-auth-user and "
                             "basic-auth-password are created on first start")
    parser.add_argument("--upstream-gateway", default="", metavar="URL",
                        help="an OpenFaaS gateway that serves the stack's functions of other "
                             "languages; their calls are proxied there")
    parser.add_argument("--filter", default=None,
                        help="serve only the functions whose names match this glob (as faas-cli)")
    parser.add_argument("--regex", default=None,
                        help="serve only the functions whose names match this regular "
                             "expression (as faas-cli)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="log warnings only (the gateway and its workers)")
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
    from faasflow.runtime.datadir import UMASK
    from faasflow.runtime.gateway import Gateway, GatewayConfig
    from faasflow.runtime.preflight import describe
    from faasflow.runtime.stack import Stack
    from faasflow.settings import EnvVars, Settings

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if args.processes < 1:
        return fail("--processes must be at least 1", EXIT_USAGE)
    if args.concurrency is not None and args.concurrency < 1:
        return fail("--concurrency must be at least 1", EXIT_USAGE)
    if args.grace < 0:
        return fail("--grace must not be negative", EXIT_USAGE)
    if args.max_attempts < 1:
        return fail("--max-attempts must be at least 1", EXIT_USAGE)
    if not 0 <= args.port <= 65535:
        return fail(f"--port {args.port} is not a port number", EXIT_USAGE)
    os.umask(UMASK)  # queue, stores and secrets hold bodies and keys: the owner's only
    try:
        settings = Settings.from_env()
        stack = Stack.load(find_stack(args.file), settings.environ, filter=args.filter,
                           regex=args.regex)
    except FaasflowError as exc:
        return fail(str(exc), EXIT_USAGE)
    log = logging.getLogger("faasflow.gateway")
    for name, lang in stack.skipped.items():
        if args.upstream_gateway:
            log.warning("function %s (lang %s) is served by %s", name, lang,
                        args.upstream_gateway)
        else:
            log.warning("skipping function %s: lang %s cannot run in faasflow up (pass "
                        "--upstream-gateway URL to proxy it to an OpenFaaS gateway)", name, lang)
    if args.data_dir:
        data_dir = Path(args.data_dir)
    elif settings.environ.get(EnvVars.DATA_DIR):
        data_dir = Path(settings.data_dir)
    else:
        data_dir = stack.directory / ".faasflow"
    if args.secrets_dir:
        secrets_dir = Path(args.secrets_dir)
    elif settings.environ.get(EnvVars.SECRET_MOUNT_PATH):
        secrets_dir = Path(settings.secret_mount_path)
    else:
        secrets_dir = data_dir / "secrets"
    config = GatewayConfig(
        stack=stack, data_dir=data_dir.resolve(), host=args.host, port=args.port,
        processes=args.processes, concurrency=args.concurrency or settings.workers,
        timeout=args.timeout, max_attempts=args.max_attempts,
        secrets_dir=secrets_dir.resolve(),
        basic_auth=settings.basic_auth if args.basic_auth is None else args.basic_auth,
        keepalive=settings.keepalive_timeout, server_threads=settings.server_threads,
        quiet=args.quiet, upstream_gateway=args.upstream_gateway, filter=args.filter,
        regex=args.regex, watch=args.watch, queue=args.queue,
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
        # the "listening on" line comes last: who waits for it (tests, scripts) has the rest
        _say(f"functions: {names}")
        for report in gateway.flow_reports:
            _say(describe(report))
        _say(f"data: {data_dir}")
        if gateway.queue_kind is not None and gateway.queue_kind.name != "sqlite":
            _say(f"queue: {gateway.queue_kind.name} ({gateway.queue_kind.summary})")
        _say(f"secrets: {config.secrets}")
        if gateway.credentials is not None:
            if gateway.credentials_created:
                _say(f"basic auth: user {gateway.credentials.user}, password "
                     f"{gateway.credentials.password} (stored in {config.secrets}; shown "
                     "once)")
            else:
                _say(f"basic auth: on (credentials in {config.secrets})")
        if urlsplit(gateway.url).port != 8080:
            _say(f"export OPENFAAS_URL={gateway.url}")
        if gateway.queue.recovered:
            _say(f"resuming {gateway.queue.recovered} queued asynchronous calls")
        for mount, name in gateway.web_apps.names.items():
            _say(f"{name}: {gateway.url}{mount}/")
        _say(f"faasflow gateway listening on {gateway.url}")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        print(f"stopping: running calls get {args.grace:g}s to finish, queued ones stay queued "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        return 0
    finally:
        # a second Ctrl-C (or SIGTERM) during the grace ends it at once
        signal.signal(signal.SIGINT, lambda signum, frame: gateway.abort())
        signal.signal(signal.SIGTERM, lambda signum, frame: gateway.abort())
        gateway.close(grace=args.grace)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
