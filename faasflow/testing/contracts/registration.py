"""Checks that a plugin's backend is installed and its README documents every option."""

from __future__ import annotations

from pathlib import Path

from faasflow.backends import Backend, Kind, RegisteredBackend


def assert_readme_documents(backend: Backend, readme: Path) -> None:
    """Check that a plugin's README has a row ``| `<option>` | `FAASFLOW_<NAME>_<OPTION>` |``
    for every option the backend declares, and names each ecosystem variable and secret."""
    text = readme.read_text()
    prefix = f"FAASFLOW_{backend.name.upper()}_"
    for option in backend.options:
        row = f"| `{option}` | `{prefix}{option.upper()}` |"
        assert row in text, f"{readme} lacks the options-table row {row}"
    for names in backend.env.values():
        for name in names:
            assert f"`{name}`" in text, f"{readme} does not name the variable {name}"
    for secret in backend.secrets.values():
        assert f"secret `{secret}`" in text, f"{readme} does not name the secret {secret}"


def assert_backend_registered(kind: Kind | str, name: str) -> RegisteredBackend:
    """Check that ``name`` is an installed backend of ``kind`` (found through the entry points,
    as a user's process would); return its registry entry."""
    from faasflow.plugins import Registry, make_plugin_manager
    from faasflow.settings import Settings

    kind = Kind(kind)
    registry = Registry(make_plugin_manager(Settings()))
    available = registry.backends(kind)
    broken = ", ".join(f"{b.name} ({b.distribution}): {b.error}" for b in registry.broken)
    assert name in available, (
        f"{kind.label} {name!r} is not registered; available: {', '.join(available) or 'none'}"
        + (f"; plugins that failed to load: {broken}" if broken else "")
        + " - is the distribution installed (pip install -e .) with a [project.entry-points."
        "faasflow] table?"
    )
    return available[name]
