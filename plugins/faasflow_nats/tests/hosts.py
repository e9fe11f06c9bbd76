"""Several faasflow hosts on one machine: network namespaces joined by a bridge.

Each host runs a nats-server member (one cluster, R3 stream), an etcd member (one cluster) and
``faasflow up --queue nats://...``; the request data is a directory every namespace sees (one
kernel, one filesystem), declared with ``FAASFLOW_SHARED_FILES=1``.

Network rule: the blackhole route for the test /24 goes into the root namespace *before*
anything is created, and every client runs inside a namespace (``ip netns exec``), so no packet
for the test range can leave the machine. :meth:`Cluster.close` removes the processes, the
namespaces and the route, also after a failure. Where namespaces cannot be made (not root, no
``ip``), the hosts are processes on loopback ports instead, and :attr:`Cluster.mode` says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

from flows import write_stack
from nats_server import nats_binary

HERE = Path(__file__).resolve().parent


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=30)


class Host:
    def __init__(self, cluster: Cluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"h{index}"
        if cluster.mode == "netns":
            self.ns: str | None = f"{cluster.tag}-h{index}"
            self.addr = f"{cluster.net}.1{index}"
            base = 0
        else:
            self.ns = None
            self.addr = "127.0.0.1"
            base = index * 10
        p = cluster.port_base + base
        self.nats_port, self.route_port, self.monitor_port = p, p + 1, p + 2
        self.etcd_port, self.peer_port, self.metrics_port = p + 3, p + 4, p + 5
        self.http_port = p + 6
        self.dir = cluster.root / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started_etcd = False

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.http_port}"

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        prefix = ["ip", "netns", "exec", self.ns] if self.ns else []
        out = (self.dir / f"{name}.log").open("ab")
        proc = subprocess.Popen([*prefix, *command], stdout=out, stderr=out, env=env,
                                start_new_session=True)
        out.close()
        self.procs.append(proc)
        return proc

    def start_nats(self) -> None:
        c = self.cluster
        routes = ", ".join(f"nats-route://{h.addr}:{h.route_port}" for h in c.hosts)
        conf = self.dir / "nats.conf"
        cluster = textwrap.dedent(f"""
            cluster {{ name: ffn
              listen: {self.addr}:{self.route_port}
              routes: [ {routes} ] }}
        """) if len(c.hosts) > 1 else ""  # one server alone is no cluster
        conf.write_text(textwrap.dedent(f"""
            server_name: n{self.index}
            listen: {self.addr}:{self.nats_port}
            http: {self.addr}:{self.monitor_port}
            jetstream {{ store_dir: "{self.dir / 'js'}", max_memory_store: 64MB,
                         max_file_store: 1GB }}
        """) + cluster)
        self.spawn("nats", [nats_binary(), "-c", str(conf)])

    def start_etcd(self) -> None:
        c = self.cluster
        initial = ",".join(f"e{h.index}=http://{h.addr}:{h.peer_port}" for h in c.hosts)
        state = "existing" if self.started_etcd else "new"
        self.started_etcd = True
        self.spawn("etcd", [
            shutil.which("etcd") or "etcd", "--name", f"e{self.index}",
            "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", f"http://{self.addr}:{self.etcd_port}",
            "--advertise-client-urls", f"http://{self.addr}:{self.etcd_port}",
            "--listen-peer-urls", f"http://{self.addr}:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://{self.addr}:{self.peer_port}",
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", c.tag,
            "--listen-metrics-urls", f"http://{self.addr}:{self.metrics_port}",
            "--log-level", "warn"])

    def start_faasflow(self) -> None:
        c = self.cluster
        stack = write_stack(self.dir / "stack", c.log, sleep=c.sleep, host=self.name,
                            flow=c.flow)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FAASFLOW_", "NATS_", "ETCD"))}
        env.update({
            "FAASFLOW_STATE_STORE": "etcd",
            "FAASFLOW_ETCD_ENDPOINTS": ",".join(f"{h.addr}:{h.etcd_port}" for h in c.hosts),
            "FAASFLOW_ETCD_TIMEOUT": "2",
            "FAASFLOW_DATA_STORE": "filesystem",
            "FAASFLOW_FILESYSTEM_PATH": str(c.root / "shared-data"),
            "FAASFLOW_SHARED_FILES": "1",
            "FAASFLOW_HMAC_SECRET": c.secret,
            "FAASFLOW_NATS_REPLICAS": str(min(3, len(c.hosts))),
            "FAASFLOW_NATS_ACK_WAIT": "2",
            "FAASFLOW_NATS_CONNECT_TIMEOUT": "60",
        })
        self.spawn("faasflow", [
            sys.executable, "-m", "faasflow", "up", "-q", "-f", str(stack),
            "--host", "0.0.0.0" if self.ns else "127.0.0.1", "--port", str(self.http_port),
            "--processes", "1", "--concurrency", str(c.concurrency),
            "--data-dir", str(self.dir / "data"),
            "--queue", ",".join(f"nats://{h.addr}:{h.nats_port}" for h in c.hosts)], env)

    def kill(self) -> None:
        """``kill -9`` of every process of this host."""
        pids = {p.pid for p in self.procs if p.poll() is None}
        if self.ns:
            found = _ip("netns", "pids", self.ns, check=False).stdout.split()
            pids |= {int(p) for p in found if p.isdigit()}
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.procs = []


class Cluster:
    """``count`` hosts; :meth:`start` returns once every gateway answers /healthz."""

    def __init__(self, root: Path, count: int = 3, *, sleep: float = 0.1,
                 concurrency: int = 8, flow: str = "fan") -> None:
        self.root = root
        self.sleep = sleep
        self.concurrency = concurrency
        self.flow = flow
        self.log = root / "calls.log"
        self.secret = os.urandom(16).hex()
        self.tag = f"ffn{os.getpid() % 10000}"
        self.net = f"10.250.{random.randint(100, 199)}"
        forced = os.environ.get("FAASFLOW_NATS_HOSTS_MODE", "")  # "loopback" to try the fallback
        self.mode = "netns" if forced != "loopback" and self._can_netns() else "loopback"
        self.port_base = 4222 if self.mode == "netns" else random.randint(20000, 50000)
        self.hosts: list[Host] = []
        self._count = count
        self._made: list[str] = []
        self._route = False

    @staticmethod
    def _can_netns() -> bool:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            return False
        probe = f"ffnprobe{os.getpid()}"
        made = _ip("netns", "add", probe, check=False).returncode == 0
        if made:
            _ip("netns", "del", probe, check=False)
        return made

    def _network(self) -> None:
        # the blackhole first: nothing for the range may follow the default route out
        _ip("route", "add", "blackhole", f"{self.net}.0/24")
        self._route = True
        sw = f"{self.tag}-sw"
        _ip("netns", "add", sw)
        self._made.append(sw)
        _ip("-n", sw, "link", "set", "lo", "up")
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "link", "set", "br0", "up")
        for host in self.hosts:
            assert host.ns is not None
            _ip("netns", "add", host.ns)
            self._made.append(host.ns)
            _ip("-n", host.ns, "link", "set", "lo", "up")
            _ip("link", "add", "eth0", "netns", host.ns, "type", "veth", "peer", "name",
                f"p{host.index}", "netns", sw)
            _ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
            _ip("-n", host.ns, "link", "set", "eth0", "up")
            _ip("-n", sw, "link", "set", f"p{host.index}", "master", "br0")
            _ip("-n", sw, "link", "set", f"p{host.index}", "up")

    def start(self) -> Cluster:
        self.hosts = [Host(self, i) for i in range(1, self._count + 1)]
        if self.mode == "netns":
            self._network()
        for host in self.hosts:
            host.start_nats()
            host.start_etcd()
        for host in self.hosts:
            host.start_faasflow()
        self.wait_ready(self.hosts, 120)
        return self

    def restart(self, host: Host) -> None:
        host.start_nats()
        host.start_etcd()
        host.start_faasflow()
        self.wait_ready([host], 120)

    def wait_ready(self, hosts: list[Host], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for host in hosts:
            while True:
                out = self.client(["ready", host.url], host=self.hosts[0], timeout=10,
                                  check=False)
                if out.strip() == "ok":
                    break
                if time.monotonic() > deadline:
                    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                                     for p in sorted(host.dir.glob("*.log")))
                    raise AssertionError(f"{host.name} not ready after {timeout:g}s\n{logs}")
                time.sleep(0.5)

    def client(self, args: list[str], *, host: Host | None = None, timeout: float = 600,
               check: bool = True) -> str:
        """Run the test client (``hosts_client.py``) inside a host's namespace."""
        host = host or self.hosts[0]
        prefix = ["ip", "netns", "exec", host.ns] if host.ns else []
        done = subprocess.run([*prefix, sys.executable, str(HERE / "hosts_client.py"), *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"client {args[0]} failed: {done.stderr[-3000:]}")
        return done.stdout

    def client_json(self, args: list[str], **kwargs: Any) -> Any:
        return json.loads(self.client(args, **kwargs))

    def close(self) -> None:
        for host in self.hosts:
            host.kill()
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)
        self._made = []
        if self._route:
            _ip("route", "del", "blackhole", f"{self.net}.0/24", check=False)
            self._route = False


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False
