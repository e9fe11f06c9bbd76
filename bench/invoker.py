"""Per-call cost of the openfaas invoker against the http.client floor, side by side.

    python bench/invoker.py [--calls 2000] [--rounds 5] [--size 64]

Starts a loopback HTTP/1.1 server in a child process (TCP_NODELAY, every response written in
one send, so no Nagle/delayed-ACK stalls), then times keep-alive POSTs of the same body with:
plain ``http.client`` (the floor), faasflow's ``openfaas`` invoker (``faasflow.http``), a bare
``urllib3.PoolManager`` and a ``requests.Session``. The clients take turns in every round so
that machine noise hits them alike. Prints the median per call and the ratio to the floor;
exits 1 when the invoker is above ``--limit`` (default 1.5) times the floor.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests
import urllib3

from faasflow.default_plugins.invokers import OpenFaasInvoker


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.wfile.write(head + body)  # one send

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(ports: multiprocessing.Queue[int]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    server.daemon_threads = True
    ports.put(server.server_address[1])
    server.serve_forever()


def time_calls(call: Callable[[], bytes], calls: int, expected: bytes) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        body = call()
        samples.append(time.perf_counter() - start)
        if body != expected:
            raise SystemExit(f"wrong answer: {body[:40]!r}")
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="request body bytes")
    parser.add_argument("--limit", type=float, default=1.5, help="allowed invoker/floor ratio")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue[int] = ctx.Queue()
    server = ctx.Process(target=serve, args=(ports,), daemon=True)
    server.start()
    port = ports.get(timeout=30)
    base = f"http://127.0.0.1:{port}"
    body = b"x" * args.size

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def floor() -> bytes:
        conn.request("POST", "/function/echo", body, {"Content-Type": "text/plain"})
        return conn.getresponse().read()

    invoker = OpenFaasInvoker.from_options({"gateway_url": base, "timeout": "30"})

    def faasflow() -> bytes:
        return invoker.call("echo", body, headers={"Content-Type": "text/plain"}).body

    manager = urllib3.PoolManager(retries=False)

    def with_urllib3() -> bytes:
        return manager.request(
            "POST", f"{base}/function/echo", body=body, headers={"Content-Type": "text/plain"}
        ).data

    session = requests.Session()

    def with_requests() -> bytes:
        return session.post(f"{base}/function/echo", data=body, timeout=30).content

    clients = {
        "http.client (floor)": floor,
        "faasflow openfaas": faasflow,
        "urllib3.PoolManager": with_urllib3,
        "requests.Session": with_requests,
    }
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for call in clients.values():  # warm up connections and code paths
        time_calls(call, 200, body)
    for _ in range(args.rounds):
        for name, call in clients.items():
            samples[name] += time_calls(call, args.calls, body)

    invoker.close()
    session.close()
    manager.clear()
    conn.close()
    server.terminate()
    server.join(5)

    medians = {name: statistics.median(values) for name, values in samples.items()}
    floor_ms = medians["http.client (floor)"] * 1000
    print(f"loopback POST, {args.size}-byte body, keep-alive, "
          f"{args.rounds} x {args.calls} calls per client")
    print(f"{'client':<22} {'median ms':>10} {'p90 ms':>8} {'x floor':>8}")
    for name, values in samples.items():
        p90 = statistics.quantiles(values, n=10)[-1] * 1000
        median_ms = medians[name] * 1000
        print(f"{name:<22} {median_ms:>10.3f} {p90:>8.3f} {median_ms / floor_ms:>8.2f}")
    ratio = medians["faasflow openfaas"] / medians["http.client (floor)"]
    verdict = "within" if ratio <= args.limit else "ABOVE"
    print(f"faasflow invoker is {ratio:.2f}x the floor: {verdict} the {args.limit}x budget")
    return 0 if ratio <= args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
