"""The request-index contract against the built-in state stores."""

from __future__ import annotations

from faasflow.default_plugins.memory import MemoryStateStore
from faasflow.default_plugins.sqlite import SqliteStateStore
from faasflow.interfaces import StateStore
from faasflow.testing.contracts import RequestIndexContract


class TestMemoryRequestIndex(RequestIndexContract):
    supports_processes = False

    def make_store(self) -> StateStore:
        return MemoryStateStore.from_options({})


class TestSqliteRequestIndex(RequestIndexContract):
    def make_store(self) -> StateStore:
        return SqliteStateStore.from_options({"path": str(self.workdir / "state.db")})
