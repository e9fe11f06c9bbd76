"""Discovery, configuration and the behaviour specific to the etcd store."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pyetcd
import pytest
from etcd_server import EtcdServer, etcd_store, shared_endpoints
from faasflow_etcd.store import EtcdConfig, EtcdStateStore

from faasflow.backends import Kind
from faasflow.errors import BackendError, ConfigurationError
from faasflow.plugins import Registry, make_plugin_manager
from faasflow.settings import Settings
from faasflow.testing import assert_backend_registered, assert_readme_documents, free_port


def build(environ: dict[str, str], tmp_path: Path | None = None) -> EtcdStateStore:
    """The store a process with ``environ`` gets for FAASFLOW_STATE_STORE=etcd."""
    settings = Settings.from_env(
        {
            "FAASFLOW_STATE_STORE": "etcd",
            "FAASFLOW_SECRET_MOUNT_PATH": str(tmp_path or "/nonexistent"),
            **environ,
        }
    )
    store = Registry(make_plugin_manager(settings)).create(Kind.STATE_STORE, settings)
    assert isinstance(store, EtcdStateStore)
    return store


def raw_client(endpoint: str) -> pyetcd.MultiEndpointEtcd3Client:
    host, port = endpoint.rsplit("/", 1)[-1].split(",", maxsplit=1)[0].rsplit(":", 1)
    return pyetcd.client(host, int(port))


# -- discovery and options ------------------------------------------------------------------


def test_plugin_is_discovered_through_its_entry_point() -> None:
    registered = assert_backend_registered("state_store", "etcd")
    assert registered.distribution == "faasflow-etcd"
    assert "endpoints" in registered.backend.options


def test_readme_documents_every_option_variable_and_secret() -> None:
    registered = assert_backend_registered("state_store", "etcd")
    assert_readme_documents(registered.backend, Path(__file__).parents[1] / "README.md")


def test_plugin_is_listed_by_the_cli() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "faasflow", "plugins"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert "etcd" in listing.stdout
    assert "faasflow-etcd" in listing.stdout


def test_state_store_setting_selects_etcd_with_its_endpoints() -> None:
    store = build({"FAASFLOW_ETCD_ENDPOINTS": "10.1.2.3:2381,http://10.1.2.4"})
    assert store.config.endpoints == (("10.1.2.3", 2381), ("10.1.2.4", 2379))
    assert store.config.tls is False


def test_etcdctl_variables_are_honoured() -> None:
    store = build(
        {"ETCDCTL_ENDPOINTS": "https://10.9.9.9:2379", "ETCDCTL_USER": "alice:secret"}
    )
    assert store.config.endpoints == (("10.9.9.9", 2379),)
    assert store.config.tls is True
    assert (store.config.user, store.config.password) == ("alice", "secret")


def test_faasflow_variable_wins_over_etcdctl_variable() -> None:
    store = build({"ETCDCTL_ENDPOINTS": "10.0.0.1:1", "FAASFLOW_ETCD_ENDPOINTS": "10.0.0.2:2"})
    assert store.config.endpoints == (("10.0.0.2", 2),)


def test_password_comes_from_the_openfaas_secret(tmp_path: Path) -> None:
    (tmp_path / "etcd-password").write_text("from-secret\n")
    store = build({"FAASFLOW_ETCD_USER": "bob"}, tmp_path)
    assert (store.config.user, store.config.password) == ("bob", "from-secret")


def test_building_the_store_does_not_connect() -> None:
    store = EtcdStateStore.from_options({"endpoints": f"127.0.0.1:{free_port()}"})
    store.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"endpoint": "x:1"}, "unknown etcd option(s) endpoint (from FAASFLOW_ETCD_ENDPOINT)"),
        ({"endpoints": "ftp://x:1"}, "etcd endpoint 'ftp://x:1' is not host:port"),
        ({"endpoints": "x:notaport"}, "is not host:port"),
        ({"endpoints": "http://a:1,https://b:2"}, "mix http:// and https://"),
        ({"endpoints": "http://a:1", "tls": "true"}, "use https:// endpoints"),
        ({"cert": "/etc/hostname"}, "needs both FAASFLOW_ETCD_CERT and FAASFLOW_ETCD_KEY"),
        ({"ca_cert": "/nonexistent/ca.pem"}, "FAASFLOW_ETCD_CA_CERT='/nonexistent/ca.pem'"),
        ({"user": "alice"}, "needs both FAASFLOW_ETCD_USER and FAASFLOW_ETCD_PASSWORD"),
        ({"timeout": "soon"}, "FAASFLOW_ETCD_TIMEOUT='soon' must be a positive number"),
        ({"tls": "maybe"}, "FAASFLOW_ETCD_TLS='maybe' is not a boolean"),
    ],
)
def test_bad_options_raise_configuration_error_naming_the_variable(
    options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        EtcdConfig.from_options(options)
    assert message in str(info.value)


# -- against the shared server ----------------------------------------------------------------


@pytest.mark.integration
def test_cleanup_leaves_no_key_of_the_request_in_etcd() -> None:
    endpoints = shared_endpoints()
    store = EtcdStateStore.from_options({"endpoints": endpoints})
    flow = f"cleanup-{uuid.uuid4().hex[:8]}"
    mine, neighbour = store.scoped(flow, "r1"), store.scoped(flow, "r10")
    for handle in (mine, neighbour):
        for index in range(50):
            handle.set(f"done--{index}", "1")
        handle.increment("0_4_n4")
        handle.set("nested/deeper/key", "x")
    mine.cleanup()
    raw = raw_client(endpoints)
    try:
        assert list(raw.get_prefix(f"faasflow/{flow}/r1/")) == []
        assert len(list(raw.get_prefix(f"faasflow/{flow}/r10/"))) == 52
    finally:
        neighbour.cleanup()
        raw.close()
        store.close()


@pytest.mark.integration
def test_keys_live_under_the_request_namespace() -> None:
    endpoints = shared_endpoints()
    store = EtcdStateStore.from_options({"endpoints": endpoints}).scoped("ns-flow", "ns-req")
    raw = raw_client(endpoints)
    try:
        store.set("request-state", "{}")
        value, meta = raw.get("faasflow/ns-flow/ns-req/request-state")
        assert value == b"{}"
    finally:
        store.cleanup()
        store.close()
        raw.close()


@pytest.mark.integration
def test_increment_is_exact_under_contention_from_many_handles() -> None:
    backend = EtcdStateStore.from_options({"endpoints": shared_endpoints()})
    request = uuid.uuid4().hex
    handles = [backend.scoped("fan-in", request) for _ in range(8)]
    seen: list[int] = []
    lock = threading.Lock()

    def arrive(handle: EtcdStateStore) -> None:
        for _ in range(25):
            value = handle.increment("0_4_n4")
            with lock:
                seen.append(value)

    threads = [threading.Thread(target=arrive, args=(h,)) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert sorted(seen) == list(range(1, 201))
    finally:
        handles[0].cleanup()
        backend.close()


# -- round trips, counted by the server --------------------------------------------------------


def test_each_operation_is_one_round_trip(private_etcd: EtcdServer) -> None:
    with etcd_store({"endpoints": private_etcd.endpoint}) as store:
        store.set("k", "v")  # connects
        counts = {m: private_etcd.handled(m) for m in ("Range", "Txn", "Put", "DeleteRange")}

        def calls() -> dict[str, int]:
            now = {m: private_etcd.handled(m) for m in counts}
            delta = {m: now[m] - counts[m] for m in counts}
            counts.update(now)
            return {m: n for m, n in delta.items() if n}

        store.update("k", "v", "w")
        assert calls() == {"Txn": 1}
        with pytest.raises(Exception, match="value changed"):
            store.update("k", "stale", "x")
        assert calls() == {"Txn": 1}
        store.create("c", "1")
        assert calls() == {"Txn": 1}
        store.scan()
        assert calls() == {"Range": 1}
        store.get("k")
        assert calls() == {"Range": 1}
        store.cleanup()
        assert calls() == {"DeleteRange": 1}


def test_increment_takes_one_round_trip_to_create_and_two_to_add(
    private_etcd: EtcdServer,
) -> None:
    with etcd_store({"endpoints": private_etcd.endpoint}) as store:
        store.set("warm-up", "1")
        before = private_etcd.handled("Txn")
        assert store.increment("counter") == 1
        assert private_etcd.handled("Txn") - before == 1
        assert store.increment("counter") == 2
        assert private_etcd.handled("Txn") - before == 3
        assert private_etcd.handled("Range") == 0


# -- failures name the endpoint and the operation, and the store comes back ----------------


def test_unreachable_server_raises_backend_error_naming_endpoint_and_operation() -> None:
    port = free_port()
    store = EtcdStateStore.from_options({"endpoints": f"127.0.0.1:{port}"}).scoped("f", "r")
    with pytest.raises(BackendError) as info:
        store.update("request-state", "a", "b")
    error = info.value
    assert (error.backend, error.endpoint) == ("etcd", f"http://127.0.0.1:{port}")
    assert error.operation == "update 'faasflow/f/r/request-state'"
    assert f"etcd update 'faasflow/f/r/request-state' failed at http://127.0.0.1:{port}" in str(
        error
    )
    assert "FAASFLOW_ETCD_ENDPOINTS" in str(error)


def test_next_operation_after_a_restart_succeeds(private_etcd: EtcdServer) -> None:
    with etcd_store({"endpoints": private_etcd.endpoint}) as store:
        store.set("k", "before")
        private_etcd.restart()
        assert store.get("k") == "before"
        store.set("k", "after")
        assert store.get("k") == "after"


def test_operation_after_an_outage_succeeds_once_the_server_is_back(
    private_etcd: EtcdServer,
) -> None:
    with etcd_store({"endpoints": private_etcd.endpoint}) as store:
        assert store.increment("n") == 1
        private_etcd.stop()
        with pytest.raises(BackendError) as info:
            store.increment("n")
        assert info.value.endpoint == private_etcd.endpoint
        assert "increment 'faasflow/f/r/n'" in str(info.value)
        private_etcd.start()
        # the first call after the restart: gRPC alone would still be backing off here
        assert store.increment("n") == 2


def test_store_fails_over_to_the_next_endpoint(private_etcd: EtcdServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with etcd_store(
        {"endpoints": f"{dead},{private_etcd.endpoint}"}
    ) as store:
        assert store.create("k", "v") is True
        assert store.get("k") == "v"
        assert store.endpoint.startswith(private_etcd.endpoint)


def test_hung_server_raises_timeout_error_and_recovers(private_etcd: EtcdServer) -> None:
    with etcd_store(
        {"endpoints": private_etcd.endpoint, "timeout": "0.3"}
    ) as store:
        store.set("k", "v")
        private_etcd.pause()
        try:
            with pytest.raises(BackendError) as info:
                store.get("k")
            assert "no answer within 0.3 s (FAASFLOW_ETCD_TIMEOUT)" in str(info.value)
        finally:
            private_etcd.resume()
        assert store.get("k") == "v"
