"""Fixtures for testing faasflow flows and backends (loaded by pytest through the ``pytest11``
entry point; it only defines fixtures, so it changes nothing in test runs that do not use them).

- ``faasflow_env``: an environment with every faasflow variable (and faas-flow's legacy names)
  removed for the duration of the test; ``faasflow_env.set(name, value)`` sets one and
  ``faasflow_env.settings()`` reads :class:`~faasflow.settings.Settings` from it.
- ``plugin_manager``: a fresh plugin manager built from that environment.
- ``faasflow_registry``: the :class:`~faasflow.plugins.Registry` of that manager.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pluggy

    from faasflow.plugins import Registry
    from faasflow.settings import Settings


class FaasflowEnv:
    """Sets faasflow variables for one test; everything is restored afterwards."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch

    def set(self, name: str, value: str) -> None:
        """Set one environment variable for this test."""
        self._monkeypatch.setenv(name, value)

    def delete(self, name: str) -> None:
        """Remove one environment variable for this test."""
        self._monkeypatch.delenv(name, raising=False)

    def settings(self) -> Settings:
        """The settings this environment produces."""
        from faasflow.settings import Settings

        return Settings.from_env()


def _faasflow_names() -> set[str]:
    from faasflow.settings import EnvVars

    names = {name for name in os.environ if name.startswith("FAASFLOW_")}
    names.update(EnvVars.LEGACY.values())
    return names


@pytest.fixture
def faasflow_env(monkeypatch: pytest.MonkeyPatch) -> FaasflowEnv:
    """An environment without any faasflow variable."""
    for name in _faasflow_names():
        monkeypatch.delenv(name, raising=False)
    return FaasflowEnv(monkeypatch)


@pytest.fixture
def plugin_manager(faasflow_env: FaasflowEnv) -> pluggy.PluginManager:
    """A fresh plugin manager: the built-in backends and the installed entry points."""
    from faasflow.plugins import make_plugin_manager

    return make_plugin_manager(faasflow_env.settings())


@pytest.fixture
def faasflow_registry(plugin_manager: pluggy.PluginManager) -> Registry:
    """The backends that ``plugin_manager`` declares."""
    from faasflow.plugins import Registry

    return Registry(plugin_manager)
