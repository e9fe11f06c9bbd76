"""``filesystem``: a DataStore that keeps each value in its own file.

Layout: ``<path>/<flow>/<request>/<key>``, every part encoded so that any key is one safe file
name. A value is written to a temporary file and moved into place with ``os.replace``, so a
reader in any process sees either the old value or the new one, never half of one. Cleanup
renames the request's directory out of the way before deleting it, and touches nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

import attrs

from faasflow.backends import Backend
from faasflow.errors import BackendError, KeyNotFound
from faasflow.hookspecs import hookimpl
from faasflow.interfaces import DataStore, Options

__all__ = ["FilesystemDataStore", "encode_name"]

DEFAULT_PATH = ".faasflow/data"

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_MAX_NAME = 200  # bytes; file systems allow 255


def encode_name(name: str) -> str:
    """A file name for ``name``: letters, digits, ``_`` and ``-`` stay, every other character
    becomes ``%XX`` escapes of its UTF-8 bytes, so no name is ``.``, ``..``, hidden, or holds a
    separator. Names too long for a file system become ``~`` plus their SHA-256 (``~`` is never
    produced otherwise, so the mapping stays one-to-one)."""
    encoded = "".join(
        char if char in _PLAIN else "".join(f"%{byte:02X}" for byte in char.encode())
        for char in name
    )
    if not encoded:
        return "%"  # the empty name; a lone "%" is not produced otherwise
    if len(encoded) > _MAX_NAME:
        return "~" + hashlib.sha256(name.encode()).hexdigest()
    return encoded


@attrs.define(eq=False, slots=False)
class FilesystemDataStore(DataStore):
    """DataStore on a local directory tree, safe for several processes."""

    root: Path = attrs.field(converter=Path)

    @classmethod
    def from_options(cls, options: Options) -> FilesystemDataStore:
        """Options: ``path``, the root directory (default ``.faasflow/data``)."""
        return cls(options.get("path") or DEFAULT_PATH)

    @property
    def directory(self) -> Path:
        """The directory holding this request's values."""
        return self.root / encode_name(self.flow_name) / encode_name(self.request_id)

    def _file(self, key: str) -> Path:
        return self.directory / encode_name(key)

    def _error(self, operation: str, path: Path, exc: OSError) -> BackendError:
        return BackendError("filesystem data store", operation, str(path), exc)

    def set(self, key: str, value: bytes) -> None:
        target = self._file(key)
        # Dot-names are never produced by encode_name, so temporary files never shadow a key.
        temp = target.parent / f".tmp-{uuid.uuid4().hex}"
        for attempt in range(3):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(temp, "wb") as file:
                    file.write(value)
                os.replace(temp, target)
                return
            except FileNotFoundError as exc:
                # A concurrent cleanup removed the directory between mkdir and replace.
                with contextlib.suppress(OSError):
                    temp.unlink()
                if attempt == 2:
                    raise self._error("set", target, exc) from exc
            except OSError as exc:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise self._error("set", target, exc) from exc

    def get(self, key: str) -> bytes:
        path = self._file(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyNotFound(key, f"filesystem data store {self.directory}") from None
        except OSError as exc:
            raise self._error("get", path, exc) from exc

    def delete(self, key: str) -> None:
        path = self._file(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._error("delete", path, exc) from exc

    def cleanup(self) -> None:
        directory = self.directory
        trash = directory.parent / f".trash-{uuid.uuid4().hex}"
        try:
            os.rename(directory, trash)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error("cleanup", directory, exc) from exc
        shutil.rmtree(trash, ignore_errors=True)


@hookimpl
def faasflow_data_stores() -> Iterable[Backend]:
    yield Backend(
        "filesystem",
        FilesystemDataStore.from_options,
        summary="One file per value under a local directory; safe for several processes.",
        options={"path": f"root directory, created as needed (default {DEFAULT_PATH})"},
        shared="host",
    )
