"""The test client of the multi-host tests, run inside a host's network namespace.

``ready URL``: prints ``ok`` once the gateway answers. ``run FLOW COUNT PREFIX URLS TIMEOUT``:
submits COUNT requests of FLOW round-robin over the gateways (a refused or failed submission
goes to the next gateway, with the same X-Call-Id), waits until none is running, and prints
every request's record as JSON. ``queue URLS``: the first answering gateway's /system/queue.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests


def ready(url: str) -> None:
    try:
        reply = requests.get(f"{url}/system/queue", timeout=3)
        print("ok" if reply.status_code == 200 else reply.status_code)
    except requests.RequestException as exc:
        print(type(exc).__name__)


def get(urls: list[str], path: str) -> Any:
    last = ""
    for _ in range(20):
        for url in urls:
            try:
                reply = requests.get(f"{url}{path}", timeout=10)
                if reply.status_code == 200:
                    return reply.json()
                last = f"{reply.status_code} {reply.text[:200]}"
            except requests.RequestException as exc:
                last = str(exc)
        time.sleep(0.5)
    raise SystemExit(f"GET {path}: {last}")


def run(flow: str, count: int, prefix: str, urls: list[str], timeout: float,
        repost: bool = False) -> None:
    submitted: dict[str, float] = {}

    sent_again: set[str] = set()

    def one(index: int) -> None:
        body = f"{prefix}{index:05d}"
        deadline = time.monotonic() + 120
        attempt = 0
        while True:
            url = urls[(index + attempt) % len(urls)]
            if attempt:
                sent_again.add(body)
            try:
                reply = requests.post(f"{url}/async-function/{flow}", data=body, timeout=15,
                                      headers={"X-Call-Id": f"start-{prefix}{index}"})
                if reply.status_code == 202:
                    submitted[body] = time.time()
                    return
            except requests.RequestException:
                pass
            attempt += 1
            if time.monotonic() > deadline:
                raise SystemExit(f"no gateway accepted {body}")
            time.sleep(0.2)

    started = time.time()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))
    reposted = 0
    for index in range(0, count, 10 if repost else count + 1):
        # the same start again on another gateway: the same call id must not make a request
        url = urls[(index + 1) % len(urls)]
        sent_again.add(f"{prefix}{index:05d}")
        try:
            reply = requests.post(f"{url}/async-function/{flow}", data=f"{prefix}{index:05d}",
                                  headers={"X-Call-Id": f"start-{prefix}{index}"}, timeout=15)
            reposted += reply.status_code == 202
        except requests.RequestException:
            pass
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = get(urls, f"/function/{flow}/flow?limit=1000")["requests"]
        if len(found) >= count and all(r["status"] not in ("running", "paused") for r in found):
            break
        time.sleep(0.5)

    def full(record: dict[str, Any]) -> dict[str, Any]:
        doc = get(urls, f"/function/{flow}/flow/{record['id']}")
        return {k: doc.get(k) for k in ("id", "status", "created", "ended", "output", "error")}

    with ThreadPoolExecutor(8) as pool:
        records = list(pool.map(full, found))
    print(json.dumps({"started": started, "submitted": submitted, "records": records,
                      "reposted": reposted, "sent_again": sorted(sent_again)}))


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "ready":
        ready(args[0])
    elif command == "run":
        run(args[0], int(args[1]), args[2], args[3].split(","), float(args[4]),
            args[5:6] == ["repost"])
    elif command == "consumer":  # the monitor's view of the durable consumer
        query = "accounts=true&streams=true&consumers=true"
        with requests.get(f"{args[0]}/jsz?{query}", timeout=10) as reply:
            print(reply.text)
    elif command == "queue":
        print(json.dumps(get(args[0].split(","), "/system/queue")))


if __name__ == "__main__":
    main()
