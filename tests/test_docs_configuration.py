"""docs/configuration.md documents every variable faasflow reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from faasflow.backends import Kind
from faasflow.plugins import DEFAULT_PLUGINS, Registry, make_plugin_manager
from faasflow.settings import EnvVars, Settings

PAGE = Path(__file__).parents[1] / "docs" / "configuration.md"
DOCUMENTED = set(re.findall(r"`([A-Za-z][A-Za-z0-9_-]*)`", PAGE.read_text()))

CONSTANTS = sorted(
    value for name, value in vars(EnvVars).items() if name.isupper() and isinstance(value, str)
)


def builtin_option_variables():
    registry = Registry(make_plugin_manager(Settings(), load_entrypoints=False))
    for entry in registry.all():
        assert entry.plugin in DEFAULT_PLUGINS
        for option in entry.backend.options:
            yield EnvVars.option(entry.name, option)
        for names in entry.backend.env.values():
            yield from names


@pytest.mark.parametrize("variable", CONSTANTS)
def test_every_env_var_constant_is_documented(variable):
    assert variable in DOCUMENTED, f"{variable} is read by faasflow but not in {PAGE}"


@pytest.mark.parametrize("legacy", sorted(EnvVars.LEGACY.values()))
def test_every_legacy_name_is_documented(legacy):
    assert legacy in DOCUMENTED, f"faas-flow's {legacy!r} is honoured but not in {PAGE}"


@pytest.mark.parametrize("variable", sorted(set(builtin_option_variables())))
def test_every_builtin_backend_option_is_documented(variable):
    assert variable in DOCUMENTED, f"{variable} is a built-in backend option not in {PAGE}"


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_variable_is_documented(kind):
    assert kind.env_var in DOCUMENTED


def test_the_meta_test_sees_the_constants():
    # Guards the collection above: a refactor that hides the constants must not pass silently.
    assert "FAASFLOW_STATE_STORE" in CONSTANTS
    assert len(CONSTANTS) >= 19
