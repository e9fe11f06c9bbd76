"""Settings.from_env: defaults, legacy names, parsing errors, and backend options."""

from __future__ import annotations

import pytest

from faasflow.backends import Backend, Kind
from faasflow.default_plugins.memory import MemoryStateStore
from faasflow.errors import ConfigurationError
from faasflow.settings import EnvVars, Settings


def backend(name="consul", env=None, secrets=None):
    return Backend(name, MemoryStateStore.from_options, env=env or {}, secrets=secrets or {})


def test_defaults_need_no_environment(tmp_path):
    settings = Settings.from_env({EnvVars.SECRET_MOUNT_PATH: str(tmp_path)})
    assert settings.backends == {
        Kind.STATE_STORE: "memory",
        Kind.DATA_STORE: "memory",
        Kind.TRACER: "none",
        Kind.INVOKER: "local",
    }
    assert settings.load_plugins is None
    assert settings.disable_plugins == ()
    assert settings.trace_plugins is False
    assert settings.gateway_url == "http://gateway.openfaas:8080"
    assert settings.validate_request is True
    assert settings.hmac_secret is None
    assert settings.request_timeout == 3600.0  # a request that hangs fails after an hour


def test_backend_names_are_read_per_kind_and_lower_cased():
    settings = Settings.from_env({"FAASFLOW_STATE_STORE": " Consul ", "FAASFLOW_TRACER": "LOG"})
    assert settings.backend_name(Kind.STATE_STORE) == "consul"
    assert settings.backend_name(Kind.TRACER) == "log"
    assert settings.backend_name(Kind.DATA_STORE) == "memory"


def test_an_empty_backend_variable_means_the_default():
    assert Settings.from_env({"FAASFLOW_INVOKER": ""}).backend_name(Kind.INVOKER) == "local"


def test_legacy_faas_flow_names_are_honoured():
    settings = Settings.from_env(
        {"gateway": "gateway.openfaas:8080", "flow_name": "greet", "validate_request": "false"}
    )
    assert settings.gateway_url == "http://gateway.openfaas:8080"
    assert settings.flow_name == "greet"
    assert settings.validate_request is False


def test_new_names_win_over_legacy_names():
    settings = Settings.from_env(
        {"gateway": "old:8080", "FAASFLOW_GATEWAY_URL": "http://new:8080"}
    )
    assert settings.gateway_url == "http://new:8080"


def test_defaults_fill_only_unset_variables():
    settings = Settings.from_env(
        {"FAASFLOW_DATA_STORE": "filesystem"},
        defaults={"FAASFLOW_STATE_STORE": "sqlite", "FAASFLOW_DATA_STORE": "sqlite"},
    )
    assert settings.backend_name(Kind.STATE_STORE) == "sqlite"
    assert settings.backend_name(Kind.DATA_STORE) == "filesystem"


def test_a_legacy_name_beats_a_default():
    settings = Settings.from_env(
        {"gateway": "127.0.0.1:9999"},
        defaults={"FAASFLOW_GATEWAY_URL": "http://127.0.0.1:8080"},
    )
    assert settings.gateway_url == "http://127.0.0.1:9999"


def test_load_plugins_distinguishes_unset_from_empty():
    assert Settings.from_env({}).load_plugins is None
    assert Settings.from_env({"FAASFLOW_LOAD_PLUGINS": ""}).load_plugins == ()
    assert Settings.from_env(
        {"FAASFLOW_LOAD_PLUGINS": "faasflow-consul, faasflow-etcd,"}
    ).load_plugins == ("faasflow-consul", "faasflow-etcd")


def test_disable_plugins_is_a_comma_list():
    settings = Settings.from_env({"FAASFLOW_DISABLE_PLUGINS": "consul,,etcd "})
    assert settings.disable_plugins == ("consul", "etcd")


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("yes", True), ("off", False)])
def test_booleans_accept_common_spellings(raw, value):
    assert Settings.from_env({"FAASFLOW_TRACE_PLUGINS": raw}).trace_plugins is value


def test_an_empty_boolean_keeps_its_default():
    assert Settings.from_env({"FAASFLOW_VALIDATE_REQUEST": ""}).validate_request is True


def test_a_bad_boolean_names_the_variable():
    with pytest.raises(ConfigurationError, match="FAASFLOW_AUTHENTICATE_REQUEST='maybe'"):
        Settings.from_env({"FAASFLOW_AUTHENTICATE_REQUEST": "maybe"})


def test_numbers_are_parsed():
    settings = Settings.from_env(
        {
            "FAASFLOW_INLINE_LIMIT": "1024",
            "FAASFLOW_REQUEST_TIMEOUT": "2.5",
            "FAASFLOW_WORKERS": "3",
        }
    )
    assert settings.inline_limit == 1024
    assert settings.request_timeout == 2.5
    assert settings.workers == 3


def test_a_zero_request_timeout_means_none():
    assert Settings.from_env({"FAASFLOW_REQUEST_TIMEOUT": "0"}).request_timeout is None


def test_request_timeout_none_turns_the_default_deadline_off():
    assert Settings.from_env({"FAASFLOW_REQUEST_TIMEOUT": "none"}).request_timeout is None


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("FAASFLOW_INLINE_LIMIT", "lots", "is not a whole number"),
        ("FAASFLOW_INLINE_LIMIT", "1.5", "is not a whole number"),
        ("FAASFLOW_RECORD_RETENTION", "-1", "must not be negative"),
    ],
)
def test_a_bad_number_names_the_variable(name, raw, message):
    with pytest.raises(ConfigurationError, match=f"{name}='{raw}' {message}"):
        Settings.from_env({name: raw})


def test_hmac_secret_from_the_environment():
    assert Settings.from_env({"FAASFLOW_HMAC_SECRET": "s3cret"}).hmac_secret == b"s3cret"


def test_hmac_secret_from_an_openfaas_secret_file(tmp_path):
    (tmp_path / "faasflow-hmac-secret").write_bytes(b"from-file\n")
    settings = Settings.from_env({"FAASFLOW_SECRET_MOUNT_PATH": str(tmp_path)})
    assert settings.hmac_secret == b"from-file"


def test_option_variables_are_gathered_by_backend_prefix():
    settings = Settings.from_env(
        {"FAASFLOW_CONSUL_URL": "http://127.0.0.1:8500", "FAASFLOW_CONSUL_DATA_CENTER": "dc1",
         "FAASFLOW_ETCD_URL": "other"}
    )
    assert settings.options_for(backend()) == {"url": "http://127.0.0.1:8500", "data_center": "dc1"}


def test_ecosystem_variables_set_options_first_listed_wins():
    b = backend(env={"address": ("CONSUL_HTTP_ADDR", "consul_url")})
    settings = Settings.from_env({"consul_url": "b:8500", "CONSUL_HTTP_ADDR": "a:8500"})
    assert settings.options_for(b) == {"address": "a:8500"}
    assert Settings.from_env({"consul_url": "b:8500"}).options_for(b) == {"address": "b:8500"}


def test_the_faasflow_option_variable_beats_ecosystem_variables_and_secrets(tmp_path):
    (tmp_path / "consul-token").write_text("from-secret\n")
    b = backend(env={"token": ("CONSUL_HTTP_TOKEN",)}, secrets={"token": "consul-token"})
    base = {"FAASFLOW_SECRET_MOUNT_PATH": str(tmp_path)}
    assert Settings.from_env(base).options_for(b) == {"token": "from-secret"}
    assert Settings.from_env({**base, "CONSUL_HTTP_TOKEN": "eco"}).options_for(b) == {
        "token": "eco"
    }
    assert Settings.from_env(
        {**base, "CONSUL_HTTP_TOKEN": "eco", "FAASFLOW_CONSUL_TOKEN": "mine"}
    ).options_for(b) == {"token": "mine"}


def test_core_variables_are_never_backend_options():
    settings = Settings.from_env(
        {"FAASFLOW_REQUEST_TIMEOUT": "5", "FAASFLOW_REQUEST_COLOR": "red"}
    )
    assert settings.options_for(backend("request")) == {"color": "red"}


def test_empty_option_variables_are_ignored():
    settings = Settings.from_env({"FAASFLOW_CONSUL_URL": ""})
    assert settings.options_for(backend()) == {}


def test_with_backends_replaces_some_backends():
    settings = Settings.from_env({}).with_backends(state_store="sqlite")
    assert settings.backend_name(Kind.STATE_STORE) == "sqlite"
    assert settings.backend_name(Kind.DATA_STORE) == "memory"


def test_option_variable_names():
    assert EnvVars.option("sqlite", "path") == "FAASFLOW_SQLITE_PATH"
