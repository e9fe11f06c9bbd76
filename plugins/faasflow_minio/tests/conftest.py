from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    # the helpers beside these tests (s3_servers.py) must import under --import-mode=importlib
    sys.path.insert(0, HERE)

from s3_servers import (  # noqa: E402
    PrivateRadosgw,
    raw_client,
    remove_bucket,
    running_radosgw,
    shared_options,
    unique_bucket,
)


@pytest.fixture
def private_rgw(tmp_path: Path) -> Iterator[PrivateRadosgw]:
    """A radosgw of this test's own, which it may stop, restart or pause."""
    yield from running_radosgw(tmp_path)


@pytest.fixture
def fresh_bucket() -> Iterator[str]:
    """A bucket name nobody uses yet; the bucket is removed after the test."""
    bucket = unique_bucket()
    yield bucket
    remove_bucket(raw_client(shared_options()), bucket)
