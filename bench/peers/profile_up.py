"""Where a `faasflow up` step spends its CPU: `python bench/peers/profile_up.py [--workload W]`.

Starts `faasflow up` (2 worker processes, sqlite + filesystem) with the stack of
bench/workloads.py, runs one of its workloads (default W1 100, the 100-step chain; every step
a python3-http call through the gateway) --requests times under `py-spy record
--subprocesses` (CPU samples only, no idle frames), and prints: CPU ms per step (branch, leaf)
of the whole process tree (from /proc, utime + stime),
the share of samples per category (HTTP stack, sockets, JSON, sqlite, queue, engine, ...), and
the top functions by own time and by inclusive time.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workloads import WORKLOADS, start_gateway

# first match wins, looked for in the frames from the leaf up
CATEGORIES = [
    ("sqlite", ("sqlite3", "sqlitedb.py", "default_plugins/sqlite")),
    ("filesystem data store", ("filesystem.py",)),
    ("socket I/O", ("socket.py", "selectors.py", "ssl.py", "send (", "recv", "sendall")),
    ("HTTP parsing/serving (stdlib)", ("http/server.py", "http/client.py", "email/",
                                       "socketserver.py")),
    ("HTTP client (requests/urllib3)", ("requests/", "urllib3/")),
    ("JSON", ("json/",)),
    ("HMAC/hashing", ("hmac.py", "hashlib")),
    ("durable queue", ("runtime/queue.py",)),
    ("engine", ("faasflow/engine/", "faasflow/dsl/", "faasflow/graph.py", "faasflow/flow.py")),
    ("gateway/runtime", ("faasflow/runtime/", "faasflow/http.py", "faasflow/webapps.py")),
    ("threading/locks", ("threading.py", "queue.py", "concurrent/")),
]


# Leaf frames that are a thread blocked, not running: py-spy --nonblocking cannot always tell
# them from work, so they are counted apart and left out of the CPU shares.
WAITS = ("server.py:308)", "EpollSelector.select", "Condition.wait", "SocketIO.readinto",
         "Event.wait", "Thread.join", "SimpleQueue.get", "Queue.get", "time.sleep")


def tree_cpu(root: int) -> float:
    """utime + stime (seconds) of ``root`` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root or ppid == root:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--workload", default="W1 100",
                        choices=[name for name, *_ in WORKLOADS])
    args = parser.parse_args(argv)
    _, key, n, units, expected = next(w for w in WORKLOADS if w[0] == args.workload)
    with tempfile.TemporaryDirectory(prefix="faasflow-profile-") as tmp:
        work = Path(tmp)
        gateway = start_gateway(work, None)
        assert gateway.process is not None
        root = gateway.process.pid
        session = requests.Session()
        url = f"{gateway.url}/function/w-{key}-{n}"
        raw = work / "samples.txt"
        try:
            def one() -> None:
                answer = session.post(url, data=b"", headers={"X-Faas-Flow-Wait": "600"},
                                      timeout=660)
                if answer.status_code != 200 or answer.content.strip() != str(expected).encode():
                    raise SystemExit(f"{args.workload}: {answer.status_code} "
                                     f"{answer.content[:200]!r}")

            one()  # warm-up
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(root), "--subprocesses", "--format", "raw",
                 "--rate", "250", "--output", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(2)  # py-spy attaches
            cpu0, t0 = tree_cpu(root), time.perf_counter()
            for _ in range(args.requests):
                one()
            wall, cpu = time.perf_counter() - t0, tree_cpu(root) - cpu0
            spy.send_signal(2)
            spy.wait(60)
        finally:
            session.close()
            gateway.stop()
        steps = args.requests * units
        print(f"{args.requests} x {args.workload} through faasflow up: wall "
              f"{wall / steps * 1e3:.2f} ms/step, CPU {cpu / steps * 1e3:.2f} ms/step "
              f"(gateway + workers, /proc utime+stime)")
        stacks: list[tuple[list[str], int]] = []
        for line in raw.read_text().splitlines():
            path, _, samples = line.rpartition(" ")
            if path and samples.isdigit():
                stacks.append((path.split(";"), int(samples)))
        waiting = sum(c for frames, c in stacks if any(w in frames[-1] for w in WAITS))
        stacks = [(f, c) for f, c in stacks if not any(w in f[-1] for w in WAITS)]
        total = sum(c for _, c in stacks) or 1
        by_cat: collections.Counter[str] = collections.Counter()
        own: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        for frames, count in stacks:
            by_cat[category(frames)] += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
        per_step = cpu / steps * 1e3
        print(f"\n{total} samples at work ({waiting} more in blocking waits, left out); "
              "share by category (ms/step = share x CPU per step):")
        for name, count in by_cat.most_common():
            print(f"  {name:<34}{count / total:>7.1%}{count / total * per_step:>8.3f} ms")
        print(f"\ntop {args.top} by own time:")
        for frame, count in own.most_common(args.top):
            print(f"  {count / total:>6.1%}  {frame[:110]}")
        print(f"\ntop {args.top} by inclusive time (faasflow frames):")
        shown = 0
        for frame, count in inclusive.most_common():
            if "faasflow/" in frame:
                print(f"  {count / total:>6.1%}  {frame[:110]}")
                shown += 1
                if shown == args.top:
                    break
    return 0


if __name__ == "__main__":
    sys.exit(main())
