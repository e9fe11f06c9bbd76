"""``faasflow worker``: deliver a shared queue's calls to this host's functions, no gateway.

A host that should only add delivery capacity runs the stack's functions and the dispatcher
against the queue the gateways share (``--queue nats://...``). It serves no gateway API to the
outside: the only listener is on 127.0.0.1 at a port picked at start, for the calls and forwards
of its own flows (their Invoker is ``openfaas``, pointed at it), and those forwards go onto the
shared queue like any gateway's.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="deliver calls from a queue shared by gateways (no gateway HTTP)",
        description=(
            "Run the functions of a stack.yml and deliver the asynchronous calls and flow "
            "iterations of a queue shared by gateways on several hosts (--queue "
            "nats://h1:4222,h2:4222, or FAASFLOW_QUEUE), without serving the gateway API: "
            "only 127.0.0.1 at a picked port, for this host's own flows. Stop with Ctrl-C."
        ),
    )
    parser.add_argument("-f", "--file", "--yaml", dest="file", default=None,
                        help="the stack file (default: stack.yml, then stack.yaml)")
    parser.add_argument("--queue", default="", metavar="KIND|URL",
                        help="the shared queue (default FAASFLOW_QUEUE), e.g. nats://h1:4222")
    parser.add_argument("--data-dir", default=None,
                        help="this worker's own directory (default: .faasflow next to the "
                             "stack file, or FAASFLOW_DATA_DIR)")
    parser.add_argument("--processes", type=int, default=2,
                        help="worker processes serving the functions (default 2)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="calls delivered at once (default FAASFLOW_WORKERS, 8)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a function call may take (default 300)")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds running calls get to finish when stopping (default 5)")
    parser.add_argument("--max-attempts", type=int, default=10,
                        help="deliveries of one call before it is a dead letter (default 10)")
    parser.add_argument("--secrets-dir", default=None,
                        help="the functions' OpenFaaS secrets (default <data-dir>/secrets)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from faasflow.cli import EXIT_USAGE, up
    from faasflow.runtime.client import fail
    from faasflow.runtime.queues import QUEUE_ENV, parse_queue
    from faasflow.settings import Settings

    spec = args.queue or Settings.from_env().environ.get(QUEUE_ENV, "")
    if parse_queue(spec)[0] == "sqlite":
        return fail("faasflow worker delivers from a queue shared by gateways: pass --queue "
                    f"nats://host:4222 (or set {QUEUE_ENV}); with the embedded sqlite queue "
                    "the gateway delivers its calls itself", EXIT_USAGE)
    print("faasflow worker: no gateway API; 127.0.0.1 only, for this host's own flows",
          flush=True)
    values = dict(vars(args))
    values.update(queue=spec, host="127.0.0.1", port=0, watch=False, basic_auth=False,
                  upstream_gateway="", filter=None, regex=None)
    return up.run(argparse.Namespace(**values))
