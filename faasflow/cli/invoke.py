"""``faasflow invoke``: call a flow (or any function) through a gateway."""

from __future__ import annotations

import argparse
import math
import sys

from faasflow.cli.gateways import add_arguments as add_gateway_arguments

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "invoke",
        help="call a flow or function through a gateway and print its answer",
        description=(
            "POST the data to /function/<name> of a gateway (faasflow up, or OpenFaaS) and "
            "print the answer on stdout. The gateway is --gateway, else OPENFAAS_URL, "
            "FAASFLOW_GATEWAY_URL, provider.gateway of the stack file, http://127.0.0.1:8080. "
            "Exit codes: 0 success, 1 the flow failed (or is still running after --wait), 2 bad "
            "input, 3 no such function, 4 gateway unreachable (or it answered 502/503/504)."
        ),
    )
    parser.add_argument("function", help="flow or function name")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-d", "--data", help="request body (default: stdin when it is not a "
                        "terminal, else empty)")
    source.add_argument("--data-file", help="read the request body from this file")
    parser.add_argument("--async", dest="is_async", action="store_true",
                        help="queue the call (/async-function) and print its request id (also "
                             "its X-Call-Id)")
    parser.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="wait up to SECONDS for a multi-node flow's output "
                             "(X-Faas-Flow-Wait)")
    parser.add_argument("--callback-url", metavar="URL",
                        help="URL that receives the flow's result when the request ends "
                             "(X-Faas-Flow-Callback-Url; OpenFaaS's own X-Callback-Url, which "
                             "gets an --async call's first answer, is -H X-Callback-Url=URL)")
    parser.add_argument("--request-id", help="use this request id (X-Faas-Flow-Reqid)")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="NAME=VALUE",
                        help="extra request header (repeatable)")
    parser.add_argument("--query", default="", help="query string, e.g. 'a=1&b=2'")
    parser.add_argument("-m", "--method", default="POST", help="HTTP method (default POST)")
    add_gateway_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print the status, the gateway and faasflow headers on stderr")
    parser.set_defaults(func=run)


def _body(args: argparse.Namespace) -> bytes:
    if args.data is not None:
        return str(args.data).encode()
    if args.data_file:
        with open(args.data_file, "rb") as source:
            return source.read()
    if not sys.stdin.isatty():
        return sys.stdin.buffer.read()
    return b""


def _headers(args: argparse.Namespace) -> dict[str, str] | str:
    headers: dict[str, str] = {}
    for raw in args.header:
        name, sep, value = raw.partition("=")
        if not sep:
            name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            return f"--header {raw!r}: use NAME=VALUE"
        headers[name.strip()] = value.strip()
    if args.request_id:
        if args.is_async:  # a queued call would fail later, where nobody sees it
            from faasflow.engine.ids import check_request_id
            from faasflow.errors import ConfigurationError

            try:
                check_request_id(args.request_id)
            except ConfigurationError as exc:
                return f"--request-id: {exc}"
        headers["X-Faas-Flow-Reqid"] = args.request_id
    elif args.is_async and not _has(headers, "X-Faas-Flow-Reqid"):
        from faasflow.engine.ids import new_request_id

        # the id is chosen here so that it can be printed: the queue answers before the flow
        # starts, and the flow keeps an id its caller sends
        headers["X-Faas-Flow-Reqid"] = new_request_id()
    if args.is_async and not _has(headers, "X-Call-Id"):
        headers["X-Call-Id"] = headers["X-Faas-Flow-Reqid"]  # one id for both, as printed
    if args.callback_url:
        headers["X-Faas-Flow-Callback-Url"] = args.callback_url
    if args.wait is not None:
        headers["X-Faas-Flow-Wait"] = f"{args.wait:g}"
    return headers


def _has(headers: dict[str, str], name: str) -> bool:
    return any(key.lower() == name.lower() for key in headers)


def _get(headers: dict[str, str], name: str) -> str:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), "")


def run(args: argparse.Namespace) -> int:
    from faasflow.cli import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE
    from faasflow.cli.gateways import StackFileError, find_gateway
    from faasflow.runtime.client import GatewayClient, GatewayUnreachable, exit_code, fail

    if args.wait is not None and (not math.isfinite(args.wait) or args.wait < 0):
        return fail("--wait takes a number of seconds", EXIT_USAGE)
    if args.wait is not None and args.is_async:
        return fail("--wait and --async exclude each other", EXIT_USAGE)
    headers = _headers(args)
    if isinstance(headers, str):
        return fail(headers, EXIT_USAGE)
    try:
        body = _body(args)
    except OSError as exc:
        return fail(f"cannot read {args.data_file}: {exc.strerror or exc}", EXIT_USAGE)
    try:
        gateway = find_gateway(args.gateway, args.file)
    except StackFileError as exc:
        return fail(str(exc), EXIT_USAGE)
    client = GatewayClient(gateway.url)
    kind = "async-function" if args.is_async else "function"
    timeout = None if args.wait is None else args.wait + 30
    try:
        reply = client.request(args.method.upper(), f"/{kind}/{args.function}", data=body,
                               headers=headers, params=args.query.lstrip("?") or None,
                               timeout=timeout)
    except GatewayUnreachable as exc:
        return fail(f"{exc} [gateway from {gateway.source}]", EXIT_UNAVAILABLE)
    finally:
        client.close()
    request_id = reply.headers.get("X-Faas-Flow-Reqid", "")
    if args.verbose:
        print(f"gateway {client.url} (from {gateway.source})", file=sys.stderr)
        print(f"HTTP {reply.status_code}", file=sys.stderr)
        for name in ("X-Faas-Flow-Reqid", "X-Call-Id"):
            if name in reply.headers:
                print(f"{name}: {reply.headers[name]}", file=sys.stderr)
    if args.is_async:
        if reply.status_code == 202:
            print(_get(headers, "X-Faas-Flow-Reqid") or reply.headers.get("X-Call-Id", ""))
            return 0
        return fail(f"the gateway answered {reply.status_code}: {_detail(reply.text)}",
                    exit_code(reply.status_code) or EXIT_FAILED)
    if reply.status_code == 202:
        return fail(f"request {request_id} of {args.function} is still running after "
                    f"{args.wait:g}s; see `faasflow requests show {args.function} {request_id}`",
                    EXIT_FAILED)
    if reply.status_code >= 400:
        detail = _detail(reply.text)
        if request_id and reply.status_code >= 500:
            # the flow itself answered: its request failed (the error names the node), whatever
            # status carried it; the gateway's own 502/503/504 come without a request id
            return fail(f"request {request_id} of {args.function} failed: {detail}",
                        EXIT_FAILED)
        return fail(f"{args.function} answered {reply.status_code}: {detail}",
                    exit_code(reply.status_code))
    if not reply.content and request_id and not args.verbose:
        print(f"request {request_id} started; `faasflow requests show {args.function} "
              f"{request_id}` follows it (or use --wait SECONDS)", file=sys.stderr)
    sys.stdout.buffer.write(reply.content)
    if reply.content and not reply.content.endswith(b"\n") and sys.stdout.isatty():
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    return 0


def _detail(text: str) -> str:
    """The message of an error answer, without faas-flow's ``[ Failed ]`` prefix."""
    return text.strip().removeprefix("[ Failed ] ").strip() or "(no message)"
