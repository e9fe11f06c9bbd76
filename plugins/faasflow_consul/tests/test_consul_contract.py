"""The core conformance suite for the Consul store.

No Consul agent can be installed on the build machine, so the suite runs against
``consul_standin.py``, a STAND-IN that implements the KV HTTP API with Consul's semantics (it is
not Consul). The same suite runs against a real agent whenever ``CONSUL_HTTP_ADDR`` is set.
"""

from __future__ import annotations

import os

import pytest
from standin_contract import OnStandIn

from faasflow.backends import Kind
from faasflow.interfaces import StateStore
from faasflow.plugins import Registry, make_plugin_manager
from faasflow.settings import Settings
from faasflow.testing import StateStoreContract


class TestConsulStateStoreOnStandIn(OnStandIn, StateStoreContract):
    """Against the KV stand-in (not a real Consul agent)."""


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

