"""Finding plugins and the backends they declare.

:func:`make_plugin_manager` builds a fresh pluggy manager: the hook specs, the core's own default
plugins, and every ``faasflow`` entry point that the load controls allow. :class:`Registry` is
the typed face of that manager: it asks each hook once, checks the records, and builds the
configured backend of each kind.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import attrs
import pluggy

from faasflow import hookspecs
from faasflow.backends import Backend, Kind, RegisteredBackend
from faasflow.errors import DuplicateBackendError, PluginLoadError, UnknownBackendError
from faasflow.settings import Settings

__all__ = ["DEFAULT_PLUGINS", "BrokenPlugin", "Registry", "make_plugin_manager"]

log = logging.getLogger("faasflow.plugins")

ENTRY_POINT_GROUP = "faasflow"

#: The core's own backends, registered through the same hooks as any third-party plugin.
DEFAULT_PLUGINS = (
    "faasflow.default_plugins.memory",
    "faasflow.default_plugins.sqlite",
    "faasflow.default_plugins.filesystem",
    "faasflow.default_plugins.tracers",
    "faasflow.default_plugins.invokers",
)

_CORE = "faasflow (built-in)"


@attrs.frozen
class BrokenPlugin:
    """An entry point that failed to import; reported by name instead of a traceback."""

    name: str
    distribution: str
    error: str


def make_plugin_manager(
    settings: Settings | None = None, *, load_entrypoints: bool = True
) -> pluggy.PluginManager:
    """A new plugin manager with the core plugins and the allowed entry points loaded.

    ``settings.load_plugins`` (``FAASFLOW_LOAD_PLUGINS``) limits third-party plugins to the
    listed distributions (empty: none), ``settings.disable_plugins``
    (``FAASFLOW_DISABLE_PLUGINS``) blocks entry points by name, and
    ``settings.trace_plugins`` logs every hook call.
    """
    settings = settings or Settings()
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.broken = []  # type: ignore[attr-defined]
    pm.distributions = {}  # type: ignore[attr-defined]  # plugin name -> (distribution, version)
    for module in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module), name=module)
    for name in settings.disable_plugins:
        pm.set_blocked(name)
    if load_entrypoints:
        _load_entrypoints(pm, settings)
    pm.check_pending()
    if settings.trace_plugins:
        pm.trace.root.setwriter(log.info)
        pm.enable_tracing()
    return pm


def _load_entrypoints(pm: pluggy.PluginManager, settings: Settings) -> None:
    allowed = None if settings.load_plugins is None else set(settings.load_plugins)
    seen: set[str] = set()
    for dist in metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or ep.name in seen:
                continue
            if allowed is not None and dist_name not in allowed:
                continue
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            seen.add(ep.name)
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
                msg = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "faasflow plugin %r from %s failed to load and was skipped: %s "
                    "(set FAASFLOW_DISABLE_PLUGINS=%s to silence)",
                    ep.name, dist_name, msg, ep.name,
                )
                pm.broken.append(BrokenPlugin(ep.name, dist_name, msg))  # type: ignore[attr-defined]
                continue
            pm.register(plugin, name=ep.name)
            pm.distributions[ep.name] = (dist_name, dist.version)  # type: ignore[attr-defined]


class Registry:
    """The backends every loaded plugin declares, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._by_kind: dict[Kind, dict[str, RegisteredBackend]] = {}
        dists: dict[str, tuple[str, str]] = getattr(pm, "distributions", {})
        for kind in Kind:
            found: dict[str, RegisteredBackend] = {}
            hook = getattr(pm.hook, kind.hook)
            for impl in hook.get_hookimpls():
                dist_name, version = dists.get(impl.plugin_name, (_CORE, _core_version()))
                records = _call(impl.function, impl.plugin_name)
                for record in records:
                    if not isinstance(record, Backend):
                        raise PluginLoadError(
                            f"plugin {impl.plugin_name!r} ({dist_name}) returned "
                            f"{type(record).__name__} from {kind.hook}(), expected faasflow.Backend"
                        )
                    if record.name in found:
                        other = found[record.name]
                        raise DuplicateBackendError(
                            f"{kind.label} {record.name!r} is declared twice: by "
                            f"{other.plugin!r} ({other.distribution}) and by "
                            f"{impl.plugin_name!r} ({dist_name}); uninstall one or block it with "
                            f"FAASFLOW_DISABLE_PLUGINS"
                        )
                    found[record.name] = RegisteredBackend(
                        kind, record, impl.plugin_name, dist_name, version
                    )
            self._by_kind[kind] = dict(sorted(found.items()))

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """Build the plugin manager for ``settings`` and collect its backends."""
        return cls(make_plugin_manager(settings))

    @property
    def broken(self) -> list[BrokenPlugin]:
        """Entry points that failed to import."""
        return list(getattr(self.pm, "broken", []))

    def backends(self, kind: Kind) -> dict[str, RegisteredBackend]:
        """Every backend of ``kind``, by name."""
        return dict(self._by_kind[kind])

    def all(self) -> list[RegisteredBackend]:
        """Every backend of every kind."""
        return [b for kind in Kind for b in self._by_kind[kind].values()]

    def get(self, kind: Kind, name: str) -> RegisteredBackend:
        """The backend ``name`` of ``kind``, or an error listing the names that exist."""
        try:
            return self._by_kind[kind][name]
        except KeyError:
            broken = [b for b in self.broken if b.name == name]
            note = (
                f"plugin {name!r} from {broken[0].distribution} failed to load: {broken[0].error}"
                if broken else ""
            )
            raise UnknownBackendError(
                kind.value, name, self._by_kind[kind], kind.env_var, note
            ) from None

    def create(self, kind: Kind, settings: Settings, name: str | None = None) -> Any:
        """Build the configured (or the named) backend of ``kind`` from its options."""
        registered = self.get(kind, name or settings.backend_name(kind))
        options = settings.options_for(registered.backend)
        return registered.backend.factory(options)


def _call(function: Any, plugin_name: str) -> Iterable[Any]:
    try:
        return list(function() or ())
    except Exception as exc:
        raise PluginLoadError(
            f"plugin {plugin_name!r} raised while declaring its backends: "
            f"{type(exc).__name__}: {exc} (disable it with FAASFLOW_DISABLE_PLUGINS={plugin_name})"
        ) from exc


def _core_version() -> str:
    try:
        return metadata.version("faasflow")
    except metadata.PackageNotFoundError:
        return "0+unknown"
