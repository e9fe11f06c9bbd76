"""A log of function calls that processes share, for tests of whole deployments (``faasflow up``,
several hosts) where :class:`~faasflow.testing.CountingFunctions` cannot see into the worker
processes: each function appends one line just before it answers, and the test reads back
which calls ran, how often, on which host and process, and when.

:func:`counting_handler` is such a function for a stack (python3-http); a flow's own handler
can log too, with the source :func:`append_source` gives. Neither imports faasflow in the
function's process, so a worker that is killed and restarted pays nothing for it.
"""

from __future__ import annotations

import inspect
import json
import os
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

import attrs

__all__ = ["Call", "append", "append_source", "counting_handler", "read", "write_stack"]


@attrs.frozen
class Call:
    """One logged call."""

    key: str
    """The call's ``Idempotency-Key`` header (``""`` without one)."""
    tag: str
    """The call's ``X-Tag`` header (``"?"`` without one), or what the logging code named it."""
    host: str
    """``$HOST_NAME`` of the process that answered (``"?"`` when unset)."""
    pid: int
    time: float
    body: str


def append(log: str, tag: str, body: str, key: str = "") -> None:
    """Log one call to the file ``log``."""
    host = os.environ.get("HOST_NAME", "?")
    line = f"{key}\t{tag}\t{host}\t{os.getpid()}\t{time.time():.6f}\t{body}\n"
    # one write of one line with O_APPEND: lines of concurrent processes never interleave
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read(log: Path) -> list[Call]:
    """Every call logged to ``log``, in the order they were written (none if it is missing)."""
    if not log.exists():
        return []
    calls = []
    for line in log.read_text().splitlines():
        key, tag, host, pid, when, body = line.split("\t", 5)
        calls.append(Call(key, tag, host, int(pid), float(when), body))
    return calls


def append_source() -> str:
    """Python source that defines :func:`append` with its imports, for a handler file."""
    return "import os\nimport time\n\n\n" + textwrap.dedent(inspect.getsource(append))


_HANDLE = '''

def handle(event, context):
    pause = float(os.environ.get("COUNT_SLEEP") or 0)
    if pause:
        time.sleep(pause)
    tag = event.headers.get("x-tag", "?")
    body = event.body.decode()
    append(os.environ["COUNT_LOG"], tag, body, event.headers.get("idempotency-key", ""))
    return body + "." + tag
'''


def counting_handler() -> str:
    """The source of a python3-http handler that sleeps ``$COUNT_SLEEP`` seconds (if set),
    logs the call to ``$COUNT_LOG`` and answers ``<body>.<X-Tag>``."""
    return append_source() + _HANDLE


def write_stack(directory: Path, flow: str, flow_source: str,
                count_environment: Mapping[str, str] | None) -> Path:
    """Write ``stack.yml`` and the handlers of a stack of two functions into ``directory``:
    the counting python3-http function ``count`` (:func:`counting_handler`) and the flow
    ``flow`` whose handler is ``flow_source``. ``count_environment`` is the function's
    ``environment:`` (it needs ``COUNT_LOG``); ``None`` gives it none, so it shares the flows'
    worker processes and a flow's call of it is served in the flow's own process."""
    for name, source in {"count": counting_handler(),
                         flow: textwrap.dedent(flow_source).lstrip()}.items():
        (directory / name).mkdir(parents=True, exist_ok=True)
        (directory / name / "handler.py").write_text(source)
    lines = ["functions:", "  count:", "    lang: python3-http", "    handler: ./count"]
    if count_environment is not None:
        lines.append("    environment:")
        lines += [f"      {key}: {json.dumps(str(value))}"
                  for key, value in count_environment.items()]
    lines += [f"  {flow}:", "    lang: faasflow", f"    handler: ./{flow}"]
    path = directory / "stack.yml"
    path.write_text("\n".join(lines) + "\n")
    return path
