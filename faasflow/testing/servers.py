"""A server that one test runs as a child process, to stop, restart, pause or resume it.

A backend's shared test server must not be restarted under other tests, so outage and restart
tests start a private one::

    server = ServerProcess(
        "private etcd",
        command=lambda: ["etcd", "--data-dir", str(workdir / "data"), ...],
        ready=lambda: health_check(port),
        log=workdir / "etcd.log",
    )
    server.start()
    try:
        server.pause()   # SIGSTOP: the server hangs, its sockets stay open
        ...
        server.resume()  # SIGCONT
        server.restart()
    finally:
        server.stop()
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["ServerProcess"]

#: How much of the log a failed start quotes.
LOG_TAIL_CHARS = 2000
#: How long :meth:`ServerProcess.pause` waits for SIGSTOP to take effect.
STOP_SIGNAL_WAIT = 5.0


class ServerProcess:
    """A server process owned by one test.

    ``command`` returns the argument list; it is called at every start, so it may change
    between starts (a port learnt at the first start, say). ``ready`` says whether the server
    answers; raising ``OSError`` (a refused connection) counts as "not yet". The process writes
    its standard output and error to ``output`` (``log`` unless given), appended across
    restarts. A server that exits during its start, or is not ready within ``ready_timeout``
    seconds, is stopped and fails the test with a message that names ``log`` and quotes its end.
    :meth:`stop` sends SIGTERM (after SIGCONT, in case the test left the server paused) and
    SIGKILL if the server has not exited ``stop_timeout`` seconds later.
    """

    def __init__(
        self,
        name: str,
        *,
        command: Callable[[], Sequence[str]],
        ready: Callable[[], bool],
        log: Path,
        output: Path | None = None,
        ready_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.log = log
        self.output = output if output is not None else log
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._command = command
        self._ready = ready
        self._output_start = 0

    def start(self) -> None:
        """Start the server and return once ``ready`` passes."""
        self._output_start = self.output.stat().st_size if self.output.exists() else 0
        with self.output.open("ab") as out:
            self.process = subprocess.Popen(list(self._command()), stdout=out, stderr=out)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"exited at start (status {self.process.returncode})")
            try:
                if self._ready():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self._fail(f"not ready after {self.ready_timeout:.0f} s")

    def output_since_start(self) -> str:
        """What the process has written to ``output`` since its latest start."""
        with self.output.open("rb") as out:
            out.seek(self._output_start)
            return out.read().decode(errors="replace")

    def stop(self) -> None:
        """Stop the server (a no-op when it is not running)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        """Stop the server and start it again with a fresh ``command()``."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers. Returns once
        every thread of the server has stopped."""
        assert self.process is not None, f"{self.name} is not running"
        os.kill(self.process.pid, signal.SIGSTOP)
        # kill() returns before the signal has reached every thread: a request sent at once
        # could still be answered.
        deadline = time.monotonic() + STOP_SIGNAL_WAIT
        while not _all_threads_stopped(self.process.pid):
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} did not stop within {STOP_SIGNAL_WAIT:.0f} s of SIGSTOP")
            time.sleep(0.005)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        assert self.process is not None, f"{self.name} is not running"
        os.kill(self.process.pid, signal.SIGCONT)

    def _fail(self, what: str) -> NoReturn:
        self.stop()  # a fixture that fails before its yield never reaches its teardown
        tail = self.log.read_text(errors="replace")[-LOG_TAIL_CHARS:] if self.log.exists() else ""
        ending = f"; it ends:\n{tail}" if tail else ""
        pytest.fail(f"{self.name} {what}; see {self.log}{ending}")


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is in the stopped state (Linux ``/proc``; elsewhere,
    where there is no ``/proc``, assume it is)."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return True
    for stat in tasks.glob("*/stat"):
        try:
            # the state follows the command name, which is in parentheses and may hold spaces
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # the thread exited meanwhile
        if state not in ("T", "t"):
            return False
    return True
