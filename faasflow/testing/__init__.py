"""Testing helpers for faasflow backends: the conformance contracts and a pytest plugin.

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
    free_port,
)

__all__ = [
    "DataStoreContract",
    "InvokerContract",
    "LoopbackServer",
    "StateStoreContract",
    "TracerContract",
    "assert_backend_registered",
    "free_port",
]
