"""``faasflow sweep``: one maintenance pass of a flow, through a gateway (for cron).

A serving flow sweeps by itself every ``FAASFLOW_SWEEP_INTERVAL`` seconds while it receives
requests; an idle flow does not, so a cron connector (or this command from cron) posts
``/flow/sweep`` to apply record retention and request deadlines and to finish requests a
crashed replica left half-ended.
"""

from __future__ import annotations

import argparse
import json

from faasflow.cli.gateways import add_arguments as add_gateway_arguments

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run one maintenance pass of a flow (retention, deadlines, repairs)",
        description=(
            "POST /flow/sweep to a flow through a gateway (found as for `faasflow invoke`): "
            "forget records past FAASFLOW_RECORD_RETENTION, fail requests past their "
            "deadline, finish requests whose ending replica crashed and forward iterations "
            "a crashed resume held. Prints how many requests it acted on. Exit codes: 0 "
            "done, 3 no such flow, 4 gateway unreachable."
        ),
    )
    parser.add_argument("flow", help="the flow's function name")
    add_gateway_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from faasflow.cli import EXIT_USAGE
    from faasflow.cli.gateways import StackFileError, find_gateway
    from faasflow.runtime.client import GatewayClient, GatewayUnreachable, exit_code, fail

    try:
        gateway = find_gateway(args.gateway, args.file)
    except StackFileError as exc:
        return fail(str(exc), EXIT_USAGE)
    client = GatewayClient(gateway.url)
    try:
        reply = client.request("POST", f"/function/{args.flow}/flow/sweep")
    except GatewayUnreachable as exc:
        from faasflow.cli import EXIT_UNAVAILABLE

        return fail(f"{exc} [gateway from {gateway.source}]", EXIT_UNAVAILABLE)
    finally:
        client.close()
    if reply.status_code >= 400:
        detail = reply.text.strip().removeprefix("[ Failed ] ")
        return fail(detail or f"HTTP {reply.status_code}", exit_code(reply.status_code))
    try:
        swept = int(json.loads(reply.text)["swept"])
    except (ValueError, KeyError, TypeError):
        return fail(f"{args.flow} answered {reply.text[:80]!r}, not a sweep result; is it a "
                    "faasflow flow?", EXIT_USAGE)
    print(f"swept {args.flow}: acted on {swept} request{'s' if swept != 1 else ''}")
    return 0
