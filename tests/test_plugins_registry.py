"""The registry: built-in backends through the hooks, unknown names, duplicates, bad records,
options and hook tracing."""

from __future__ import annotations

import logging

import pytest

from faasflow import Backend, hookimpl
from faasflow.backends import Kind
from faasflow.default_plugins.invokers import LocalInvoker, OpenFaasInvoker
from faasflow.default_plugins.memory import MemoryStateStore
from faasflow.default_plugins.sqlite import SqliteStateStore
from faasflow.errors import (
    ConfigurationError,
    DuplicateBackendError,
    PluginLoadError,
    UnknownBackendError,
)
from faasflow.plugins import DEFAULT_PLUGINS, Registry, make_plugin_manager

BUILTIN = {
    Kind.STATE_STORE: ["memory", "sqlite"],
    Kind.DATA_STORE: ["filesystem", "memory", "sqlite"],
    Kind.TRACER: ["log", "none"],
    Kind.INVOKER: ["http", "local", "openfaas"],
}


@pytest.fixture
def core(faasflow_env):
    """A plugin manager with the built-in plugins only (no entry points)."""
    return make_plugin_manager(faasflow_env.settings(), load_entrypoints=False)


class MemoryAgain:
    @hookimpl
    def faasflow_state_stores(self):
        yield Backend("memory", MemoryStateStore.from_options)


class NotARecord:
    @hookimpl
    def faasflow_tracers(self):
        return [{"name": "dict-tracer"}]


class Exploding:
    @hookimpl
    def faasflow_invokers(self):
        raise RuntimeError("cannot import grpc")


class FailingFactory:
    @hookimpl
    def faasflow_state_stores(self):
        def factory(options):
            raise ValueError(f"bad port {options.get('port')!r}")

        yield Backend("picky", factory)


@pytest.mark.parametrize("kind", list(Kind))
def test_builtin_backends_come_through_the_hooks(core, kind):
    registry = Registry(core)
    assert sorted(registry.backends(kind)) == BUILTIN[kind]
    assert {entry.plugin for entry in registry.backends(kind).values()} <= set(DEFAULT_PLUGINS)


def test_unknown_backend_lists_available_names_and_the_package_to_install(core):
    with pytest.raises(UnknownBackendError) as info:
        Registry(core).get(Kind.STATE_STORE, "redis")
    message = str(info.value)
    assert "unknown state store 'redis'" in message
    assert "available: memory, sqlite" in message
    assert "pip install faasflow-redis" in message
    assert "FAASFLOW_STATE_STORE" in message


def test_unknown_backend_from_settings_names_the_variable(faasflow_env, core):
    faasflow_env.set("FAASFLOW_DATA_STORE", "S3")
    settings = faasflow_env.settings()
    with pytest.raises(UnknownBackendError) as info:
        Registry(core).create(Kind.DATA_STORE, settings)
    assert info.value.name == "s3"
    assert "FAASFLOW_DATA_STORE" in str(info.value)
    assert "filesystem, memory, sqlite" in str(info.value)


def test_two_plugins_declaring_one_name_is_an_error_naming_both(core):
    core.register(MemoryAgain(), name="memory-again")
    with pytest.raises(DuplicateBackendError) as info:
        Registry(core)
    message = str(info.value)
    assert "'memory' is declared twice" in message
    assert "faasflow.default_plugins.memory" in message
    assert "memory-again" in message
    assert "FAASFLOW_DISABLE_PLUGINS" in message


def test_one_name_in_two_kinds_is_not_a_duplicate(core):
    registry = Registry(core)
    assert "sqlite" in registry.backends(Kind.STATE_STORE)
    assert "sqlite" in registry.backends(Kind.DATA_STORE)


def test_a_record_that_is_not_a_backend_is_rejected_naming_the_plugin(core):
    core.register(NotARecord(), name="not-a-record")
    with pytest.raises(PluginLoadError, match=r"'not-a-record'.*returned dict.*faasflow.Backend"):
        Registry(core)


def test_a_plugin_raising_while_declaring_is_named_with_the_fix(core):
    core.register(Exploding(), name="exploding")
    with pytest.raises(PluginLoadError) as info:
        Registry(core)
    assert "'exploding'" in str(info.value)
    assert "cannot import grpc" in str(info.value)
    assert "FAASFLOW_DISABLE_PLUGINS=exploding" in str(info.value)


def test_backend_names_are_normalised_and_checked():
    assert Backend(" SQLite ", MemoryStateStore.from_options).name == "sqlite"
    with pytest.raises(ValueError, match="lower-case letters and digits"):
        Backend("my-store", MemoryStateStore.from_options)


def test_create_builds_the_selected_backend_from_its_options(faasflow_env, tmp_path, core):
    faasflow_env.set("FAASFLOW_STATE_STORE", "sqlite")
    faasflow_env.set("FAASFLOW_SQLITE_PATH", str(tmp_path / "x" / "state.db"))
    store = Registry(core).create(Kind.STATE_STORE, faasflow_env.settings())
    try:
        assert isinstance(store, SqliteStateStore)
        store.scoped("flow", "id").set("k", "v")
        assert (tmp_path / "x" / "state.db").exists()
    finally:
        store.close()


def test_create_turns_a_factory_error_into_a_configuration_error(faasflow_env, core):
    core.register(FailingFactory(), name="failing")
    faasflow_env.set("FAASFLOW_PICKY_PORT", "abc")
    with pytest.raises(ConfigurationError) as info:
        Registry(core).create(Kind.STATE_STORE, faasflow_env.settings(), "picky")
    assert "state store 'picky'" in str(info.value)
    assert "bad port 'abc'" in str(info.value)
    assert "FAASFLOW_PICKY_*" in str(info.value)


def test_openfaas_gateway_comes_from_faasflow_gateway_url(faasflow_env, core):
    faasflow_env.set("FAASFLOW_GATEWAY_URL", "http://127.0.0.1:8080/")
    invoker = Registry(core).create(Kind.INVOKER, faasflow_env.settings(), "openfaas")
    assert isinstance(invoker, OpenFaasInvoker)
    assert invoker.gateway_url == "http://127.0.0.1:8080"


def test_openfaas_gateway_accepts_the_legacy_bare_gateway_name(faasflow_env, core):
    faasflow_env.set("gateway", "gateway.openfaas:8080")
    invoker = Registry(core).create(Kind.INVOKER, faasflow_env.settings(), "http")
    assert invoker.gateway_url == "http://gateway.openfaas:8080"


def test_backend_option_variable_beats_the_shared_gateway(faasflow_env, core):
    faasflow_env.set("FAASFLOW_GATEWAY_URL", "http://127.0.0.1:1")
    faasflow_env.set("FAASFLOW_OPENFAAS_GATEWAY_URL", "http://127.0.0.1:2")
    invoker = Registry(core).create(Kind.INVOKER, faasflow_env.settings(), "openfaas")
    assert invoker.gateway_url == "http://127.0.0.1:2"


def test_local_invoker_workers_come_from_faasflow_workers(faasflow_env, core):
    faasflow_env.set("FAASFLOW_WORKERS", "3")
    invoker = Registry(core).create(Kind.INVOKER, faasflow_env.settings())
    assert isinstance(invoker, LocalInvoker)
    assert invoker.workers == 3
    assert invoker.gateway_url is None


def test_trace_plugins_logs_every_hook_call(faasflow_env, caplog):
    faasflow_env.set("FAASFLOW_TRACE_PLUGINS", "1")
    caplog.set_level(logging.INFO, logger="faasflow.plugins")
    Registry(make_plugin_manager(faasflow_env.settings(), load_entrypoints=False))
    messages = [r.getMessage() for r in caplog.records if r.name == "faasflow.plugins"]
    assert "hook faasflow_state_stores() called on 'faasflow.default_plugins.memory'" in messages
    assert "hook faasflow_invokers() on 'faasflow.default_plugins.invokers' returned" in messages
    assert (
        "plugin 'faasflow.default_plugins.sqlite' (faasflow (built-in)) declares state store "
        "backends: sqlite"
    ) in messages


def test_without_trace_plugins_hook_calls_are_not_logged(faasflow_env, caplog):
    caplog.set_level(logging.INFO, logger="faasflow.plugins")
    Registry(make_plugin_manager(faasflow_env.settings(), load_entrypoints=False))
    assert not [r for r in caplog.records if r.name == "faasflow.plugins"]


def test_disable_plugins_can_block_a_builtin_module(faasflow_env):
    faasflow_env.set("FAASFLOW_DISABLE_PLUGINS", "faasflow.default_plugins.sqlite")
    registry = Registry(make_plugin_manager(faasflow_env.settings(), load_entrypoints=False))
    assert "sqlite" not in registry.backends(Kind.STATE_STORE)
    assert "memory" in registry.backends(Kind.STATE_STORE)
