"""The filesystem data store: small values in its SQLite file, large ones a file each, named by
their row; values of earlier versions still read; a writer killed mid-write loses nothing."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from faasflow.default_plugins.filesystem import INLINE_LIMIT, FilesystemDataStore, encode_name
from faasflow.errors import ConfigurationError, KeyNotFound
from faasflow.testing import DataStoreContract

SMALL = b"s" * 100
LARGE = b"L" * (INLINE_LIMIT + 1)


@pytest.fixture
def backend(tmp_path: Path):
    store = FilesystemDataStore.from_options({"path": str(tmp_path / "data")})
    yield store
    store.close()


def _files(store: FilesystemDataStore) -> list[str]:
    directory = store.directory
    return sorted(os.listdir(directory)) if directory.exists() else []


def test_a_small_value_creates_no_file(backend: FilesystemDataStore) -> None:
    store = backend.scoped("flow", "r1")
    store.set("k", SMALL)
    assert store.get("k") == SMALL
    assert not store.directory.exists()


def test_a_large_value_lives_in_one_file(backend: FilesystemDataStore) -> None:
    store = backend.scoped("flow", "r1")
    store.set("k", LARGE)
    assert store.get("k") == LARGE
    assert len(_files(store)) == 1


def test_overwriting_a_large_value_leaves_one_file(backend: FilesystemDataStore) -> None:
    store = backend.scoped("flow", "r1")
    store.set("k", LARGE)
    store.set("k", LARGE + b"2")
    assert store.get("k") == LARGE + b"2"
    assert len(_files(store)) == 1


def test_a_small_value_over_a_large_one_removes_its_file(backend: FilesystemDataStore) -> None:
    store = backend.scoped("flow", "r1")
    store.set("k", LARGE)
    store.set("k", SMALL)
    assert store.get("k") == SMALL
    assert _files(store) == []


def test_a_large_value_over_a_small_one_is_read_back(backend: FilesystemDataStore) -> None:
    store = backend.scoped("flow", "r1")
    store.set("k", SMALL)
    store.set("k", LARGE)
    assert store.get("k") == LARGE


def test_delete_removes_a_large_value_and_its_file(backend: FilesystemDataStore) -> None:
    store = backend.scoped("flow", "r1")
    store.set("k", LARGE)
    store.delete("k")
    with pytest.raises(KeyNotFound):
        store.get("k")
    assert _files(store) == []


def test_a_value_written_by_an_earlier_version_is_read_and_deleted(
    backend: FilesystemDataStore,
) -> None:
    store = backend.scoped("flow", "r1")
    store.directory.mkdir(parents=True)
    (store.directory / encode_name("old key")).write_bytes(b"from before")
    assert store.get("old key") == b"from before"
    store.delete("old key")
    with pytest.raises(KeyNotFound):
        store.get("old key")


def test_a_new_value_hides_one_of_an_earlier_version(backend: FilesystemDataStore) -> None:
    store = backend.scoped("flow", "r1")
    store.directory.mkdir(parents=True)
    (store.directory / encode_name("k")).write_bytes(b"from before")
    store.set("k", SMALL)
    assert store.get("k") == SMALL
    store.delete("k")
    with pytest.raises(KeyNotFound):
        store.get("k")


def test_cleanup_removes_the_rows_and_files_of_its_request_only(
    backend: FilesystemDataStore,
) -> None:
    mine, other = backend.scoped("flow", "r1"), backend.scoped("flow", "r10")
    for store in (mine, other):
        store.set("small", SMALL)
        store.set("large", LARGE)
    mine.cleanup()
    for key in ("small", "large"):
        with pytest.raises(KeyNotFound):
            mine.get(key)
    assert not mine.directory.exists()
    assert other.get("small") == SMALL
    assert other.get("large") == LARGE


def _write_for_ever(root: str, ready: multiprocessing.synchronize.Event) -> None:
    store = FilesystemDataStore.from_options({"path": root}).scoped("flow", "r1")
    index = 0
    while True:
        value = (SMALL if index % 2 else LARGE)[:-8] + b"%08d" % index
        store.set("k", value)
        index += 1
        if index == 2:
            ready.set()


def _whole(value: bytes) -> bool:
    body, number = value[:-8], value[-8:]
    return number.isdigit() and body in (SMALL[:-8], LARGE[:-8])


def test_a_writer_killed_mid_write_leaves_a_whole_value(tmp_path: Path) -> None:
    root = str(tmp_path / "data")
    context = multiprocessing.get_context("spawn")
    reader = FilesystemDataStore.from_options({"path": root}).scoped("flow", "r1")
    try:
        for round_ in range(5):
            ready = context.Event()
            writer = context.Process(target=_write_for_ever, args=(root, ready))
            writer.start()
            assert ready.wait(60), "the writer did not start"
            time.sleep(0.01 * (round_ + 1))
            assert writer.pid is not None
            os.kill(writer.pid, signal.SIGKILL)
            writer.join(10)
            assert _whole(reader.get("k"))
    finally:
        reader.close()


class TestFilesystemDataStoreWithoutIndex(DataStoreContract):
    """FAASFLOW_FILESYSTEM_INDEX=0: one file per value, no SQLite file."""

    def make_store(self):
        return FilesystemDataStore.from_options(
            {"path": str(self.workdir / "data"), "index": "0"}
        )


def test_without_index_every_value_is_a_file_and_no_sqlite_file_is_made(tmp_path: Path) -> None:
    backend = FilesystemDataStore.from_options({"path": str(tmp_path / "data"), "index": "off"})
    store = backend.scoped("flow", "r1")
    store.set("k", SMALL)
    assert store.get("k") == SMALL
    assert _files(store) == [encode_name("k")]
    assert not any(name.startswith(".values.db") for name in os.listdir(tmp_path / "data"))


def test_a_bad_index_flag_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="FAASFLOW_FILESYSTEM_INDEX"):
        FilesystemDataStore.from_options({"index": "maybe"})
