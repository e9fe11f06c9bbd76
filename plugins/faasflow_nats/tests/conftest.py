from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from nats_server import NatsServer, scratch  # noqa: E402


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer(scratch("server")).start()
    try:
        yield server
    finally:
        server.stop()
