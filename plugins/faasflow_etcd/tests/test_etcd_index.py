"""The request-index contract (scan_page as one ranged etcd read) against the real etcd."""

from __future__ import annotations

import pytest
from etcd_server import shared_endpoints
from faasflow_etcd.store import EtcdStateStore

from faasflow.interfaces import StateStore
from faasflow.testing.contracts import RequestIndexContract


@pytest.mark.integration
class TestEtcdRequestIndex(RequestIndexContract):
    def make_store(self) -> StateStore:
        return EtcdStateStore.from_options({"endpoints": shared_endpoints()})
