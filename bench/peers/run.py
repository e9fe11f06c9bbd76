"""Issue 17's peer comparison: `python bench/peers/run.py [--repeat 5]` (scripts/bench --peers).

Runs W1-W3 on Celery + Redis (prefork, 2 workers) and on DBOS (SQLite), each in its own venv
under bench/.venvs/ (created here, versions pinned), then faasflow's side (bench/workloads.py:
in-process memory and sqlite, `faasflow up` on sqlite, and on etcd when ETCD_ENDPOINTS is set)
with the floors measured in the same run, and prints ms per step / branch / leaf (median),
each as a ratio of Celery's and, for `faasflow up`, of the floors a step pays.
redis-server (Debian) is installed when missing and started on 127.0.0.1 on a private port,
and stopped after, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
VENVS = BENCH / ".venvs"
PEERS = {
    "celery": (["celery[redis]==5.7.0", "redis==8.1.0"], "Celery 5.7 + Redis, prefork 2 workers"),
    "dbos": (["dbos==3.4.0"], "DBOS 3.4 on SQLite"),
}
FAASFLOW = {
    "memory": "faasflow in-process, memory stores",
    "sqlite": "faasflow in-process, sqlite state + filesystem data",
    "up": "faasflow up, python3-http functions, sqlite",
    "up-http-calls": "faasflow up, sqlite, calls over HTTP",
    "up-http-handoff": "faasflow up, sqlite, hand-offs over HTTP",
    "up-http": "faasflow up, sqlite, calls + hand-offs over HTTP",
    "up-etcd": "faasflow up, etcd state",
}
UNITS = {"W1 10": 10, "W1 100": 100, "W2 100": 100, "W2 1000": 1000, "W3 10x10": 100}


def venv(name: str, packages: list[str]) -> Path:
    """bench/.venvs/<name> with ``packages``; reused when they are already installed."""
    root = VENVS / name
    python = root / "bin" / "python"
    stamp = root / "installed.txt"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    if not stamp.exists() or stamp.read_text() != "\n".join(packages):
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *packages], check=True)
        stamp.write_text("\n".join(packages))
    return python


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                    "-o", "DPkg::Lock::Timeout=600", "redis-server"], check=True,
                   stdout=subprocess.DEVNULL)
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_json(command: list[str], env: dict[str, str] | None = None,
             cwd: Path | None = None) -> Any:
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=1800, check=False)
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed ({done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def celery(repeat: int, workdir: Path) -> dict[str, list[float]]:
    python = venv("celery", PEERS["celery"][0])
    port = free_port()
    redis = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if redis.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        env = {**os.environ, "PEERS_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        result: dict[str, list[float]] = run_json(
            [str(python), "celery_bench.py", str(repeat)], env=env, cwd=HERE)
        return result
    finally:
        redis.terminate()
        try:
            redis.wait(10)
        except subprocess.TimeoutExpired:
            redis.kill()


def dbos(repeat: int, workdir: Path) -> dict[str, list[float]]:
    python = venv("dbos", PEERS["dbos"][0])
    result: dict[str, list[float]] = run_json(
        [str(python), "dbos_bench.py", str(workdir / "dbos.db"), str(repeat)], cwd=HERE)
    return result


def faasflow(repeat: int) -> dict[str, Any]:
    result: dict[str, Any] = run_json(
        [sys.executable, str(BENCH / "workloads.py"), "--json", "--floors",
         "--repeat", str(repeat)])
    return result


def per_unit(times: list[float], workload: str) -> float:
    return statistics.median(times) / UNITS[workload] * 1e3


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({model or platform.processor()}), "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def report(systems: dict[str, tuple[str, dict[str, list[float]]]],
           floors: dict[str, float], repeat: int, loads: list[str]) -> None:
    print(f"date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()}")
    print(f"median of {repeat} after a warm-up; load average (1/5/15 min) at each system's "
          f"start: {'; '.join(loads)}")
    print("\nms per step / branch / leaf (x Celery)")
    header = f"{'system':<54}" + "".join(f"{w:>16}" for w in UNITS)
    print(header)
    base = systems.get("celery", ("", {}))[1]
    for _, (label, results) in systems.items():
        cells = []
        for w in UNITS:
            if w not in results:
                cells.append(f"{'-':>16}")
                continue
            ms = per_unit(results[w], w)
            ratio = f" ({ms / per_unit(base[w], w):.2f}x)" if w in base else ""
            cells.append(f"{ms:>8.3f}{ratio:>8}")
        print(f"{label:<54}" + "".join(cells))
    print("\nfloors (ms, median of 300)")
    for what, ms in floors.items():
        print(f"  {what:<34}{ms:>8.3f}")
    call = floors.get("python3-http call via gateway")
    hand_off = floors.get("async call accepted (202)")
    handler = floors.get("python3-http handler in-process (WSGI)")
    write = floors.get("sqlite write (WAL)")
    if handler and write and "up" in systems:
        # a kept step: the handler, the queue row's insert and delete, two state transactions
        kept = handler + 4 * write
        label, results = systems["up"]
        cells = [f"{w} {per_unit(results[w], w) / kept:.1f}x" for w in UNITS if w in results]
        print(f"\nfaasflow up vs the floor of a step kept on its worker (handler in-process + "
              f"4 sqlite writes = {kept:.3f} ms): " + ", ".join(cells))
    if call and hand_off and "up" in systems:
        floor = call + hand_off
        print(f"\nfaasflow up vs the floor of a step over HTTP (call + hand-off through the "
              f"gateway = {floor:.3f} ms):")
        for key in ("up", *(k for k in FAASFLOW if k.startswith("up-http")), "up-etcd"):
            if key in systems:
                label, results = systems[key]
                extra = floors.get("etcd txn CAS", 0.0) * 2 if key == "up-etcd" else 0.0
                cells = [f"{w} {per_unit(results[w], w) / (floor + extra):.2f}x"
                         for w in UNITS if w in results]
                note = " (floor + 2 etcd txn)" if extra else ""
                print(f"  {label}{note}: " + ", ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per workload")
    parser.add_argument("--json", type=Path, help="also write the raw seconds here")
    parser.add_argument("--resume", type=Path,
                        help="a --json file of an interrupted run: reuse the peers it holds")
    args = parser.parse_args(argv)
    systems: dict[str, tuple[str, dict[str, list[float]]]] = {}
    loads: list[str] = []
    if args.resume and args.resume.exists():
        kept = json.loads(args.resume.read_text())
        for name in PEERS:
            if name in kept.get("systems", {}):
                systems[name] = (PEERS[name][1], kept["systems"][name])
        loads = [entry for entry in kept.get("load", []) if entry.split()[0] in systems]

    def save(floors: dict[str, float] | None = None) -> None:
        if args.json:
            args.json.write_text(json.dumps({"systems": {k: v[1] for k, v in systems.items()},
                                             "floors": floors or {}, "load": loads}, indent=1))

    with tempfile.TemporaryDirectory(prefix="faasflow-peers-") as tmp:
        work = Path(tmp)
        for name, runner in (("celery", celery), ("dbos", dbos)):
            if name in systems:
                continue
            loads.append(f"{name} {load()}")
            print(f"running {PEERS[name][1]} ...", file=sys.stderr, flush=True)
            systems[name] = (PEERS[name][1], runner(args.repeat, work))
            save()
        loads.append(f"faasflow {load()}")
        print("running faasflow ...", file=sys.stderr, flush=True)
        ours = faasflow(args.repeat)
    for key, results in ours["faasflow"].items():
        systems[key] = (FAASFLOW[key], results)
    save(ours["floors"])
    report(systems, ours["floors"], args.repeat, loads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
