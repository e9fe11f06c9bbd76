from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    # the helpers beside these tests (consul_standin.py) must import under --import-mode=importlib
    sys.path.insert(0, HERE)

from consul_standin import ConsulStandIn, running  # noqa: E402


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[ConsulStandIn]:
    """A Consul KV stand-in of this test's own (state kept across restarts)."""
    yield from running(tmp_path)


@pytest.fixture
def token_standin(tmp_path: Path) -> Iterator[ConsulStandIn]:
    """A stand-in that demands the ACL token ``s3cr3t``."""
    yield from running(tmp_path, token="s3cr3t")
