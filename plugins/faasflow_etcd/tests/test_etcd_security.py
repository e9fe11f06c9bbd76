"""TLS and authentication options, against private etcd servers configured for them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pyetcd
import pytest
from etcd_server import Certificates, EtcdServer, etcd_store
from pyetcd import etcdrpc

from faasflow.errors import BackendError


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.create(tmp_path_factory.mktemp("certs"))


def start(workdir: Path, **kwargs: object) -> EtcdServer:
    server = EtcdServer(workdir, **kwargs)  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture
def tls_etcd(etcd_workdir: Path, certificates: Certificates) -> Iterator[EtcdServer]:
    server = start(etcd_workdir, certificates=certificates)
    yield server
    server.stop()


@pytest.fixture
def mutual_tls_etcd(etcd_workdir: Path, certificates: Certificates) -> Iterator[EtcdServer]:
    server = start(etcd_workdir, certificates=certificates, client_cert_auth=True)
    yield server
    server.stop()


def enable_auth(server: EtcdServer, password: str) -> None:
    client = pyetcd.client("127.0.0.1", server.client_port)
    try:
        stub = client.authstub
        stub.RoleAdd(etcdrpc.AuthRoleAddRequest(name="root"), 5)
        stub.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password=password), 5)
        stub.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"), 5)
        stub.AuthEnable(etcdrpc.AuthEnableRequest(), 5)
    finally:
        client.close()


def test_tls_with_ca_certificate_round_trips(
    tls_etcd: EtcdServer, certificates: Certificates
) -> None:
    with etcd_store(
        {"endpoints": tls_etcd.endpoint, "ca_cert": str(certificates.ca)}
    ) as store:
        assert store.create("k", "secure") is True
        assert store.get("k") == "secure"


def test_tls_with_an_untrusted_server_certificate_raises_backend_error(
    tls_etcd: EtcdServer, certificates: Certificates
) -> None:
    with etcd_store(
        {"endpoints": tls_etcd.endpoint, "ca_cert": str(certificates.other_ca), "timeout": "2"}
    ) as store:
        with pytest.raises(BackendError) as info:
            store.get("k")
        assert info.value.endpoint == tls_etcd.endpoint


def test_mutual_tls_with_client_certificate_round_trips(
    mutual_tls_etcd: EtcdServer, certificates: Certificates
) -> None:
    with etcd_store(
        {
            "endpoints": mutual_tls_etcd.endpoint,
            "ca_cert": str(certificates.ca),
            "cert": str(certificates.client_cert),
            "key": str(certificates.client_key),
        }
    ) as store:
        store.set("k", "mutual")
        assert store.scan() == {"k": "mutual"}


def test_mutual_tls_without_client_certificate_is_refused(
    mutual_tls_etcd: EtcdServer, certificates: Certificates
) -> None:
    with etcd_store(
        {"endpoints": mutual_tls_etcd.endpoint, "ca_cert": str(certificates.ca), "timeout": "2"}
    ) as store, pytest.raises(BackendError):
        store.set("k", "v")


def test_user_and_password_authenticate(private_etcd: EtcdServer) -> None:
    enable_auth(private_etcd, "pa55")
    with etcd_store(
        {"endpoints": private_etcd.endpoint, "user": "root", "password": "pa55"}
    ) as store:
        assert store.increment("n", 2) == 2


def test_wrong_password_raises_backend_error_naming_the_options(private_etcd: EtcdServer) -> None:
    enable_auth(private_etcd, "pa55")
    with etcd_store(
        {"endpoints": private_etcd.endpoint, "user": "root", "password": "wrong"}
    ) as store:
        with pytest.raises(BackendError) as info:
            store.get("k")
        assert "FAASFLOW_ETCD_PASSWORD" in str(info.value)
        assert info.value.endpoint == private_etcd.endpoint


def test_missing_credentials_on_an_auth_server_raise_backend_error(
    private_etcd: EtcdServer,
) -> None:
    enable_auth(private_etcd, "pa55")
    with etcd_store({"endpoints": private_etcd.endpoint}) as store:
        with pytest.raises(BackendError) as info:
            store.set("k", "v")
        assert "set 'faasflow/f/r/k'" in str(info.value)


def test_expired_auth_token_is_renewed(etcd_workdir: Path) -> None:
    server = start(etcd_workdir, extra_args=("--auth-token-ttl", "1"))
    try:
        enable_auth(server, "pa55")
        with etcd_store(
            {"endpoints": server.endpoint, "user": "root", "password": "pa55"}
        ) as store:
            store.set("k", "v")
            time.sleep(2.5)  # the simple token expires after 1 s without use
            assert store.get("k") == "v"
    finally:
        server.stop()
