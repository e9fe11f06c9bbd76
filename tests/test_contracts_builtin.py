"""Every conformance contract against every built-in backend."""

from __future__ import annotations

import logging

import pytest

from faasflow.default_plugins.filesystem import FilesystemDataStore
from faasflow.default_plugins.invokers import LocalInvoker, OpenFaasInvoker
from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.default_plugins.sqlite import SqliteDataStore, SqliteStateStore
from faasflow.default_plugins.tracers import LogTracer, NoTracer
from faasflow.testing import (
    DataStoreContract,
    InvokerContract,
    StateStoreContract,
    TracerContract,
    assert_backend_registered,
)


class TestMemoryStateStore(StateStoreContract):
    supports_processes = False

    def make_store(self):
        return MemoryStateStore.from_options({})


class TestMemoryDataStore(DataStoreContract):
    supports_processes = False

    def make_store(self):
        return MemoryDataStore.from_options({})


class TestSqliteStateStore(StateStoreContract):
    def make_store(self):
        return SqliteStateStore.from_options({"path": str(self.workdir / "state.db")})


class TestSqliteDataStore(DataStoreContract):
    def make_store(self):
        return SqliteDataStore.from_options({"path": str(self.workdir / "data.db")})


class TestSqliteDataStoreSharingTheStateFile(DataStoreContract):
    """Both sqlite stores may point at one file (FAASFLOW_SQLITE_PATH sets both)."""

    def make_store(self):
        state = SqliteStateStore.from_options({"path": str(self.workdir / "one.db")})
        state.scoped("f", "r").set("k", "v")
        state.close()
        return SqliteDataStore.from_options({"path": str(self.workdir / "one.db")})


class TestFilesystemDataStore(DataStoreContract):
    def make_store(self):
        return FilesystemDataStore.from_options({"path": str(self.workdir / "data")})


class TestNoTracer(TracerContract):
    def make_tracer(self):
        return NoTracer.from_options({})


class TestLogTracer(TracerContract):
    @pytest.fixture(autouse=True)
    def _log_everything(self, caplog):
        caplog.set_level(logging.DEBUG, logger="faasflow.trace")

    def make_tracer(self):
        return LogTracer.from_options({"level": "debug"})


class TestOpenFaasInvoker(InvokerContract):
    def make_invoker(self, base_url):
        return OpenFaasInvoker.from_options({"gateway_url": base_url})


class TestLocalInvokerOverGateway(InvokerContract):
    """Names the local invoker does not know go to the gateway."""

    def make_invoker(self, base_url):
        return LocalInvoker.from_options({"gateway_url": base_url})


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("state_store", "memory"),
        ("state_store", "sqlite"),
        ("data_store", "memory"),
        ("data_store", "sqlite"),
        ("data_store", "filesystem"),
        ("tracer", "none"),
        ("tracer", "log"),
        ("invoker", "local"),
        ("invoker", "openfaas"),
        ("invoker", "http"),
    ],
)
def test_builtin_backend_is_registered(kind, name):
    entry = assert_backend_registered(kind, name)
    assert entry.distribution == "faasflow (built-in)"
    assert entry.backend.summary


def _in_forked_child(work) -> int:
    """Run ``work()`` in a forked child; return its exit code (0 when it returned True)."""
    import os
    import warnings

    with warnings.catch_warnings():
        # Python 3.12+ warns about fork in a process with threads; the child only runs `work`.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if work() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_sqlite_store_opens_its_own_connection_after_fork(tmp_path):
    store = SqliteStateStore.from_options({"path": str(tmp_path / "state.db")}).scoped("f", "r")
    store.set("counter", "1")
    with store.db.connection() as inherited:
        pass

    def child():
        with store.db.connection() as conn:
            fresh = conn is not inherited
        store.increment("counter")
        return fresh

    try:
        assert _in_forked_child(child) == 0
        with store.db.connection() as conn:
            assert conn is inherited
        assert store.increment("counter") == 3
    finally:
        store.close()
