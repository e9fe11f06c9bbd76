"""The core conformance suite against the real etcd that .ci/services starts."""

from __future__ import annotations

import pytest
from etcd_server import shared_endpoints
from faasflow_etcd.store import EtcdStateStore

from faasflow.interfaces import StateStore
from faasflow.testing import StateStoreContract


@pytest.mark.integration
class TestEtcdStateStore(StateStoreContract):
    def make_store(self) -> StateStore:
        return EtcdStateStore.from_options({"endpoints": shared_endpoints()})
