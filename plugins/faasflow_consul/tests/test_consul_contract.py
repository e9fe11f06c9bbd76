"""The core conformance suite for the Consul store.

No Consul agent can be installed on the build machine, so the suite runs against
``consul_standin.py``, a STAND-IN that implements the KV HTTP API with Consul's semantics (it is
not Consul). The same suite runs against a real agent whenever ``CONSUL_HTTP_ADDR`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from consul_standin import ConsulStandIn
from faasflow_consul.store import ConsulStateStore

from faasflow.backends import Kind
from faasflow.interfaces import StateStore
from faasflow.plugins import Registry, make_plugin_manager
from faasflow.settings import Settings
from faasflow.testing import StateStoreContract


class TestConsulStateStoreOnStandIn(StateStoreContract):
    """Against the KV stand-in (not a real Consul agent)."""

    process_attributes = (*StateStoreContract.process_attributes, "address")
    address: str

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _standin(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        standin = ConsulStandIn(tmp_path_factory.mktemp("consul"), keep_state=False)
        standin.start()
        cls.address = standin.address
        try:
            yield
        finally:
            standin.stop()

    def make_store(self) -> StateStore:
        return ConsulStateStore.from_options({"address": self.address})


@pytest.mark.integration
@pytest.mark.skipif(
    not os.environ.get("CONSUL_HTTP_ADDR"),
    reason="CONSUL_HTTP_ADDR is not set: no real Consul agent to test against (none can be "
    "installed here; the stand-in tests above cover the KV semantics)",
)
class TestConsulStateStoreOnRealAgent(StateStoreContract):
    """Against the real agent named by CONSUL_HTTP_ADDR (with CONSUL_HTTP_TOKEN, CONSUL_CACERT
    and the other CONSUL_* variables), configured exactly as a user's process would be."""

    def make_store(self) -> StateStore:
        settings = Settings.from_env().with_backends(state_store="consul")
        registry = Registry(make_plugin_manager(settings))
        store: StateStore = registry.create(Kind.STATE_STORE, settings)
        return store

