"""Every conformance contract against every built-in backend."""

from __future__ import annotations

from faasflow.default_plugins.memory import MemoryDataStore, MemoryStateStore
from faasflow.testing import DataStoreContract, StateStoreContract


class TestMemoryStateStore(StateStoreContract):
    supports_processes = False

    def make_store(self):
        return MemoryStateStore.from_options({})


class TestMemoryDataStore(DataStoreContract):
    supports_processes = False

    def make_store(self):
        return MemoryDataStore.from_options({})
