"""Discovery, configuration and the behaviour specific to the S3 store, against the real S3
server of .ci/services (Ceph radosgw) and private radosgw processes."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from faasflow_minio.store import MinioConfig, MinioDataStore, object_key
from s3_servers import PrivateRadosgw, raw_client, shared_options

from faasflow.backends import Kind
from faasflow.errors import BackendError, ConfigurationError, KeyNotFound
from faasflow.plugins import Registry, make_plugin_manager
from faasflow.settings import Settings
from faasflow.testing import assert_backend_registered, assert_readme_documents, free_port


def build(environ: dict[str, str], secrets: Path | None = None) -> MinioDataStore:
    """The store a process with ``environ`` gets for FAASFLOW_DATA_STORE=minio."""
    settings = Settings.from_env(
        {
            "FAASFLOW_DATA_STORE": "minio",
            "FAASFLOW_SECRET_MOUNT_PATH": str(secrets or "/nonexistent"),
            **environ,
        }
    )
    store = Registry(make_plugin_manager(settings)).create(Kind.DATA_STORE, settings)
    assert isinstance(store, MinioDataStore)
    return store


def objects(options: dict[str, str], bucket: str, prefix: str = "") -> list[str]:
    client = raw_client(options)
    return sorted(
        str(o.object_name) for o in client.list_objects(bucket, prefix=prefix, recursive=True)
    )


# -- discovery and options ------------------------------------------------------------------


def test_plugin_is_discovered_through_its_entry_point() -> None:
    registered = assert_backend_registered("data_store", "minio")
    assert registered.distribution == "faasflow-minio"
    assert "bucket" in registered.backend.options


def test_readme_documents_every_option_variable_and_secret() -> None:
    registered = assert_backend_registered("data_store", "minio")
    assert_readme_documents(registered.backend, Path(__file__).parents[1] / "README.md")


def test_aws_variables_are_honoured() -> None:
    config = build(
        {
            "AWS_ENDPOINT_URL_S3": "https://s3.example.com",
            "AWS_ACCESS_KEY_ID": "AKID",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_SESSION_TOKEN": "session",
            "AWS_REGION": "eu-west-3",
        }
    ).config
    assert (config.endpoint, config.secure, config.region) == ("s3.example.com", True, "eu-west-3")
    assert (config.access_key, config.secret_key, config.session_token) == (
        "AKID", "secret", "session"
    )


def test_faas_flow_variables_and_secrets_are_honoured(tmp_path: Path) -> None:
    (tmp_path / "s3-access-key").write_text("minio\n")
    (tmp_path / "s3-secret-key").write_text("minio123\n")
    config = build(
        {"s3_url": "minio.faasflow:9000", "s3_region": "us-west-1", "s3_tls": "1"}, tmp_path
    ).config
    assert config.url == "https://minio.faasflow:9000"
    assert config.region == "us-west-1"
    assert (config.access_key, config.secret_key) == ("minio", "minio123")


def test_faasflow_variables_win_over_aws_variables() -> None:
    config = build(
        {
            "AWS_ENDPOINT_URL": "http://aws:1",
            "FAASFLOW_MINIO_ENDPOINT": "http://mine:2",
            "FAASFLOW_MINIO_BUCKET": "flows",
            "FAASFLOW_MINIO_CREATE_BUCKET": "false",
        }
    ).config
    assert (config.url, config.bucket, config.create_bucket) == ("http://mine:2", "flows", False)


def test_default_bucket_is_faasflow() -> None:
    assert MinioConfig.from_options({"endpoint": "h:9000"}).bucket == "faasflow"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "the minio data store needs an endpoint: set FAASFLOW_MINIO_ENDPOINT"),
        ({"endpoint": "h", "url": "x"}, "unknown minio option(s) url (from FAASFLOW_MINIO_URL)"),
        ({"endpoint": "http://h:9000/bucket"}, "the bucket is set with FAASFLOW_MINIO_BUCKET"),
        ({"endpoint": "h", "bucket": "No_Such"}, "FAASFLOW_MINIO_BUCKET='No_Such' is not a valid"),
        ({"endpoint": "h", "access_key": "a"}, "need both FAASFLOW_MINIO_ACCESS_KEY"),
        ({"endpoint": "h", "timeout": "0"}, "FAASFLOW_MINIO_TIMEOUT='0' must be a positive"),
        ({"endpoint": "h", "create_bucket": "perhaps"}, "FAASFLOW_MINIO_CREATE_BUCKET='perhaps'"),
        ({"endpoint": "h", "ca_cert": "/nonexistent"}, "FAASFLOW_MINIO_CA_CERT='/nonexistent'"),
    ],
)
def test_bad_options_raise_configuration_error_naming_the_variable(
    options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        MinioConfig.from_options(options)
    assert message in str(info.value)


def test_object_keys_escape_only_dot_segments_and_percent() -> None:
    assert object_key("faasflow/f/r/0_1_n1--2_n2") == "faasflow/f/r/0_1_n1--2_n2"
    assert object_key("a/../b/./c/.d/..e") == "a/%2E%2E/b/%2E/c/.d/..e"
    assert object_key("100%/%2E") == "100%25/%252E"


# -- against the shared S3 server --------------------------------------------------------------


@pytest.mark.integration
def test_objects_live_under_the_request_prefix_of_one_bucket(fresh_bucket: str) -> None:
    options = shared_options(bucket=fresh_bucket)
    backend = MinioDataStore.from_options(options)
    backend.scoped("flow", "r1").set("0_1_n1--2_n2", b"edge")
    backend.scoped("flow", "r2").set("context--sha", b"abc")
    assert objects(options, fresh_bucket) == [
        "faasflow/flow/r1/0_1_n1--2_n2",
        "faasflow/flow/r2/context--sha",
    ]


@pytest.mark.integration
def test_bucket_is_created_on_first_write(fresh_bucket: str) -> None:
    options = shared_options(bucket=fresh_bucket)
    store = MinioDataStore.from_options(options).scoped("flow", "req")
    store.set("key", b"value")
    assert raw_client(options).bucket_exists(fresh_bucket)
    assert store.get("key") == b"value"


@pytest.mark.integration
def test_concurrent_first_writes_all_land_while_the_bucket_is_created(fresh_bucket: str) -> None:
    backend = MinioDataStore.from_options(shared_options(bucket=fresh_bucket))
    handles = [backend.scoped("flow", f"req-{i}") for i in range(6)]
    barrier = threading.Barrier(len(handles))

    def write(index: int) -> None:
        barrier.wait(10)
        handles[index].set("key", str(index).encode())

    with ThreadPoolExecutor(len(handles)) as pool:
        list(pool.map(write, range(len(handles))))
    assert [h.get("key") for h in handles] == [str(i).encode() for i in range(len(handles))]


@pytest.mark.integration
def test_missing_bucket_is_an_error_when_creation_is_off(fresh_bucket: str) -> None:
    store = MinioDataStore.from_options(
        shared_options(bucket=fresh_bucket, create_bucket="false")
    ).scoped("flow", "req")
    with pytest.raises(BackendError) as info:
        store.set("key", b"value")
    assert f"bucket {fresh_bucket!r} does not exist" in str(info.value)
    assert "FAASFLOW_MINIO_CREATE_BUCKET=true" in str(info.value)
    with pytest.raises(BackendError):
        store.get("key")
    assert not raw_client(shared_options()).bucket_exists(fresh_bucket)


@pytest.mark.integration
def test_reading_before_the_bucket_exists_is_key_not_found(fresh_bucket: str) -> None:
    store = MinioDataStore.from_options(shared_options(bucket=fresh_bucket)).scoped("f", "r")
    with pytest.raises(KeyNotFound):
        store.get("key")
    store.delete("key")
    store.cleanup()


@pytest.mark.integration
def test_cleanup_of_more_than_one_listing_page_leaves_nothing(fresh_bucket: str) -> None:
    options = shared_options(bucket=fresh_bucket)
    backend = MinioDataStore.from_options(options)
    mine, neighbour = backend.scoped("flow", "r1"), backend.scoped("flow", "r10")
    neighbour.set("key", b"kept")
    keys = [f"done--{i}" for i in range(1010)] + ["nested/deep/key", "../up", "."]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: mine.set(key, b"x"), keys))
    assert len(objects(options, fresh_bucket, "faasflow/flow/r1/")) == len(keys)
    mine.cleanup()
    assert objects(options, fresh_bucket) == ["faasflow/flow/r10/key"]


@pytest.mark.integration
def test_keys_with_dot_segments_stay_inside_the_namespace(fresh_bucket: str) -> None:
    options = shared_options(bucket=fresh_bucket)
    store = MinioDataStore.from_options(options).scoped("flow", "req")
    store.set("../escape", b"1")
    store.set("./here", b"2")
    assert store.get("../escape") == b"1"
    assert all(name.startswith("faasflow/flow/req/") for name in objects(options, fresh_bucket))


@pytest.mark.integration
def test_wrong_secret_key_raises_backend_error_naming_the_options() -> None:
    store = MinioDataStore.from_options(shared_options(secret_key="wrong")).scoped("f", "r")
    with pytest.raises(BackendError) as info:
        store.set("key", b"v")
    assert "FAASFLOW_MINIO_SECRET_KEY" in str(info.value)


def test_unreachable_endpoint_raises_backend_error_naming_endpoint_and_operation() -> None:
    port = free_port()
    store = MinioDataStore.from_options(
        {"endpoint": f"127.0.0.1:{port}", "access_key": "a", "secret_key": "b"}
    ).scoped("f", "r")
    with pytest.raises(BackendError) as info:
        store.get("0_1_n1--2_n2")
    error = info.value
    assert (error.backend, error.endpoint) == ("minio", f"http://127.0.0.1:{port}")
    assert error.operation == "get faasflow/faasflow/f/r/0_1_n1--2_n2"
    assert "cannot reach the S3 endpoint" in str(error)
    assert "FAASFLOW_MINIO_ENDPOINT" in str(error)


# -- a private radosgw that the test restarts -----------------------------------------------


def private_store(server: PrivateRadosgw, **extra: str) -> MinioDataStore:
    options = {**shared_options(bucket="faasflow-restart"), "endpoint": server.endpoint, **extra}
    return MinioDataStore.from_options(options).scoped("flow", uuid.uuid4().hex)


@pytest.mark.integration
def test_next_operation_after_a_restart_succeeds(private_rgw: PrivateRadosgw) -> None:
    store = private_store(private_rgw)
    try:
        store.set("key", b"before")
        private_rgw.restart()
        assert store.get("key") == b"before"
        store.set("key", b"after")
        assert store.get("key") == b"after"
    finally:
        store.cleanup()


@pytest.mark.integration
def test_operation_after_an_outage_succeeds_once_the_server_is_back(
    private_rgw: PrivateRadosgw,
) -> None:
    store = private_store(private_rgw)
    try:
        store.set("key", b"v1")
        private_rgw.stop()
        with pytest.raises(BackendError) as info:
            store.set("key", b"lost")
        assert info.value.endpoint == f"http://{private_rgw.endpoint}"
        private_rgw.start()
        store.set("key", b"v2")
        assert store.get("key") == b"v2"
    finally:
        store.cleanup()


@pytest.mark.integration
def test_hung_server_raises_timeout_error_and_recovers(private_rgw: PrivateRadosgw) -> None:
    store = private_store(private_rgw, timeout="0.3")
    try:
        store.set("key", b"v")
        private_rgw.pause()
        try:
            with pytest.raises(BackendError) as info:
                store.get("key")
            assert "no answer within 0.3 s (FAASFLOW_MINIO_TIMEOUT)" in str(info.value)
        finally:
            private_rgw.resume()
        assert store.get("key") == b"v"
    finally:
        store.cleanup()
