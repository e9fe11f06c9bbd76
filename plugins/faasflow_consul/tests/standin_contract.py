"""The Consul store under a conformance contract, against the KV stand-in (not a real agent)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest
from consul_standin import ConsulStandIn
from faasflow_consul.store import ConsulStateStore

from faasflow.interfaces import StateStore
from faasflow.testing import StateStoreContract


class OnStandIn:
    """Put before a store contract in the bases: one stand-in serves the whole test class, and
    ``make_store`` connects to it (in the contract's child processes too, which get
    ``address``)."""

    process_attributes: ClassVar[tuple[str, ...]] = (
        *StateStoreContract.process_attributes,
        "address",
    )
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
