"""A flow refuses stores that cannot reach every process or replica serving it, naming the
variable to change; each built-in and plugin store declares how far it is shared."""

from __future__ import annotations

import io
from typing import Any

import pytest

from faasflow.backends import Backend, Kind
from faasflow.errors import ConfigurationError
from faasflow.plugins import Registry
from faasflow.runtime.app import FlowApp
from faasflow.runtime.deployment import check_stores
from faasflow.settings import Settings


def settings(**environ: str) -> Settings:
    return Settings.from_env(environ)


@pytest.mark.parametrize(("kind", "name", "shared"), [
    (Kind.STATE_STORE, "memory", "process"),
    (Kind.DATA_STORE, "memory", "process"),
    (Kind.STATE_STORE, "sqlite", "host"),
    (Kind.DATA_STORE, "sqlite", "host"),
    (Kind.DATA_STORE, "filesystem", "host"),
])
def test_built_in_stores_declare_how_far_they_are_shared(kind: Kind, name: str,
                                                         shared: str) -> None:
    assert Registry.shared(Settings()).get(kind, name).backend.shared == shared


@pytest.mark.parametrize(("kind", "name"), [(Kind.STATE_STORE, "etcd"),
                                            (Kind.STATE_STORE, "consul"),
                                            (Kind.DATA_STORE, "minio")])
def test_network_store_plugins_declare_network(kind: Kind, name: str) -> None:
    registry = Registry.shared(Settings())
    if name not in registry.backends(kind):
        pytest.skip(f"the {name} plugin is not installed")
    assert registry.get(kind, name).backend.shared == "network"


def test_a_store_that_does_not_declare_is_taken_for_one_process() -> None:
    assert Backend("third", lambda options: None).shared == "process"


def test_an_unknown_sharing_word_is_refused() -> None:
    with pytest.raises(ValueError, match="shared"):
        Backend("third", lambda options: None, shared="cluster")  # type: ignore[arg-type]


def test_one_process_may_use_memory_stores() -> None:
    check_stores(settings(), processes=1)


def test_several_processes_refuse_a_memory_state_store_naming_its_variable() -> None:
    with pytest.raises(ConfigurationError, match=r"3 worker processes.*FAASFLOW_STATE_STORE"):
        check_stores(settings(), processes=3)


def test_several_processes_refuse_a_memory_data_store_naming_its_variable() -> None:
    with pytest.raises(ConfigurationError, match="FAASFLOW_DATA_STORE"):
        check_stores(settings(FAASFLOW_STATE_STORE="sqlite"), processes=2)


def test_several_processes_on_one_host_may_share_sqlite_and_files() -> None:
    check_stores(settings(FAASFLOW_STATE_STORE="sqlite", FAASFLOW_DATA_STORE="filesystem"),
                 processes=4)


def test_several_replicas_refuse_a_host_local_store() -> None:
    with pytest.raises(ConfigurationError, match=r"FAASFLOW_REPLICAS=2.*FAASFLOW_STATE_STORE"):
        check_stores(settings(FAASFLOW_STATE_STORE="sqlite", FAASFLOW_DATA_STORE="filesystem",
                              FAASFLOW_REPLICAS="2"))


def test_a_flow_app_refuses_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="FAASFLOW_STATE_STORE"):
        FlowApp(lambda flow, context: None, settings(), processes=2)


def test_a_multiprocess_wsgi_server_gets_the_check_on_the_first_request() -> None:
    app = FlowApp(lambda flow, context: flow.sync_node(), settings(FAASFLOW_FLOW_NAME="mp"))
    answered: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
        answered.append(status)
        return lambda data: None

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "QUERY_STRING": "",
               "CONTENT_LENGTH": "1", "wsgi.input": io.BytesIO(b"x"), "wsgi.multiprocess": True}
    body = b"".join(app(environ, start_response))
    app.close()
    assert answered == ["500 Internal Server Error"]
    assert b"FAASFLOW_STATE_STORE" in body
