"""The request-index contract for the Consul store, on the KV stand-in (not a real agent)."""

from __future__ import annotations

from standin_contract import OnStandIn

from faasflow.testing.contracts import RequestIndexContract


class TestConsulRequestIndexOnStandIn(OnStandIn, RequestIndexContract):
    pass
