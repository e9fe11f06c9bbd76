from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    # the helpers beside these tests (etcd_server.py) must import under --import-mode=importlib
    sys.path.insert(0, HERE)

from etcd_server import EtcdServer  # noqa: E402


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
