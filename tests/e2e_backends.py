"""A local gateway (``faasflow up``) whose flows run on real backends chosen by configuration
alone, and the probes the end-to-end tests use to look at what those backends hold.

The servers come from ``.ci/services up`` (etcd, Ceph radosgw as the S3 server); Consul is the
KV **stand-in** of plugins/faasflow_consul/tests (a separate Python process, not Consul), since
no Consul agent installs on the build machine. Nothing here builds a plugin class: the gateway
gets ``FAASFLOW_*`` variables, and the probes ask the plugin registry for the configured store
(``Registry.create`` with ``Settings`` from the same variables) or use the server's own client.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from e2e_flows import flow_name, write_stack

from faasflow.backends import Kind
from faasflow.interfaces import StateStore
from faasflow.plugins import Registry
from faasflow.runtime.process import GatewayProcess
from faasflow.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SERVICES_HINT = (
    "the end-to-end backend tests need the servers of .ci/services: run `.ci/services up` and "
    "load their endpoints with `set -a; . /dev/shm/faasflow-ci-services/env; set +a` "
    "(scripts/test does both)"
)
#: Worker processes of each gateway: iterations of one request hop between them.
PROCESSES = 3
#: Asynchronous deliveries (iterations) at once: enough for every barrier of the flows.
CONCURRENCY = 8
#: Seconds a test waits for anything (a request to end, the queue to drain).
TIMEOUT = 30.0
CONFIGS = ("etcd+minio", "consul-standin+minio")


def require_env(*names: str) -> dict[str, str]:
    """The variables ``names``; the test FAILS (never skips) naming any that is missing."""
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: {SERVICES_HINT}")
    return {name: os.environ[name] for name in names}


def require_plugins() -> None:
    """The three store plugins and their clients; the test FAILS naming what is missing."""
    missing = [name for name in ("faasflow_etcd", "faasflow_consul", "faasflow_minio",
                                 "pyetcd", "minio") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not importable: install the store plugins with "
            "`pip install -e plugins/faasflow_etcd -e plugins/faasflow_consul "
            "-e plugins/faasflow_minio` (scripts/test installs every plugin)"
        )


def consul_standin_module() -> ModuleType:
    """plugins/faasflow_consul/tests/consul_standin.py, imported under a name of its own."""
    name = "faasflow_e2e_consul_standin"
    if name in sys.modules:
        return sys.modules[name]
    path = ROOT / "plugins" / "faasflow_consul" / "tests" / "consul_standin.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        pytest.fail(f"cannot load the Consul stand-in from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def wait_for(check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.01)


class Deployment:
    """One gateway serving the e2e stack with one backend configuration, and its probes."""

    def __init__(
        self,
        label: str,
        environ: Mapping[str, str],
        workdir: Path,
        raw_state_keys: Callable[[str], list[str]],
        via: str = "process",
    ) -> None:
        self.label = label
        self.environ = dict(environ)
        self.via = via
        self.workdir = workdir
        self.raw_state_keys = raw_state_keys
        self.suffix = uuid.uuid4().hex[:8]
        self.journal = workdir / "journal.jsonl"
        self.gates = workdir / "gates"
        self.gates.mkdir()
        self.journal.touch()
        # the backends reach the flows either through the gateway's environment (which its
        # worker processes inherit) or through each flow's environment: in stack.yml
        self.stack = write_stack(workdir / "stack", self.journal, self.gates, self.suffix,
                                 self.environ if via == "stack" else None)
        settings = Settings.from_env(self.environ)
        self.state_store: StateStore = Registry.from_settings(settings).create(
            Kind.STATE_STORE, settings
        )
        self.bucket = self.environ["FAASFLOW_MINIO_BUCKET"]
        from minio import Minio

        self.s3 = Minio(
            self.environ["FAASFLOW_MINIO_ENDPOINT"],
            access_key=self.environ["FAASFLOW_MINIO_ACCESS_KEY"],
            secret_key=self.environ["FAASFLOW_MINIO_SECRET_KEY"],
            region=self.environ["FAASFLOW_MINIO_REGION"],
            secure=False,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAASFLOW_")}
        if via == "process":
            env.update(self.environ)
        self.gateway = GatewayProcess(
            self.stack, data_dir=workdir / "data", processes=PROCESSES, env=env,
            extra=["--concurrency", str(CONCURRENCY), "--quiet"],
        )
        self.session = requests.Session()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Deployment:
        self.gateway.start()
        return self

    def close(self) -> None:
        self.session.close()
        self.gateway.stop()
        try:  # request records are kept on purpose (FAASFLOW_RECORD_RETENTION): drop ours
            for role in ("chain", "fanin", "nested", "held", "failing", "mix"):
                self.state_store.scoped(self.flow(role), "~records").cleanup()
        finally:
            self.state_store.close()
            remove_bucket(self.s3, self.bucket)

    # -- HTTP ----------------------------------------------------------------------------------

    def flow(self, role: str) -> str:
        return flow_name(role, self.suffix)

    def url(self, role: str, path: str = "") -> str:
        return f"{self.gateway.url}/function/{self.flow(role)}{path}"

    def run(self, role: str, body: bytes, request_id: str | None = None,
            wait: float = TIMEOUT) -> requests.Response:
        """Start a request and wait for its end (``X-Faas-Flow-Wait``)."""
        headers = {"X-Faas-Flow-Wait": str(wait)}
        if request_id is not None:
            headers["X-Faas-Flow-Reqid"] = request_id
        return self.session.post(self.url(role), data=body, headers=headers,
                                 timeout=wait + 10)

    def begin(self, role: str, body: bytes, request_id: str) -> None:
        """Start a request without waiting for it."""
        answer = self.session.post(self.url(role), data=body,
                                   headers={"X-Faas-Flow-Reqid": request_id}, timeout=TIMEOUT)
        assert answer.status_code == 200, answer.text

    def control(self, role: str, request_id: str, action: str) -> requests.Response:
        return self.session.post(self.url(role, f"/flow/{request_id}/{action}"), timeout=TIMEOUT)

    def state(self, role: str, request_id: str) -> str:
        return str(self.session.get(self.url(role, f"/flow/{request_id}/state"),
                                    timeout=TIMEOUT).text)

    def record(self, role: str, request_id: str) -> dict[str, Any]:
        answer = self.session.get(self.url(role, f"/flow/{request_id}"), timeout=TIMEOUT)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def finished(self, role: str, request_id: str) -> dict[str, Any]:
        """The record of ``request_id`` once it ended."""
        def ended() -> dict[str, Any] | None:
            record = self.record(role, request_id)
            return record if record["status"] not in ("running", "paused") else None

        return dict(wait_for(ended, f"request {request_id} to end"))

    def pending(self) -> int:
        answer = self.session.get(f"{self.gateway.url}/system/queue", timeout=TIMEOUT)
        return int(answer.json()["pending"])

    def settle(self) -> None:
        """Wait until the gateway delivered every queued iteration (the one that ended a request
        cleans its namespaces before its delivery is done)."""
        wait_for(lambda: self.pending() == 0, f"the gateway queue to drain ({self.label})")

    # -- the flows' journal and gates ----------------------------------------------------------

    def events(self, request_id: str) -> list[tuple[str, int, list[Any]]]:
        """``(event, pid, extra)`` of every journal line of ``request_id``, in order."""
        out = []
        for line in self.journal.read_text().splitlines():
            event, rid, pid, *extra = json.loads(line)
            if rid == request_id:
                out.append((event, pid, extra))
        return out

    def names(self, request_id: str) -> list[str]:
        return [event for event, _, _ in self.events(request_id)]

    def open_gate(self, request_id: str) -> None:
        (self.gates / request_id).touch()

    # -- what the servers hold -----------------------------------------------------------------

    def state_keys(self, role: str, request_id: str) -> dict[str, str]:
        """The request's keys in the state store (the configured store's ``scan``)."""
        return self.state_store.scoped(self.flow(role), request_id).scan()

    def data_objects(self, role: str, request_id: str) -> list[str]:
        """The request's objects in the S3 bucket (the S3 server's own listing)."""
        prefix = f"faasflow/{self.flow(role)}/{request_id}/"
        return [str(o.object_name) for o in
                self.s3.list_objects(self.bucket, prefix=prefix, recursive=True)]

    def request_state(self, role: str, request_id: str) -> dict[str, Any] | None:
        raw = self.state_keys(role, request_id).get("request-state")
        return None if raw is None else dict(json.loads(raw))

    def wait_held(self, role: str, request_id: str, count: int) -> None:
        """Wait until at least ``count`` iterations of the paused request are held (listed in
        its request-state in the state store)."""
        def held() -> bool:
            return len((self.request_state(role, request_id) or {}).get("parked", ())) >= count

        wait_for(held, f"{count} iteration(s) of {request_id} to be held")

    def assert_clean_and_recorded(self, role: str, request_id: str) -> None:
        """The request ran on the configured servers (its record is in both) and left no key
        of its own in either."""
        flow = self.flow(role)
        records = self.raw_state_keys(f"faasflow/{flow}/~records/")
        assert any(key.endswith(f"rec--{request_id}") for key in records), (
            f"no record of {request_id} in the {self.label} state store: {records}"
        )
        assert self.s3.bucket_exists(self.bucket), (
            f"bucket {self.bucket} was never created: the flows did not use the S3 data store"
        )
        stored = [str(o.object_name) for o in self.s3.list_objects(
            self.bucket, prefix=f"faasflow/{flow}/~records/rec--{request_id}")]
        assert stored, f"no record body of {request_id} in bucket {self.bucket}"
        assert self.state_keys(role, request_id) == {}
        assert self.raw_state_keys(f"faasflow/{flow}/{request_id}/") == []
        assert self.data_objects(role, request_id) == []
        # nor any earlier request of this flow: only records remain under the flow's prefix,
        # with the payloads `faasflow up` captures (they expire with their record)
        kept = f"faasflow/{flow}/~records/"
        captured = f"faasflow/{flow}/~capture-"
        assert [k for k in self.raw_state_keys(f"faasflow/{flow}/")
                if not k.startswith(kept)] == []
        assert [str(o.object_name) for o in self.s3.list_objects(
            self.bucket, prefix=f"faasflow/{flow}/", recursive=True)
            if not str(o.object_name).startswith((kept, captured))] == []


def remove_bucket(client: Any, bucket: str) -> None:
    if not client.bucket_exists(bucket):
        return
    for obj in client.list_objects(bucket, recursive=True):
        client.remove_object(bucket, str(obj.object_name))
    client.remove_bucket(bucket)


def s3_environ(bucket: str) -> dict[str, str]:
    """FAASFLOW_DATA_STORE=minio on the S3 server of .ci/services, every edge through it."""
    found = require_env("S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY")
    return {
        "FAASFLOW_DATA_STORE": "minio",
        "FAASFLOW_MINIO_ENDPOINT": found["S3_ENDPOINT"],
        "FAASFLOW_MINIO_ACCESS_KEY": found["S3_ACCESS_KEY"],
        "FAASFLOW_MINIO_SECRET_KEY": found["S3_SECRET_KEY"],
        "FAASFLOW_MINIO_REGION": os.environ.get("S3_REGION") or "us-east-1",
        "FAASFLOW_MINIO_BUCKET": bucket,
        # no payload rides inside a message: every edge's data goes through the bucket
        "FAASFLOW_INLINE_LIMIT": "0",
        # a failed request's state is not kept for a redrive: every request here must leave
        # nothing but its record behind (redrive has its own tests, tests/test_history_redrive)
        "FAASFLOW_REDRIVE": "false",
    }


def deployment(label: str, workdir: Path) -> Iterator[Deployment]:
    """Start the gateway for configuration ``label`` (one of :data:`CONFIGS`): etcd+minio
    through the gateway's environment (``FAASFLOW_STATE_STORE=etcd FAASFLOW_DATA_STORE=minio
    faasflow up``), the Consul stand-in through each flow's ``environment:`` in stack.yml."""
    require_plugins()
    bucket = f"faasflow-e2e-{uuid.uuid4().hex[:12]}"
    with ExitStack() as stack:
        if label == "etcd+minio":
            endpoints = require_env("ETCD_ENDPOINTS")["ETCD_ENDPOINTS"]
            environ = {"FAASFLOW_STATE_STORE": "etcd", "FAASFLOW_ETCD_ENDPOINTS": endpoints,
                       **s3_environ(bucket)}
            raw = etcd_keys(endpoints)
            stack.callback(raw.close)
            via = "process"
        elif label == "consul-standin+minio":
            standin = consul_standin_module().ConsulStandIn(workdir, keep_state=False)
            standin.start()
            stack.callback(standin.stop)
            environ = {"FAASFLOW_STATE_STORE": "consul",
                       "FAASFLOW_CONSUL_ADDRESS": standin.address, **s3_environ(bucket)}
            raw = standin.list_keys
            via = "stack"
        else:
            raise ValueError(f"unknown backend configuration {label!r}")
        running = Deployment(label, environ, workdir, raw, via)
        stack.callback(running.close)
        yield running.start()


class _EtcdKeys:
    """Keys under a prefix, read with etcd's own client (pyetcd) behind the store's back."""

    def __init__(self, endpoints: str) -> None:
        import pyetcd

        host, port = endpoints.split(",", maxsplit=1)[0].removeprefix("http://").rsplit(":", 1)
        self.client = pyetcd.client(host, int(port))

    def __call__(self, prefix: str) -> list[str]:
        return [meta.key.decode() for _, meta in self.client.get_prefix(prefix)]

    def close(self) -> None:
        self.client.close()


def etcd_keys(endpoints: str) -> _EtcdKeys:
    return _EtcdKeys(endpoints)
