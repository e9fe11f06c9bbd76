"""Running ``faasflow up`` as a child process: used by the demo and by the tests."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import requests

__all__ = ["GatewayProcess"]

#: The URL is a scheme, a host and a port, whatever follows it on the line.
_LISTENING = re.compile(r"listening on (https?://[^\s/]+:\d+)")


class GatewayProcess:
    """``faasflow up -f <stack>`` in a child process; :meth:`start` waits until it serves."""

    def __init__(
        self,
        stack: str | Path,
        *,
        data_dir: str | Path | None = None,
        port: int = 0,
        processes: int = 2,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.stack = Path(stack)
        self.command = [sys.executable, "-m", "faasflow", "up", "-f", str(self.stack),
                        "--port", str(port), "--processes", str(processes), *extra]
        if data_dir is not None:
            self.command += ["--data-dir", str(data_dir)]
        self.env = env
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        """Start and wait for ``listening on``; raise with the output when it does not come."""
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=self.env, bufsize=1,
        )
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"`{' '.join(self.command)}` did not start (status "
                    f"{self.process.returncode}):\n{self.text}"
                )
        return self

    def _drain(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            match = _LISTENING.search(line)
            if match and not self._ready.is_set():
                self.url = match.group(1)
                self._ready.set()

    @property
    def text(self) -> str:
        """Everything the gateway printed so far."""
        return "".join(self.output)

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def interrupt(self) -> None:
        """SIGINT, as Ctrl-C in a terminal: a graceful stop (a second one stops at once)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def workers(self) -> list[int]:
        """Process ids of the gateway's worker processes (Linux: from ``/proc``)."""
        if self.process is None:
            return []
        pids: list[int] = []
        try:
            tasks = list(Path(f"/proc/{self.process.pid}/task").iterdir())
        except OSError:
            return pids
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                try:
                    command = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"faasflow.runtime.worker" in command:
                    pids.append(int(child))
        return pids

    def kill(self) -> None:
        """SIGKILL the gateway alone, as a crash would (its workers notice and exit)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
            self._close_pipe()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. Returns the exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self._close_pipe()
        return process.returncode

    def _close_pipe(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self._drainer.join(5)
            self.process.stdout.close()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


