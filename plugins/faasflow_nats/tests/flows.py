"""A fan-out flow whose functions sleep and count their calls, served by ``faasflow up``.

``count`` logs each call (:mod:`faasflow.testing.calllog`) just before it answers, so a test
can tell that each node's function ran once per request, and on which host.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from faasflow.testing import calllog

FAN = """
    def define(flow, context):
        dag = flow.dag()
        dag.node("s").apply("count", headers={"X-Tag": "s"})
        for branch in ("a", "b", "c"):
            dag.node(branch).apply("count", headers={"X-Tag": branch})
            dag.edge("s", branch)
        dag.node("j", aggregator=lambda inputs: b"+".join(inputs[k] for k in sorted(inputs))
                 ).apply("count", headers={"X-Tag": "j"})
        for branch in ("a", "b", "c"):
            dag.edge(branch, "j")
"""


def expected_output(body: str) -> str:
    return "+".join(f"{body}.s.{b}" for b in "abc") + ".j"


def write_stack(directory: Path, log: Path, sleep: float = 0.05, host: str = "h",
                flow: str = "fan") -> Path:
    """The stack of ``count`` and the flow (named ``flow``: stores shared across runs keep
    every run's requests apart by flow name)."""
    return calllog.write_stack(directory, flow, FAN, {
        "COUNT_LOG": str(log), "COUNT_SLEEP": str(sleep), "HOST_NAME": host})


def submit(urls: list[str], bodies: list[str], threads: int = 8, flow: str = "fan") -> None:
    """POST each body to ``/async-function/fan`` of the gateways in turn; a refusal or a
    gateway that is down is tried again on the next one, as a load balancer would."""

    def one(item: tuple[int, str]) -> None:
        index, body = item
        deadline = time.monotonic() + 90
        attempt = 0
        while True:
            url = urls[(index + attempt) % len(urls)]
            try:
                reply = requests.post(f"{url}/async-function/{flow}", data=body, timeout=20,
                                      headers={"X-Call-Id": f"start-{body}"})
                if reply.status_code == 202:
                    return
            except requests.RequestException:
                pass
            attempt += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"no gateway accepted {body}")
            time.sleep(0.1)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, enumerate(bodies)))


def read_calls_timed(log: Path) -> list[tuple[str, str, str, float]]:
    """``(body, tag, host, time)`` of every call ``count`` answered."""
    return [(call.body, call.tag, call.host, call.time) for call in calllog.read(log)]


def read_calls(log: Path) -> list[tuple[str, str, str]]:
    """``(body, tag, host)`` of every call ``count`` answered."""
    return [(body, tag, host) for body, tag, host, _ in read_calls_timed(log)]


def wait_all_done(url: str, count: int, timeout: float, flow: str = "fan"
                  ) -> list[dict[str, Any]]:
    """The flow's request records once ``count`` exist and none is running."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            reply = requests.get(f"{url}/function/{flow}/flow?limit=1000", timeout=30)
            if reply.status_code == 200:
                found = reply.json()["requests"]
                if len(found) >= count and all(
                        r["status"] not in ("running", "paused") for r in found):
                    return found
        except requests.RequestException:
            pass
        time.sleep(0.5)
    states = Counter(r["status"] for r in found)
    raise AssertionError(f"after {timeout:g}s: {len(found)} of {count} requests, {states}")


def outputs(url: str, records: list[dict[str, Any]], flow: str = "fan") -> Counter[str]:
    """How many requests ended with each output."""

    def one(record: dict[str, Any]) -> str:
        doc = requests.get(f"{url}/function/{flow}/flow/{record['id']}", timeout=30).json()
        return str(doc.get("output"))

    with ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(one, records))


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAASFLOW_", "NATS_"))}
    env.update(extra)
    return env
