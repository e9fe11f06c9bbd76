"""Discovery, configuration and the behaviour specific to the Consul store.

These run against ``consul_standin.py``, a stand-in for Consul's KV HTTP API (not a real
agent: none can be installed here).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from consul_standin import ConsulStandIn
from faasflow_consul.store import ConsulConfig, ConsulStateStore

from faasflow.backends import Kind
from faasflow.errors import BackendError, CompareFailed, ConfigurationError
from faasflow.plugins import Registry, make_plugin_manager
from faasflow.settings import Settings
from faasflow.testing import assert_backend_registered, assert_readme_documents, free_port


def build(environ: dict[str, str], secrets: Path | None = None) -> ConsulStateStore:
    """The store a process with ``environ`` gets for FAASFLOW_STATE_STORE=consul."""
    settings = Settings.from_env(
        {
            "FAASFLOW_STATE_STORE": "consul",
            "FAASFLOW_SECRET_MOUNT_PATH": str(secrets or "/nonexistent"),
            **environ,
        }
    )
    store = Registry(make_plugin_manager(settings)).create(Kind.STATE_STORE, settings)
    assert isinstance(store, ConsulStateStore)
    return store


def connect(standin: ConsulStandIn, **options: str) -> ConsulStateStore:
    return ConsulStateStore.from_options({"address": standin.address, **options}).scoped(
        "flow", "req"
    )


# -- discovery and options ------------------------------------------------------------------


def test_plugin_is_discovered_through_its_entry_point() -> None:
    registered = assert_backend_registered("state_store", "consul")
    assert registered.distribution == "faasflow-consul"
    assert "address" in registered.backend.options


def test_readme_documents_every_option_variable_and_secret() -> None:
    registered = assert_backend_registered("state_store", "consul")
    assert_readme_documents(registered.backend, Path(__file__).parents[1] / "README.md")


def test_consul_http_addr_and_token_are_honoured() -> None:
    store = build({"CONSUL_HTTP_ADDR": "https://consul.example:8501", "CONSUL_HTTP_TOKEN": "t1"})
    assert store.config.url == "https://consul.example:8501"
    assert store.config.token == "t1"


def test_faas_flow_consul_url_and_dc_are_honoured() -> None:
    store = build({"consul_url": "consul.faasflow:8500", "consul_dc": "dc7"})
    assert store.config.url == "http://consul.faasflow:8500"
    assert store.config.datacenter == "dc7"


def test_consul_http_ssl_turns_tls_on() -> None:
    store = build({"CONSUL_HTTP_ADDR": "10.0.0.1:8501", "CONSUL_HTTP_SSL": "true"})
    assert store.config.url == "https://10.0.0.1:8501"


def test_tls_files_are_passed_to_the_client(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("x")
    store = build(
        {
            "CONSUL_HTTP_ADDR": "https://10.0.0.1:8501",
            "CONSUL_CACERT": str(tmp_path / "ca.pem"),
            "CONSUL_CLIENT_CERT": str(tmp_path / "client.pem"),
            "CONSUL_CLIENT_KEY": str(tmp_path / "client.key"),
        }
    )
    assert store.config.verify == str(tmp_path / "ca.pem")
    assert store.config.cert == (str(tmp_path / "client.pem"), str(tmp_path / "client.key"))


def test_ssl_verify_false_disables_verification() -> None:
    store = build({"CONSUL_HTTP_ADDR": "https://h:1", "CONSUL_HTTP_SSL_VERIFY": "false"})
    assert store.config.verify is False


def test_token_comes_from_the_openfaas_secret(tmp_path: Path) -> None:
    (tmp_path / "consul-token").write_text("secret-token\n")
    assert build({}, tmp_path).config.token == "secret-token"


def test_token_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token\n")
    assert build({"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "token")}).config.token == "file-token"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"addr": "x"}, "unknown consul option(s) addr (from FAASFLOW_CONSUL_ADDR)"),
        ({"address": "unix:///tmp/consul.sock"}, "is not host:port or http(s)://host:port"),
        ({"address": "h:port"}, "is not host:port"),
        ({"consistency": "stale"}, "use consistent or default"),
        ({"timeout": "-1"}, "FAASFLOW_CONSUL_TIMEOUT='-1' must be a positive number"),
        ({"ssl": "sometimes"}, "FAASFLOW_CONSUL_SSL='sometimes' is not a boolean"),
        ({"ca_cert": "/nonexistent.pem"}, "FAASFLOW_CONSUL_CA_CERT='/nonexistent.pem'"),
        ({"client_key": "/etc/hostname"}, "without FAASFLOW_CONSUL_CLIENT_CERT"),
        ({"token_file": "/nonexistent"}, "FAASFLOW_CONSUL_TOKEN_FILE='/nonexistent'"),
    ],
)
def test_bad_options_raise_configuration_error_naming_the_variable(
    options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ConsulConfig.from_options(options)
    assert message in str(info.value)


# -- against the stand-in ---------------------------------------------------------------------


def test_update_is_a_true_compare_and_swap(standin: ConsulStandIn) -> None:
    # faas-flow compared, then wrote unconditionally: several racing writers could all succeed
    stores = [connect(standin) for _ in range(8)]
    stores[0].set("request-state", "v0")
    barrier = threading.Barrier(len(stores))
    winners: list[int] = []

    def race(index: int) -> None:
        barrier.wait(10)
        try:
            stores[index].update("request-state", "v0", f"w{index}")
            winners.append(index)
        except CompareFailed:
            pass

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(winners) == 1
    assert stores[0].get("request-state") == f"w{winners[0]}"


def test_keys_with_dot_segments_stay_inside_the_namespace(standin: ConsulStandIn) -> None:
    store = connect(standin)
    store.set("../escape", "x")
    store.set("./here", "y")
    store.set("a//b", "z")
    assert store.scan() == {"../escape": "x", "./here": "y", "a//b": "z"}
    assert all(key.startswith("faasflow/flow/req/") for key in standin.list_keys())
    assert len(standin.list_keys()) == 3


def test_cleanup_leaves_no_key_of_the_request(standin: ConsulStandIn) -> None:
    backend = ConsulStateStore.from_options({"address": standin.address})
    mine, neighbour = backend.scoped("flow", "r1"), backend.scoped("flow", "r10")
    for handle in (mine, neighbour):
        for index in range(20):
            handle.set(f"done--{index}", "1")
        handle.increment("0_4_n4")
    mine.cleanup()
    assert standin.list_keys("faasflow/flow/r1/") == []
    assert len(standin.list_keys("faasflow/flow/r10/")) == 21


def test_empty_value_round_trips_through_consuls_null(standin: ConsulStandIn) -> None:
    store = connect(standin)
    store.set("empty", "")
    assert store.get("empty") == ""
    store.update("empty", "", "filled")
    assert store.scan() == {"empty": "filled"}


def test_token_is_sent_and_accepted(token_standin: ConsulStandIn) -> None:
    store = connect(token_standin, token="s3cr3t")
    assert store.increment("n") == 1


def test_configured_token_wins_over_consul_http_token_in_the_environment(
    token_standin: ConsulStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # py-consul itself would let CONSUL_HTTP_TOKEN override the token it is given
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "stale-token")
    store = connect(token_standin, token="s3cr3t")
    store.set("k", "v")
    assert store.get("k") == "v"


def test_missing_token_raises_backend_error_naming_the_option(
    token_standin: ConsulStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    store = connect(token_standin)
    with pytest.raises(BackendError) as info:
        store.set("k", "v")
    assert info.value.endpoint == token_standin.url
    assert "permission denied" in str(info.value)
    assert "FAASFLOW_CONSUL_TOKEN" in str(info.value)


def test_unreachable_agent_raises_backend_error_naming_endpoint_and_operation() -> None:
    port = free_port()
    store = ConsulStateStore.from_options({"address": f"127.0.0.1:{port}"}).scoped("f", "r")
    with pytest.raises(BackendError) as info:
        store.create("done--n1", "1")
    error = info.value
    assert (error.backend, error.endpoint) == ("consul", f"http://127.0.0.1:{port}")
    assert str(error).startswith(
        f"consul create 'faasflow/f/r/done--n1' failed at http://127.0.0.1:{port}: "
        "cannot reach the Consul agent"
    )
    assert "CONSUL_HTTP_ADDR" in str(error)


def test_next_operation_after_a_restart_succeeds(standin: ConsulStandIn) -> None:
    store = connect(standin)
    store.set("k", "before")
    standin.restart()
    assert store.get("k") == "before"
    assert store.increment("n") == 1


def test_operation_after_an_outage_succeeds_once_the_agent_is_back(
    standin: ConsulStandIn,
) -> None:
    store = connect(standin)
    assert store.increment("n") == 1
    standin.stop()
    with pytest.raises(BackendError) as info:
        store.increment("n")
    assert "increment 'faasflow/flow/req/n'" in str(info.value)
    standin.start()
    assert store.increment("n") == 2


def test_unknown_datacenter_raises_backend_error(standin: ConsulStandIn) -> None:
    store = connect(standin, datacenter="mars")
    with pytest.raises(BackendError) as info:
        store.get("k")
    assert "No path to datacenter" in str(info.value)
