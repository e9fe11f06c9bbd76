"""A private etcd server for tests that stop, restart, pause or reconfigure it.

The shared server from ``.ci/services`` must not be restarted under other tests, so these tests
start their own ``etcd`` on free loopback ports with a data directory of their own.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import pytest
from faasflow_etcd.store import EtcdStateStore

from faasflow.testing import ServerProcess, free_port

READY_TIMEOUT = 20.0
SERVICES_HINT = (
    "start the test servers with `.ci/services up` and load their endpoints with "
    "`set -a; . /dev/shm/faasflow-ci-services/env; set +a`"
)


def shared_endpoints() -> str:
    """The etcd that .ci/services started (``ETCD_ENDPOINTS``); the test fails without it,
    because the test command always starts it."""
    endpoints = os.environ.get("ETCD_ENDPOINTS")
    if not endpoints:
        pytest.fail(f"ETCD_ENDPOINTS is not set: {SERVICES_HINT}")
    return endpoints


@contextlib.contextmanager
def etcd_store(
    options: Mapping[str, str], flow: str = "f", request: str = "r"
) -> Iterator[EtcdStateStore]:
    """An etcd store built from ``options``, scoped to one request and closed afterwards."""
    store = EtcdStateStore.from_options(dict(options)).scoped(flow, request)
    try:
        yield store
    finally:
        store.close()


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        pytest.fail(
            "the etcd binary is not installed: run `.ci/services up` (it installs the Debian "
            "package etcd-server) or `apt-get install etcd-server`"
        )
    return path


@attrs.frozen
class Certificates:
    """A throw-away CA with a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path

    @classmethod
    def create(cls, directory: Path) -> Certificates:
        directory.mkdir(parents=True, exist_ok=True)

        def openssl(*args: str) -> None:
            subprocess.run(
                ["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60
            )

        for ca in ("ca", "other-ca"):
            openssl(
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj", f"/CN=faasflow test {ca}",
            )
        (directory / "san.ext").write_text(
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
        )
        for name in ("server", "client"):
            openssl(
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={name}",
            )
            openssl(
                "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
                "-extfile", "san.ext",
            )
        return cls(
            ca=directory / "ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server.key",
            client_cert=directory / "client.pem",
            client_key=directory / "client.key",
            other_ca=directory / "other-ca.pem",
        )


class EtcdServer(ServerProcess):
    """One etcd member on 127.0.0.1, started and stopped by the test that owns it."""

    def __init__(
        self,
        workdir: Path,
        *,
        certificates: Certificates | None = None,
        client_cert_auth: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            "private etcd",
            command=self._command,
            ready=self._healthy,
            log=workdir / "etcd.log",
            ready_timeout=READY_TIMEOUT,
        )
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.metrics_port = free_port()
        self.certificates = certificates
        self.client_cert_auth = client_cert_auth
        self.extra_args = extra_args

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.certificates else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    def _command(self) -> list[str]:
        client_url = self.endpoint
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        args = [
            etcd_binary(), "--name", "private", "--data-dir", str(self.data_dir),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"private={peer_url}",
            "--listen-metrics-urls", f"http://127.0.0.1:{self.metrics_port}",
            "--metrics", "extensive", "--log-level", "warn", "--logger", "zap",
            *self.extra_args,
        ]
        if self.certificates:
            args += [
                "--cert-file", str(self.certificates.server_cert),
                "--key-file", str(self.certificates.server_key),
            ]
            if self.client_cert_auth:
                args += ["--client-cert-auth", "--trusted-ca-file", str(self.certificates.ca)]
        return args

    def _healthy(self) -> bool:
        with urllib.request.urlopen(  # noqa: S310 - loopback http only
            f"http://127.0.0.1:{self.metrics_port}/health", timeout=1
        ) as answer:
            return b'"health":"true"' in answer.read()

    def handled(self, method: str) -> int:
        """How many gRPC calls of ``method`` (``Range``, ``Txn``, ``Put``, ``DeleteRange``) the
        server has answered since it started."""
        with urllib.request.urlopen(  # noqa: S310 - loopback http only
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as answer:
            text = answer.read().decode()
        pattern = re.compile(
            r'^grpc_server_handled_total\{[^}]*grpc_method="' + re.escape(method)
            + r'"[^}]*\} (\S+)$',
            re.MULTILINE,
        )
        return int(sum(float(v) for v in pattern.findall(text)))
