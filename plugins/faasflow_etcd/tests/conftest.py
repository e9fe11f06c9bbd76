from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_server import EtcdServer


@pytest.fixture
def etcd_workdir() -> Iterator[Path]:
    """A scratch directory, on tmpfs when there is one (etcd fsyncs on every write)."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="faasflow-etcd-", dir=base) as path:
        yield Path(path)


@pytest.fixture
def private_etcd(etcd_workdir: Path) -> Iterator[EtcdServer]:
    """An etcd of this test's own, which it may stop, restart or pause."""
    server = EtcdServer(etcd_workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
