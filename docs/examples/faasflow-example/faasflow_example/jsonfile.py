"""``jsonfile``: a StateStore that keeps each request's keys in one JSON file.

``<path>/<flow>/<request>.json`` holds the whole namespace of a request as one JSON object.
Every operation takes an exclusive ``flock`` on ``<path>/<flow>/.lock``, reads the document,
changes it and writes it back with a temporary file plus ``os.replace``; so compare-and-swap,
create-if-absent and increment are atomic for every process on the machine. The lock file is
never deleted: deleting a lock file while another process waits on it breaks the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from faasflow import CompareFailed, KeyNotFound, Options, StateStore

DEFAULT_PATH = ".faasflow/jsonfile"


def _file_name(name: str) -> str:
    """``name`` as one safe file name: no separators, never ``.``/``..`` or hidden."""
    encoded = quote(name, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded or "%"


class JsonFileStateStore(StateStore):
    """StateStore on JSON files guarded by ``flock``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @classmethod
    def from_options(cls, options: Options) -> JsonFileStateStore:
        """Option ``path``: the directory of the JSON files."""
        return cls(options.get("path") or DEFAULT_PATH)

    @property
    def _file(self) -> Path:
        return self.root / _file_name(self.flow_name) / f"{_file_name(self.request_id)}.json"

    @contextlib.contextmanager
    def _document(self) -> Iterator[dict[str, str]]:
        """The request's keys, locked; changes are written back when the block ends."""
        path = self._file
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    document: dict[str, str] = json.loads(path.read_text("utf-8"))
                except FileNotFoundError:
                    document = {}
                before = dict(document)
                yield document
                if document != before:
                    self._write(path, document)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _write(path: Path, document: dict[str, str]) -> None:
        if not document:
            path.unlink(missing_ok=True)
            return
        temp = path.with_name(f".{uuid.uuid4().hex}.tmp")
        temp.write_text(json.dumps(document, ensure_ascii=False), "utf-8")
        os.replace(temp, path)

    def _where(self) -> str:
        return f"jsonfile state store {self._file}"

    def set(self, key: str, value: str) -> None:
        with self._document() as document:
            document[key] = value

    def get(self, key: str) -> str:
        with self._document() as document:
            if key not in document:
                raise KeyNotFound(key, self._where())
            return document[key]

    def update(self, key: str, old_value: str, new_value: str) -> None:
        with self._document() as document:
            if key not in document:
                raise KeyNotFound(key, self._where())
            if document[key] != old_value:
                raise CompareFailed(key, old_value, self._where())
            document[key] = new_value

    def create(self, key: str, value: str) -> bool:
        with self._document() as document:
            if key in document:
                return False
            document[key] = value
            return True

    def delete(self, key: str) -> None:
        with self._document() as document:
            document.pop(key, None)

    def scan(self, prefix: str = "") -> dict[str, str]:
        with self._document() as document:
            return {k: v for k, v in document.items() if k.startswith(prefix)}

    def cleanup(self) -> None:
        with self._document() as document:
            document.clear()

    def increment(self, key: str, by: int = 1) -> int:
        # One locked read-modify-write instead of the default create + CAS loop.
        with self._document() as document:
            value = int(document.get(key, "0")) + by
            document[key] = str(value)
            return value
