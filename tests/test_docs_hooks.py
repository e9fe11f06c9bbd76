"""The plugin docs keep up with the code: every hook and every built-in backend is documented."""

from __future__ import annotations

import inspect
from pathlib import Path

from faasflow import hookspecs
from faasflow.backends import Kind
from faasflow.plugins import Registry
from faasflow.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def hook_names() -> list[str]:
    return [
        name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("faasflow_")
    ]


def test_there_is_one_hook_per_backend_kind_one_for_web_apps_and_one_for_queues() -> None:
    assert sorted(hook_names()) == sorted(
        [*(kind.hook for kind in Kind), "faasflow_web_apps", "faasflow_queues"])


def test_every_hook_has_a_section_in_the_hook_reference() -> None:
    text = (DOCS / "plugins" / "hooks.md").read_text()
    missing = [name for name in hook_names() if f"## {name}()" not in text]
    assert not missing, f"document these hooks in docs/plugins/hooks.md: {missing}"


def test_every_built_in_backend_is_documented_in_the_configuration_reference() -> None:
    text = (DOCS / "configuration.md").read_text()
    registry = Registry.from_settings(Settings(load_plugins=()))
    missing = [
        f"{b.kind.value}:{b.name}" for b in registry.all() if f"`{b.name}`" not in text
    ]
    assert not missing, f"document these built-in backends in docs/configuration.md: {missing}"
