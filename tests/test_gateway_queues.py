"""Queue kinds of the local gateway: how --queue is read, and the refusals of a queue shared by
several hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from faasflow.errors import ConfigurationError
from faasflow.runtime.queue import DurableQueue
from faasflow.runtime.queues import (
    QueueContext,
    QueueKind,
    check_multi_host,
    open_queue,
    parse_queue,
)
from faasflow.settings import Settings

SHARED = QueueKind("shared", lambda context: DurableQueue(context.data_dir / "q.db"),
                   shared="network")
LOCAL_STORES = {"FAASFLOW_STATE_STORE": "sqlite", "FAASFLOW_DATA_STORE": "filesystem"}


@pytest.mark.parametrize(("spec", "parsed"), [
    ("", ("sqlite", "")),
    ("sqlite", ("sqlite", "")),
    ("NATS", ("nats", "")),
    ("nats://h1:4222,h2:4222", ("nats", "nats://h1:4222,h2:4222")),
])
def test_a_queue_spec_names_a_kind_and_maybe_a_url(spec: str, parsed: tuple[str, str]) -> None:
    assert parse_queue(spec) == parsed


def test_the_default_queue_is_the_embedded_sqlite_file(tmp_path: Path) -> None:
    queue, kind = open_queue("", QueueContext("", tmp_path, 3, {}, "stack.yml"),
                             Settings.from_env({}))
    try:
        assert kind.name == "sqlite"
        assert queue.path == tmp_path / "queue.db"
    finally:
        queue.close()


def test_an_unknown_queue_kind_is_a_configuration_error_naming_the_known_ones(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown queue kind 'kafka' \(known: .*sqlite"):
        open_queue("kafka://h:9092", QueueContext("", tmp_path, 3, {}, "s"),
                   Settings.from_env({}))


def test_a_host_queue_accepts_host_local_stores() -> None:
    kind = QueueKind("local", SHARED.factory, shared="host")
    check_multi_host(kind, Settings.from_env({}), LOCAL_STORES, "/data/hmac-secret")


def test_a_shared_queue_refuses_a_host_local_state_store_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="FAASFLOW_STATE_STORE.*etcd or consul"):
        check_multi_host(SHARED, Settings.from_env({}), LOCAL_STORES, "FAASFLOW_HMAC_SECRET")


def test_a_shared_queue_refuses_a_process_local_data_store() -> None:
    environ = {"FAASFLOW_STATE_STORE": "sqlite", "FAASFLOW_DATA_STORE": "memory"}
    with pytest.raises(ConfigurationError, match="data store 'memory' is local to one process"):
        check_multi_host(SHARED, Settings.from_env({"FAASFLOW_SHARED_FILES": "1"}), environ,
                         "FAASFLOW_HMAC_SECRET")


def test_shared_files_let_a_shared_queue_use_file_stores_every_host_mounts() -> None:
    check_multi_host(SHARED, Settings.from_env({"FAASFLOW_SHARED_FILES": "1"}), LOCAL_STORES,
                     "FAASFLOW_HMAC_SECRET")


def test_a_shared_queue_refuses_a_key_generated_per_data_directory() -> None:
    with pytest.raises(ConfigurationError, match="set FAASFLOW_HMAC_SECRET"):
        check_multi_host(SHARED, Settings.from_env({"FAASFLOW_SHARED_FILES": "1"}),
                         LOCAL_STORES, "/data/hmac-secret")


def test_a_shared_queue_accepts_the_mounted_hmac_secret() -> None:
    check_multi_host(SHARED, Settings.from_env({"FAASFLOW_SHARED_FILES": "1"}), LOCAL_STORES,
                     "/var/openfaas/secrets/faasflow-hmac-secret")
