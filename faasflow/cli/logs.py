"""``faasflow logs``: a function's (or flow's) log lines from the gateway's ``/system/logs``.

``faasflow up`` tags every line its functions and flows write with the function's name and the
request id (see ``faasflow.runtime.logbook``); ``--request`` keeps the lines of one request.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from urllib.parse import urlencode

from faasflow.cli.gateways import add_arguments as add_gateway_arguments

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "logs",
        help="print (or follow) a function's log lines, optionally of one request",
        description=(
            "Read GET /system/logs?name=FUNCTION from a gateway (found as for `faasflow "
            "invoke`): the lines the function or flow wrote, each with its time and request "
            "id. --request keeps one request's lines, --follow waits for new ones (Ctrl-C "
            "ends it). Exit codes: 0 done, 2 bad input, 3 no such function, 4 gateway "
            "unreachable."
        ),
    )
    parser.add_argument("function", help="the function's (or flow's) name")
    parser.add_argument("--request", metavar="ID", help="only the lines of this request")
    parser.add_argument("--follow", action="store_true", help="wait for new lines")
    parser.add_argument("--tail", type=int, default=None, help="only the last N lines")
    parser.add_argument("--since", help="lines at or after this RFC 3339 time, or an age "
                        "such as 90s, 15m, 2h, 1d")
    parser.add_argument("--json", action="store_true",
                        help="print the NDJSON lines as the gateway sends them")
    add_gateway_arguments(parser)
    parser.set_defaults(func=run)


_AGE = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(raw: str) -> str:
    value = raw.strip()
    if value[:-1].replace(".", "", 1).isdigit() and value[-1:] in _AGE:
        at = time.time() - float(value[:-1]) * _AGE[value[-1]]
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return value


def _show(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc), flush=True)
        return
    request = f" [{doc['request_id']}]" if doc.get("request_id") else ""
    print(f"{doc.get('timestamp', '')} {doc.get('name', '')}{request} "
          f"{str(doc.get('text', '')).rstrip()}", flush=True)


def run(args: argparse.Namespace) -> int:
    import requests

    from faasflow.cli import EXIT_UNAVAILABLE, EXIT_USAGE
    from faasflow.cli.gateways import StackFileError, find_gateway
    from faasflow.runtime.client import exit_code, fail

    if args.tail is not None and args.tail < 0:
        return fail("--tail takes a number of lines, 0 or more", EXIT_USAGE)
    try:
        gateway = find_gateway(args.gateway, args.file)
    except StackFileError as exc:
        return fail(str(exc), EXIT_USAGE)
    params: list[tuple[str, str]] = [("name", args.function)]
    if args.tail is not None:
        params.append(("tail", str(args.tail)))
    if args.since:
        params.append(("since", _since(args.since)))
    if args.follow:
        params.append(("follow", "true"))
    url = f"{gateway.url.rstrip('/')}/system/logs?{urlencode(params)}"
    try:
        reply = requests.get(url, stream=True, timeout=(10, None if args.follow else 60))
    except requests.RequestException:
        return fail(f"cannot reach the gateway at {gateway.url}: is `faasflow up` running? "
                    f"[gateway from {gateway.source}]", EXIT_UNAVAILABLE)
    with reply:
        if reply.status_code >= 400:
            detail = reply.text.strip().removeprefix("[ Failed ] ")
            return fail(detail or f"HTTP {reply.status_code}", exit_code(reply.status_code))
        for raw in reply.iter_lines():
            if not raw:
                continue
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if args.request and doc.get("request_id") != args.request:
                continue
            _show(doc, args.json)
    sys.stdout.flush()
    return 0
