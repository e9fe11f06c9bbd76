"""The plugin is found through its entry point and documents its options."""

from __future__ import annotations

from pathlib import Path

from faasflow_nats import backend_record

from faasflow.runtime.queues import queue_kinds
from faasflow.settings import Settings
from faasflow.testing import assert_readme_documents


def test_the_nats_queue_kind_is_found_through_the_entry_point() -> None:
    kinds = queue_kinds(Settings.from_env({}))
    assert kinds["nats"].shared == "network"
    assert "sqlite" in kinds


def test_readme_documents_every_option_and_variable() -> None:
    assert_readme_documents(backend_record(), Path(__file__).parents[1] / "README.md")
