"""``python -m faasflow.runtime.demo``: start the local gateway on ``examples/stack.yml``,
invoke each example flow, print what they answer, and stop the gateway.

Exits 0 when every flow answered what it should, 1 otherwise (2 when the stack is missing).
It uses a fresh data directory, so it can run any number of times from a fresh clone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import requests

from faasflow.runtime.process import GatewayProcess

__all__ = ["main"]

EXAMPLES = [
    # (flow, what it shows, input, expected output)
    ("greet", "sync flow", b"ada lovelace", b"Hello Ada Lovelace!"),
    ("report", "parallel branches + aggregator", b"the quick  brown fox",
     b'{"letters": 16, "words": 4}'),
    ("squares", "foreach", b"1,2,3,4,5", b"1 + 4 + 9 + 16 + 25 = 55"),
]


def _default_stack() -> Path:
    here = Path("examples/stack.yml")
    if here.exists():
        return here
    return Path(__file__).resolve().parents[2] / "examples" / "stack.yml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faasflow.runtime.demo",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-f", "--file", type=Path, default=None,
                        help="stack file (default examples/stack.yml)")
    args = parser.parse_args(argv)
    stack = args.file or _default_stack()
    if not stack.exists():
        print(f"demo: {stack} not found; run this from the faasflow repository", file=sys.stderr)
        return 2
    failures = 0
    with tempfile.TemporaryDirectory(prefix="faasflow-demo-") as data:
        print(f"$ faasflow up -f {stack}")
        gateway = GatewayProcess(stack, data_dir=data)
        try:
            gateway.start()
        except RuntimeError as exc:
            print(f"demo: the gateway did not start:\n{exc}", file=sys.stderr)
            return 1
        try:
            dashboard = f"{gateway.url}/ui" if f"{gateway.url}/ui/" in gateway.text else ""
            print(f"  gateway on {gateway.url}" + (f", dashboard on {dashboard}/" if dashboard
                                                   else "") + "\n")
            functions = gateway.get("/system/functions").json()
            print("  functions: " + ", ".join(f"{f['name']} ({f['envProcess']})"
                                              for f in functions) + "\n")
            for flow, what, data_in, expected in EXAMPLES:
                print(f"$ faasflow invoke {flow} --wait 30 -d '{data_in.decode()}'   # {what}")
                started = time.perf_counter()
                reply = gateway.post(f"/function/{flow}", data=data_in,
                                     headers={"X-Faas-Flow-Wait": "30"})
                took = (time.perf_counter() - started) * 1000
                request_id = reply.headers.get("X-Faas-Flow-Reqid", "?")
                print(f"  {reply.text}")
                print(f"  (HTTP {reply.status_code}, request {request_id}, {took:.0f} ms)")
                if reply.status_code != 200 or reply.content != expected:
                    failures += 1
                    print(f"  FAILED: expected {expected.decode()!r}", file=sys.stderr)
                    continue
                record = gateway.get(f"/function/{flow}/flow/{request_id}")
                if record.status_code == 200:
                    nodes = record.json()["nodes"]
                    print(f"  nodes run: {', '.join(sorted(nodes))}")
                    if dashboard:
                        print(f"  dashboard: {dashboard}/flows/{flow}/requests/{request_id}")
                print()
        except (requests.RequestException, ValueError, json.JSONDecodeError) as exc:
            print(f"demo: talking to the gateway failed: {exc}\n{gateway.text}", file=sys.stderr)
            failures += 1
        finally:
            gateway.stop()
    if failures:
        print(f"demo: {failures} example(s) failed", file=sys.stderr)
        return 1
    print("all examples answered as expected")
    print("keep the gateway and its dashboard running with: faasflow up -f examples/stack.yml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
