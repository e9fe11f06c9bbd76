"""Testing helpers for faasflow backends: the conformance contracts, private server processes
for outage tests, fault injection (:mod:`faasflow.testing.faults`), and a pytest plugin.

Install with ``pip install faasflow[testing]``; see ``docs/plugins/testing-backends.md``.
"""

from __future__ import annotations

from faasflow.testing.contracts import (
    DataStoreContract,
    InvokerContract,
    LoopbackServer,
    StateStoreContract,
    TracerContract,
    assert_backend_registered,
    assert_readme_documents,
    free_port,
)
from faasflow.testing.faults import (
    CountingFunctions,
    FailingStore,
    Faults,
    InjectedFault,
    RedeliveringQueue,
)
from faasflow.testing.servers import ServerProcess

__all__ = [
    "CountingFunctions",
    "DataStoreContract",
    "FailingStore",
    "Faults",
    "InjectedFault",
    "InvokerContract",
    "LoopbackServer",
    "RedeliveringQueue",
    "ServerProcess",
    "StateStoreContract",
    "TracerContract",
    "assert_backend_registered",
    "assert_readme_documents",
    "free_port",
]
