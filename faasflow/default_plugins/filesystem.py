"""``filesystem``: a DataStore on a local directory; small values in one SQLite file beside it.

Layout under the root: ``.values.db``, a SQLite file (WAL) with one row per value, and
``<flow>/<request>/`` directories holding the values too large to keep in a row, every name
encoded so that any key is one safe file name. The row is the authority: it holds a small value
itself, or names the file that holds a large one. A large value is written to a file of a new
name first and its row switched to it in one statement afterwards, so a reader in any process
sees the old value or the new one, never half of one, and a process killed between the two
leaves only a file no row names (cleanup removes it with its request's directory).

Creating a file costs far more than a row (a new inode, a directory entry; most of a fan-out
branch's time on some file systems), and a branch's values are small, so one file per value is
kept for values above :data:`INLINE_LIMIT` only. Values written as ``<request>/<key>`` files by
earlier versions are still read and deleted.

With ``index`` off (``FAASFLOW_FILESYSTEM_INDEX=0``) every value is a file
``<request>/<key>``, written to a temporary name and moved into place with ``os.replace``, and
no SQLite file is opened: for a network file system shared by hosts, where SQLite's WAL (shared
memory) cannot work.

Cleanup deletes the request's rows, then renames its directory out of the way and deletes it;
it touches nothing else.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

import attrs

from faasflow.backends import Backend
from faasflow.default_plugins.sqlitedb import Database
from faasflow.errors import BackendError, ConfigurationError, KeyNotFound
from faasflow.hookspecs import hookimpl
from faasflow.interfaces import DataStore, Options

__all__ = ["INLINE_LIMIT", "FilesystemDataStore", "encode_name"]

DEFAULT_PATH = ".faasflow/data"
#: Values up to this many bytes are kept in their row; larger ones in a file of their own.
INLINE_LIMIT = 64 * 1024
_INDEX = ".values.db"  # dot-names are never produced by encode_name: no flow is called so
_TIMEOUT = 30.0
_BACKEND = "filesystem data store"
_TABLE = (
    "CREATE TABLE IF NOT EXISTS faasflow_values"
    " (key TEXT PRIMARY KEY NOT NULL, value BLOB, file TEXT)"
)
_PUT_INLINE = (
    "INSERT INTO faasflow_values (key, value, file) VALUES (?, ?, NULL)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE file IS NULL"
)
_PUT = (
    "INSERT INTO faasflow_values (key, value, file) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, file = excluded.file"
)

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


def _range(prefix: str) -> tuple[str, str]:
    """Bounds of the keys starting with ``prefix`` (a namespace, which ends with ``/``)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _index(root: Path) -> Database:
    return Database(root / _INDEX, _TABLE, timeout=_TIMEOUT)


def _flag(options: Options, name: str, default: bool) -> bool:
    raw = options.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(
        f"FAASFLOW_FILESYSTEM_{name.upper()}={options.get(name)!r} is not 1 or 0 "
        "(true/false, yes/no, on/off)"
    )


@attrs.define(eq=False, slots=False)
class FilesystemDataStore(DataStore):
    """DataStore on a local directory tree, safe for several processes."""

    handles_shareable = True  # a scoped handle holds only its namespace

    root: Path = attrs.field(converter=Path)
    #: False: one file per value and no SQLite file (a network file system shared by hosts,
    #: where SQLite's WAL cannot work).
    index: bool = True
    db: Database = attrs.field(
        init=False, default=attrs.Factory(lambda self: _index(self.root), takes_self=True)
    )

    @classmethod
    def from_options(cls, options: Options) -> FilesystemDataStore:
        """Options: ``path``, the root directory (default ``.faasflow/data``); ``index``
        (default 1), 0 for one file per value and no SQLite file."""
        return cls(options.get("path") or DEFAULT_PATH, _flag(options, "index", True))

    @property
    def directory(self) -> Path:
        """The directory holding this request's large values."""
        return self.root / encode_name(self.flow_name) / encode_name(self.request_id)

    def _legacy(self, key: str) -> Path:
        """Where versions before the index kept ``key``'s value."""
        return self.directory / encode_name(key)

    def _error(self, operation: str, path: Path, exc: OSError) -> BackendError:
        return BackendError(_BACKEND, operation, str(path), exc)

    def set(self, key: str, value: bytes) -> None:
        if not self.index:
            self._set_legacy(key, value)
            return
        full = self._namespace + key
        if len(value) <= INLINE_LIMIT:
            _, changed = self.db.execute("set", _BACKEND, _PUT_INLINE, (full, bytes(value)))
            if changed != 1:  # the key's value is in a file now: replace the row, drop the file
                self._put(full, bytes(value), None)
        else:
            self._set_file(key, full, value)

    def _set_file(self, key: str, full: str, value: bytes) -> None:
        for attempt in range(3):
            directory = self.directory
            # A new name for every write: no reader can open it before its row names it.
            name = f"{encode_name(key)}.{uuid.uuid4().hex}"
            path = directory / name
            try:
                directory.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as file:
                    file.write(value)
            except FileNotFoundError as exc:
                # A concurrent cleanup removed the directory between mkdir and open.
                if attempt == 2:
                    raise self._error("set", path, exc) from exc
                continue
            except OSError as exc:
                self._drop(path)
                raise self._error("set", path, exc) from exc
            self._put(full, None, name)
            if path.exists():
                return
            # A concurrent cleanup took the file after it was written: write it again.
        raise self._error("set", self.directory, FileNotFoundError("directory removed"))

    def _set_legacy(self, key: str, value: bytes) -> None:
        target = self._legacy(key)
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
                self._drop(temp)
                if attempt == 2:
                    raise self._error("set", target, exc) from exc
            except OSError as exc:
                self._drop(temp)
                raise self._error("set", target, exc) from exc

    def _put(self, full: str, value: bytes | None, name: str | None) -> None:
        with self.db.transaction("set", _BACKEND) as conn:
            row = conn.execute(
                "SELECT file FROM faasflow_values WHERE key = ?", (full,)
            ).fetchone()
            conn.execute(_PUT, (full, value, name))
        if row is not None and row[0] is not None and row[0] != name:
            self._drop(self.directory / str(row[0]))

    def _drop(self, path: Path) -> None:
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise self._error("delete", path, exc) from exc

    def get(self, key: str) -> bytes:
        if not self.index:
            return self._get_legacy(key)
        full = self._namespace + key
        for _ in range(10):
            rows = self.db.query(
                "get", _BACKEND, "SELECT value, file FROM faasflow_values WHERE key = ?", (full,)
            )
            if not rows:
                return self._get_legacy(key)
            value, name = rows[0]
            if name is None:
                return bytes(value)
            path = self.directory / str(name)
            try:
                return path.read_bytes()
            except FileNotFoundError:
                continue  # replaced (and its file deleted) since the row was read: read again
            except OSError as exc:
                raise self._error("get", path, exc) from exc
        raise KeyNotFound(key, f"filesystem data store {self.directory}")

    def _get_legacy(self, key: str) -> bytes:
        path = self._legacy(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFound(key, f"filesystem data store {self.directory}") from None
        except OSError as exc:
            raise self._error("get", path, exc) from exc

    def delete(self, key: str) -> None:
        if not self.index:
            self._drop(self._legacy(key))
            return
        full = self._namespace + key
        # A fan-out's branches delete inputs that were never stored here; while another thread
        # holds the write lock, a read (which never waits) spares the queue for it.
        if not self.db.writing or self.db.query(
            "delete", _BACKEND, "SELECT 1 FROM faasflow_values WHERE key = ?", (full,)
        ):
            # One statement whether the row holds the value or names its file.
            rows, _ = self.db.execute(
                "delete", _BACKEND,
                "DELETE FROM faasflow_values WHERE key = ? RETURNING file", (full,),
            )
            if rows and rows[0][0] is not None:
                self._drop(self.directory / str(rows[0][0]))
        self._drop(self._legacy(key))

    def cleanup(self) -> None:
        if self.index:
            low, high = _range(self._namespace)
            self.db.execute(
                "cleanup", _BACKEND,
                "DELETE FROM faasflow_values WHERE key >= ? AND key < ?", (low, high),
            )
        directory = self.directory
        trash = directory.parent / f".trash-{uuid.uuid4().hex}"
        try:
            os.rename(directory, trash)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error("cleanup", directory, exc) from exc
        shutil.rmtree(trash, ignore_errors=True)

    def close(self) -> None:
        self.db.close()


@hookimpl
def faasflow_data_stores() -> Iterable[Backend]:
    yield Backend(
        "filesystem",
        FilesystemDataStore.from_options,
        summary=(
            "Local directory: small values in one SQLite file, large ones a file each; safe "
            "for several processes."
        ),
        options={
            "path": f"root directory, created as needed (default {DEFAULT_PATH})",
            "index": (
                "1: values up to 64 KiB in the SQLite file .values.db under the root (default);"
                " 0: one file per value (a network file system shared by hosts)"
            ),
        },
        shared="host",
    )
