"""The conformance suite every faasflow backend passes.

A backend's tests subclass one contract and write one factory method::

    from faasflow.testing import StateStoreContract

    class TestRedisStateStore(StateStoreContract):
        def make_store(self):
            return RedisStateStore.from_options({"url": "redis://127.0.0.1:6379/0"})

The contracts are plain classes (no ``Test`` prefix), so pytest collects them only through a
subclass. An autouse fixture builds the backend, scopes it to a random flow and request, and
cleans up every namespace a test touched. Behaviour a backend cannot offer is switched off with
a class attribute (``supports_processes = False``), never by editing the suite.

Multi-process tests start children with the ``spawn`` method. A child imports the module that
defines the test class (by name, or from its file), makes a fresh instance, copies over the
attributes named in ``process_attributes`` (``workdir``, ``flow_name``, ``request_id`` and any
the subclass adds) and calls ``make_store()``. So ``make_store`` must depend only on those
attributes, class attributes and environment variables, never on fixtures.

One module per contract: :mod:`.state`, :mod:`.data`, :mod:`.index` (``scan_page`` and the
request index), :mod:`.tracer`, :mod:`.invoker` (against :mod:`.loopback`'s gateway), and
:mod:`.registration` for a plugin's installation checks. Import the names from here.
"""

from __future__ import annotations

from faasflow.testing.contracts._common import DIFFICULT_KEYS, DIFFICULT_TEXT
from faasflow.testing.contracts.data import DataStoreContract
from faasflow.testing.contracts.index import RequestIndexContract
from faasflow.testing.contracts.invoker import InvokerContract
from faasflow.testing.contracts.loopback import LoopbackServer, Received, free_port
from faasflow.testing.contracts.registration import (
    assert_backend_registered,
    assert_readme_documents,
)
from faasflow.testing.contracts.state import StateStoreContract
from faasflow.testing.contracts.tracer import TracerContract

__all__ = [
    "DIFFICULT_KEYS",
    "DIFFICULT_TEXT",
    "DataStoreContract",
    "InvokerContract",
    "LoopbackServer",
    "Received",
    "RequestIndexContract",
    "StateStoreContract",
    "TracerContract",
    "assert_backend_registered",
    "assert_readme_documents",
    "free_port",
]
