"""The sqlite stores keep a bounded pool of connections per process."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import pytest

from faasflow.default_plugins.sqlite import SqliteDataStore, SqliteStateStore
from faasflow.errors import BackendError, ConfigurationError


def _open_files(path: Path) -> int:
    """File descriptors of this process on ``path`` or its WAL/shared-memory files."""
    names = {str(path), f"{path}-wal", f"{path}-shm"}
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") in names:
                count += 1
        except OSError:
            continue
    return count


def _main_files(path: Path) -> int:
    return sum(
        1
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}") and _link(fd) == str(path)
    )


def _link(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def test_300_threads_hold_at_most_pool_size_connections(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    backend = SqliteStateStore.from_options({"path": str(path), "pool_size": "4"})
    barrier = threading.Barrier(300)
    errors: list[BaseException] = []
    peak = [0]

    def work(index: int) -> None:
        store = backend.scoped("f", f"r{index % 10}")
        try:
            barrier.wait(timeout=60)
            for step in range(5):
                store.increment("n")
                store.set(f"k{index}-{step}", "v")
                store.scan("k")
                peak[0] = max(peak[0], backend.db.open_connections)
        except BaseException as exc:
            errors.append(exc)

    done = threading.Event()
    files_seen: list[int] = []

    def sample() -> None:  # open descriptors of the database file, while the threads work
        while not done.is_set():
            files_seen.append(_main_files(path))

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    sampler.join()
    try:
        assert errors == []
        assert peak[0] <= 4
        assert len(files_seen) > 1
        assert 1 <= max(files_seen) <= 4
        assert _main_files(path) <= 4
        assert sum(int(backend.scoped("f", f"r{i}").get("n")) for i in range(10)) == 1500
    finally:
        backend.close()


def test_close_closes_every_pooled_connection(tmp_path: Path) -> None:
    path = tmp_path / "data.db"
    backend = SqliteDataStore.from_options({"path": str(path), "pool_size": "3"})
    threads = [
        threading.Thread(target=lambda i=i: backend.scoped("f", "r").set(f"k{i}", b"v"))
        for i in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= backend.db.open_connections <= 3
    backend.close()
    assert backend.db.open_connections == 0
    assert _open_files(path) == 0


def test_store_is_usable_after_close(tmp_path: Path) -> None:
    backend = SqliteStateStore.from_options({"path": str(tmp_path / "s.db")})
    store = backend.scoped("f", "r")
    store.set("k", "v")
    backend.close()
    assert store.get("k") == "v"
    backend.close()


def test_a_thread_waits_for_a_busy_connection_then_times_out_naming_the_option(
    tmp_path: Path,
) -> None:
    backend = SqliteStateStore.from_options(
        {"path": str(tmp_path / "s.db"), "pool_size": "1", "timeout": "0.2"}
    )
    try:
        with backend.db.connection(), pytest.raises(BackendError, match="POOL_SIZE"):
            backend.scoped("f", "r").set("k", "v")
        backend.scoped("f", "r").set("k", "v")  # the connection came back
    finally:
        backend.close()


@pytest.mark.parametrize("raw", ["0", "-1", "many", "1.5"])
def test_bad_pool_size_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="FAASFLOW_SQLITE_POOL_SIZE"):
        SqliteStateStore.from_options({"pool_size": raw})


def test_the_wal_stays_bounded_while_threads_write_without_pause(tmp_path: Path) -> None:
    # A checkpoint that ran beside the writers never caught up with them, so the WAL grew
    # without end (and every read slowed with it); it must be reset as it is checkpointed.
    path = tmp_path / "s.db"
    backend = SqliteStateStore.from_options({"path": str(path)})
    wal = Path(f"{path}-wal")
    peak = [0]
    done = threading.Event()

    def write(index: int) -> None:
        store = backend.scoped("f", f"r{index}")
        for step in range(2500):
            store.set(f"k{step}", "v" * 200)

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError):
                peak[0] = max(peak[0], wal.stat().st_size)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    writers = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    try:
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
    finally:
        done.set()
        sampler.join()
        backend.close()
    # 20,000 commits of a page or more each: about 80 MB of WAL had it never been reset
    assert 0 < peak[0] < 24 * 1024 * 1024


def test_a_write_of_one_thread_waits_for_another_threads_transaction(tmp_path: Path) -> None:
    backend = SqliteStateStore.from_options({"path": str(tmp_path / "s.db"), "timeout": "5"})
    store = backend.scoped("f", "r")
    order: list[str] = []
    try:
        with backend.db.transaction("test", "test") as conn:
            writer = threading.Thread(target=lambda: (store.set("k", "second"),
                                                      order.append("set")))
            writer.start()
            time.sleep(0.2)  # the set queues behind this transaction (no SQLITE_BUSY error)
            conn.execute(
                "INSERT INTO faasflow_state (key, value) VALUES (?, ?)",
                (store.namespace + "k", "first"),
            )
            order.append("transaction")
        writer.join(10)
        assert order == ["transaction", "set"]
        assert store.get("k") == "second"
    finally:
        backend.close()
