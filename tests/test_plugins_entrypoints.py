"""Entry-point loading against checked-in fake distributions (tests/data/*-site) put on
sys.path: discovery, load controls, broken plugins and clashes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from faasflow.backends import Kind
from faasflow.errors import DuplicateBackendError, UnknownBackendError
from faasflow.plugins import Registry, make_plugin_manager

DATA = Path(__file__).parent / "data"


@pytest.fixture
def site(monkeypatch):
    """Put one of the fake site directories on sys.path."""

    def add(name: str) -> None:
        monkeypatch.syspath_prepend(str(DATA / name))

    return add


def registry(env) -> Registry:
    return Registry(make_plugin_manager(env.settings()))


def test_entry_point_plugin_is_found_with_its_distribution_and_version(faasflow_env, site):
    site("fake-site")
    entry = registry(faasflow_env).get(Kind.STATE_STORE, "fake")
    assert entry.plugin == "fake"
    assert entry.distribution == "faasflow-fake"
    assert entry.version == "1.0"
    assert entry.backend.summary == "fake state store"


def test_one_plugin_may_declare_several_kinds(faasflow_env, site):
    site("fake-site")
    found = registry(faasflow_env)
    assert found.get(Kind.TRACER, "fake").distribution == "faasflow-fake"


def test_entry_point_backend_is_selected_by_env_var_with_its_options(faasflow_env, site):
    site("fake-site")
    faasflow_env.set("FAASFLOW_STATE_STORE", "fake")
    faasflow_env.set("FAASFLOW_FAKE_COLOR", "blue")
    settings = faasflow_env.settings()
    store = registry(faasflow_env).create(Kind.STATE_STORE, settings)
    assert type(store).__name__ == "FakeStateStore"
    assert store.options == {"color": "blue"}


def test_without_the_distribution_the_name_is_unknown(faasflow_env):
    with pytest.raises(UnknownBackendError, match="pip install faasflow-fake"):
        registry(faasflow_env).get(Kind.STATE_STORE, "fake")


def test_empty_load_plugins_loads_no_third_party_plugin(faasflow_env, site):
    site("fake-site")
    faasflow_env.set("FAASFLOW_LOAD_PLUGINS", "")
    found = registry(faasflow_env)
    assert "fake" not in found.backends(Kind.STATE_STORE)
    assert {e.distribution for e in found.all()} == {"faasflow (built-in)"}


def test_load_plugins_takes_distribution_names_in_any_spelling(faasflow_env, site):
    site("fake-site")
    faasflow_env.set("FAASFLOW_LOAD_PLUGINS", " Faasflow_Fake ")
    found = registry(faasflow_env)
    assert "fake" in found.backends(Kind.STATE_STORE)
    assert {e.distribution for e in found.all()} == {"faasflow (built-in)", "faasflow-fake"}


def test_load_plugins_leaves_out_unlisted_distributions(faasflow_env, site):
    site("fake-site")
    faasflow_env.set("FAASFLOW_LOAD_PLUGINS", "faasflow-something-else")
    assert "fake" not in registry(faasflow_env).backends(Kind.STATE_STORE)


def test_disable_plugins_blocks_an_entry_point_by_name(faasflow_env, site):
    site("fake-site")
    faasflow_env.set("FAASFLOW_DISABLE_PLUGINS", "fake")
    assert "fake" not in registry(faasflow_env).backends(Kind.STATE_STORE)


def test_disable_plugins_blocks_a_distribution_by_name(faasflow_env, site):
    site("fake-site")
    faasflow_env.set("FAASFLOW_DISABLE_PLUGINS", "faasflow-fake")
    assert "fake" not in registry(faasflow_env).backends(Kind.TRACER)


def test_a_plugin_that_fails_to_import_is_skipped_and_reported_by_name(
    faasflow_env, site, caplog
):
    site("broken-site")
    caplog.set_level(logging.WARNING, logger="faasflow.plugins")
    found = registry(faasflow_env)
    broken = {b.name: b for b in found.broken}
    assert broken["broken"].distribution == "faasflow-broken"
    assert "ImportError: faasflow-broken needs the 'no_such_client' package" in (
        broken["broken"].error
    )
    assert "memory" in found.backends(Kind.STATE_STORE)
    warning = next(r.getMessage() for r in caplog.records if "'broken'" in r.getMessage())
    assert "faasflow-broken" in warning
    assert "FAASFLOW_DISABLE_PLUGINS=broken" in warning


def test_selecting_a_broken_plugin_names_its_import_error(faasflow_env, site):
    site("broken-site")
    faasflow_env.set("FAASFLOW_STATE_STORE", "broken")
    settings = faasflow_env.settings()
    with pytest.raises(UnknownBackendError) as info:
        registry(faasflow_env).create(Kind.STATE_STORE, settings)
    message = str(info.value)
    assert "plugin 'broken' from faasflow-broken failed to load" in message
    assert "no_such_client" in message


def test_an_unknown_name_mentions_every_broken_plugin(faasflow_env, site):
    site("broken-site")
    with pytest.raises(UnknownBackendError) as info:
        registry(faasflow_env).get(Kind.STATE_STORE, "redis")
    assert "plugins that failed to load" in str(info.value)
    assert "'broken' from faasflow-broken" in str(info.value)


def test_a_plugin_with_a_misspelt_hook_is_skipped_and_reported(faasflow_env, site):
    site("broken-site")
    found = registry(faasflow_env)
    broken = {b.name: b for b in found.broken}
    assert broken["typo"].distribution == "faasflow-typo"
    assert "faasflow_state_store" in broken["typo"].error
    assert "faasflow_state_stores" in broken["typo"].error  # the known hooks are listed
    assert "typo" not in found.backends(Kind.STATE_STORE)


def test_a_third_party_backend_named_like_a_builtin_is_a_duplicate(faasflow_env, site):
    site("duplicate-site")
    with pytest.raises(DuplicateBackendError) as info:
        registry(faasflow_env)
    assert "'dupe' (faasflow-dupe)" in str(info.value)
    assert "faasflow (built-in)" in str(info.value)


def test_the_duplicate_can_be_disabled(faasflow_env, site):
    site("duplicate-site")
    faasflow_env.set("FAASFLOW_DISABLE_PLUGINS", "dupe")
    assert registry(faasflow_env).get(Kind.STATE_STORE, "memory").plugin == (
        "faasflow.default_plugins.memory"
    )


def test_an_entry_point_name_taken_by_another_distribution_is_reported(faasflow_env, site):
    site("clash-site")
    site("fake-site")  # prepended last, so found first
    found = registry(faasflow_env)
    assert found.get(Kind.STATE_STORE, "fake").distribution == "faasflow-fake"
    clash = {b.name: b for b in found.broken}["fake"]
    assert clash.distribution == "faasflow-other-fake"
    assert "already taken by faasflow-fake" in clash.error
    assert "otherfake" not in found.backends(Kind.TRACER)
