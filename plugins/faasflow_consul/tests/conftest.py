from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from consul_standin import ConsulStandIn, running


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[ConsulStandIn]:
    """A Consul KV stand-in of this test's own (state kept across restarts)."""
    yield from running(tmp_path)


@pytest.fixture
def token_standin(tmp_path: Path) -> Iterator[ConsulStandIn]:
    """A stand-in that demands the ACL token ``s3cr3t``."""
    yield from running(tmp_path, token="s3cr3t")
