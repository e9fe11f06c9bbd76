"""``faasflow requests``: list, inspect and control the requests of a flow through a gateway."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from urllib.parse import urlencode

from faasflow.cli.gateways import add_arguments as add_gateway_arguments

__all__ = ["register"]

_ACTIONS = ("list", "show", "pause", "resume", "stop", "state", "redrive", "rerun")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "requests",
        help="list, show, pause, resume, stop, redrive or re-run the requests of a flow",
        description=(
            "Talk to a flow through a gateway (faasflow up, or OpenFaaS): list its requests, "
            "show one (status, output, error, node states and timings), pause / resume / stop "
            "it, redrive a failed one from its failed node(s), or re-run one with the same "
            "input (both need FAASFLOW_REDRIVE=true, the default under faasflow up). "
            "The gateway is found as for `faasflow invoke`. Exit codes: 0 done, 1 the action "
            "failed, 2 bad input (e.g. resume of a request that is not paused), 3 no such "
            "request or flow, 4 gateway unreachable."
        ),
    )
    parser.add_argument("action", choices=_ACTIONS, help="what to do")
    parser.add_argument("flow", help="the flow's function name")
    parser.add_argument("request_id", nargs="?", help="request id (all actions but list)")
    parser.add_argument("--json", action="store_true", help="print the JSON the flow answers")
    listing = parser.add_argument_group("list filters (docs/history.md)")
    listing.add_argument("--status", action="append", default=[],
                         choices=("running", "success", "failure", "stopped"),
                         help="only this status (repeat for several)")
    listing.add_argument("--limit", type=int, default=None,
                         help="requests per page (default 50, at most 1000)")
    listing.add_argument("--since", help="started at or after (epoch seconds, ISO 8601, or "
                         "an age such as 15m, 2h, 1d)")
    listing.add_argument("--until", help="started at or before (as --since)")
    listing.add_argument("--node", help="failed at this node")
    listing.add_argument("--definition", help="started with this definition hash")
    listing.add_argument("-q", "--query", help="id prefix or text of the error")
    listing.add_argument("--cursor", help="the page after the one that printed this cursor")
    add_gateway_arguments(parser)
    parser.set_defaults(func=run)


def _when(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def _duration(doc: dict[str, Any]) -> str:
    created, ended = doc.get("created"), doc.get("ended")
    if isinstance(created, (int, float)) and isinstance(ended, (int, float)):
        return f"{(ended - created) * 1000:.1f} ms"
    return "-"


def _print_list(doc: dict[str, Any]) -> None:
    rows = doc.get("requests") or []
    if not rows:
        print(f"no requests of {doc.get('flow', '?')} match" if doc.get("filtered")
              else f"no requests of {doc.get('flow', '?')} are kept")
    else:
        print(f"{'REQUEST':<24} {'STATUS':<9} {'CREATED':<19}  {'DURATION':>10}  ERROR")
        for row in rows:
            problem = row.get("error") or ""
            if row.get("failed_node"):
                problem = f"at {row['failed_node']}: {problem}"
            print(f"{row.get('id', ''):<24} {row.get('status', ''):<9} "
                  f"{_when(row.get('created')):<19}  {_duration(row):>10}  {problem}".rstrip())
    if doc.get("next"):
        print(f"more: --cursor {doc['next']}")


_AGE = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _list_query(args: argparse.Namespace) -> str:
    """The query string of ``GET /flow``; an age (``15m``) becomes epoch seconds here."""
    params: list[tuple[str, str]] = [("status", status) for status in args.status]
    for name in ("since", "until"):
        value = getattr(args, name)
        if value:
            raw = value.strip()
            if raw[:-1].replace(".", "", 1).isdigit() and raw[-1:] in _AGE:
                value = f"{time.time() - float(raw[:-1]) * _AGE[raw[-1]]:.6f}"
            params.append((name, value))
    for name, value in (("limit", args.limit), ("node", args.node), ("q", args.query),
                        ("definition", args.definition), ("cursor", args.cursor)):
        if value is not None:
            params.append((name, str(value)))
    return urlencode(params)


def _print_record(doc: dict[str, Any]) -> None:
    print(f"request  {doc.get('id')}")
    print(f"flow     {doc.get('flow')}")
    print(f"status   {doc.get('status')}")
    print(f"created  {_when(doc.get('created'))}")
    if doc.get("ended") is not None:
        print(f"ended    {_when(doc.get('ended'))} ({_duration(doc)})")
    if doc.get("error"):
        print(f"error    {doc['error']}")
    failure = doc.get("failure") or {}
    if failure.get("status") is not None:
        print(f"answer   HTTP {failure['status']}: {str(failure.get('body', ''))[:300]}")
    if failure.get("traceback"):
        print("traceback")
        for line in str(failure["traceback"]).splitlines():
            print(f"  {line}")
    if doc.get("output") is not None:
        output = str(doc["output"])
        shown = output if len(output) <= 500 else output[:500] + "..."
        encoding = doc.get("output_encoding")
        print(f"output   {shown}" + (f" ({encoding})" if encoding == "base64" else ""))
    nodes = doc.get("nodes") or {}
    if nodes:
        print("nodes")
        ordered = sorted(nodes.items(), key=lambda item: item[1].get("start", 0))
        for node, run in ordered:
            extra = f"  {run['error']}" if run.get("error") else ""
            attempts = run.get("attempts", 1)
            tries = f"  ({attempts} attempts)" if attempts and attempts > 1 else ""
            print(f"  {node:<32} {run.get('status', ''):<8} "
                  f"{run.get('duration_ms', 0):>10.1f} ms{tries}{extra}")
    states = {k: v for k, v in (doc.get("states") or {}).items()
              if v.get("state") != "succeeded" or v.get("counts")}
    if states:
        print("states")
        for node, state in states.items():
            counts = state.get("counts")
            shown = ", ".join(f"{n} {s}" for s, n in counts.items()) if counts else ""
            print(f"  {node:<32} {state.get('state', '')}" + (f"  ({shown})" if shown else ""))


def run(args: argparse.Namespace) -> int:
    from faasflow.cli import EXIT_UNAVAILABLE, EXIT_USAGE
    from faasflow.cli.gateways import StackFileError, find_gateway
    from faasflow.runtime.client import GatewayClient, GatewayUnreachable, exit_code, fail

    if args.action != "list" and not args.request_id:
        return fail(f"requests {args.action} needs a request id: faasflow requests "
                    f"{args.action} {args.flow} <request-id>", EXIT_USAGE)
    try:
        gateway = find_gateway(args.gateway, args.file)
    except StackFileError as exc:
        return fail(str(exc), EXIT_USAGE)
    base = f"/function/{args.flow}"
    client = GatewayClient(gateway.url)
    try:
        if args.action == "list":
            reply = client.request("GET", f"{base}/flow", headers={"Accept": "application/json"},
                                   params=_list_query(args) or None)
        elif args.action == "show":
            reply = client.request("GET", f"{base}/flow/{args.request_id}",
                                   headers={"Accept": "application/json"})
        elif args.action == "state":
            reply = client.request("GET", f"{base}/flow/{args.request_id}/state")
        else:
            reply = client.request("POST", f"{base}/flow/{args.request_id}/{args.action}")
    except GatewayUnreachable as exc:
        return fail(f"{exc} [gateway from {gateway.source}]", EXIT_UNAVAILABLE)
    finally:
        client.close()
    if reply.status_code >= 400:
        detail = reply.text.strip()
        try:
            detail = str(json.loads(detail).get("error", detail))
        except (ValueError, AttributeError):
            detail = detail.removeprefix("[ Failed ] ")
        return fail(detail or f"HTTP {reply.status_code}", exit_code(reply.status_code))
    if args.action in ("list", "show"):
        try:
            doc = reply.json()
        except ValueError:
            return fail(f"{args.flow} answered something other than JSON; is it a faasflow "
                        "flow?", EXIT_USAGE)
        if args.json:
            json.dump(doc, sys.stdout, indent=2)
            print()
        elif args.action == "list":
            filtered = any((args.status, args.since, args.until, args.node, args.query,
                            args.definition))
            _print_list({**doc, "filtered": filtered})
        else:
            _print_record(doc)
        return 0
    if args.action in ("redrive", "rerun"):
        try:
            doc = reply.json()
        except ValueError:
            doc = {}
        if args.json:
            json.dump(doc, sys.stdout, indent=2)
            print()
        elif args.action == "redrive":
            print(f"request {args.request_id} redriven ({doc.get('redriven', '?')} iterations "
                  f"sent again); faasflow requests show {args.flow} {args.request_id}")
        else:
            print(doc.get("request_id", ""))
        return 0
    print(reply.text.strip())
    return 0
