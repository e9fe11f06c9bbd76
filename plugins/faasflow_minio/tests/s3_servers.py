"""The S3 endpoint of .ci/services, and private radosgw processes for restart tests.

A whole private Ceph cluster would take seconds to boot, so a restart test starts a second
radosgw of its own on the cluster .ci/services runs (its monitor and memstore OSD) and on a
port of its own: stopping and restarting it is a real S3 server restart that no other test sees.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from faasflow.testing import ServerProcess, free_port

READY_TIMEOUT = 30.0
SERVICES_HINT = (
    "start the test servers with `.ci/services up` and load their endpoints with "
    "`set -a; . /dev/shm/faasflow-ci-services/env; set +a`"
)


def shared_options(**extra: str) -> dict[str, str]:
    """Options for the S3 endpoint of .ci/services (S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY);
    the test fails without them, because the test command always starts that server."""
    names = ("S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY")
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: {SERVICES_HINT}")
    return {
        "endpoint": os.environ["S3_ENDPOINT"],
        "access_key": os.environ["S3_ACCESS_KEY"],
        "secret_key": os.environ["S3_SECRET_KEY"],
        "region": os.environ.get("S3_REGION", "us-east-1"),
        **extra,
    }


def raw_client(options: dict[str, str]) -> Minio:
    """A plain minio client on the same endpoint, to look behind the store's back."""
    return Minio(
        options["endpoint"],
        access_key=options["access_key"],
        secret_key=options["secret_key"],
        secure=False,
        region=options.get("region"),
    )


def unique_bucket() -> str:
    return f"faasflow-test-{uuid.uuid4().hex[:12]}"


def remove_bucket(client: Minio, bucket: str) -> None:
    """Empty and delete ``bucket`` if it exists."""
    if not client.bucket_exists(bucket):
        return
    for obj in client.list_objects(bucket, recursive=True):
        assert obj.object_name is not None
        client.remove_object(bucket, obj.object_name)
    client.remove_bucket(bucket)


class PrivateRadosgw(ServerProcess):
    """A radosgw of a test's own on the shared Ceph cluster."""

    def __init__(self, workdir: Path) -> None:
        conf = os.environ.get("CEPH_CONF")
        if not conf or not Path(conf).is_file():
            pytest.fail(f"CEPH_CONF (the Ceph cluster of .ci/services) is not set: {SERVICES_HINT}")
        if shutil.which("radosgw") is None:
            pytest.fail("radosgw is not installed: run `.ci/services up`")
        super().__init__(
            "private radosgw",
            command=self._command,
            ready=self._answers,
            log=workdir / "radosgw.log",
            output=workdir / "radosgw.out",
            ready_timeout=READY_TIMEOUT,
            stop_timeout=20.0,
        )
        self.conf = conf
        self.workdir = workdir
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [
            "radosgw", "-f", "-n", "client.rgw.ci", "--conf", self.conf,
            f"--rgw_frontends=beast endpoint=127.0.0.1:{self.port} tcp_nodelay=1",
            f"--log_file={self.log}",
        ]

    def _answers(self) -> bool:
        with urllib.request.urlopen(  # noqa: S310 - loopback http only
            f"http://{self.endpoint}/", timeout=1
        ) as answer:
            status: int = answer.status
            return status == 200


def running_radosgw(workdir: Path) -> Iterator[PrivateRadosgw]:
    server = PrivateRadosgw(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
