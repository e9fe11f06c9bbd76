"""``faasflow up --watch``: notice edits of the stack file and of the handlers.

Polling, not inotify: it works on every platform and file system (bind mounts, network
shares), and a stack's handler directories are small. A change is acted on once the files have
been quiet for a moment, so an editor's save-in-several-writes reloads once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["Watcher", "snapshot"]

log = logging.getLogger("faasflow.gateway")

_SKIP_DIRS = frozenset({"__pycache__", ".git", ".faasflow", "node_modules", ".venv", "build"})


def snapshot(paths: Iterable[Path]) -> dict[str, tuple[float, int]]:
    """Modification time and size of each file under ``paths`` (files or directories)."""
    found: dict[str, tuple[float, int]] = {}
    for root in paths:
        if root.is_file():
            info = root.stat()
            found[str(root)] = (info.st_mtime, info.st_size)
            continue
        for directory, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
            for name in files:
                if name.endswith((".pyc", ".swp", "~")):
                    continue
                path = os.path.join(directory, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                found[path] = (info.st_mtime, info.st_size)
    return found


class Watcher:
    """Calls ``on_change()`` from its own thread after the files of ``paths()`` changed."""

    def __init__(self, paths: Callable[[], Iterable[Path]], on_change: Callable[[], object],
                 stop: threading.Event, interval: float = 0.5, quiet: float = 0.3) -> None:
        self.paths = paths
        self.on_change = on_change
        self.stop = stop
        self.interval = interval
        self.quiet = quiet
        self._thread = threading.Thread(target=self._run, daemon=True, name="faasflow-watch")

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        seen = snapshot(self.paths())
        while not self.stop.wait(self.interval):
            now = snapshot(self.paths())
            if now == seen:
                continue
            while not self.stop.wait(self.quiet):  # until the writes settle
                settled = snapshot(self.paths())
                if settled == now:
                    break
                now = settled
            changed = sorted(set(now.items()) ^ set(seen.items()))
            log.warning("%s changed; reloading", changed[0][0] if changed else "a file")
            try:
                self.on_change()
            except Exception:  # a failed reload must not end the watching
                log.exception("reloading failed")
            seen = snapshot(self.paths())
