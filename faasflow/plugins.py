"""Finding plugins and the backends they declare.

:func:`make_plugin_manager` builds a fresh pluggy manager: the hook specs, the core's own default
plugins, and every ``faasflow`` entry point that the load controls allow. :class:`Registry` is
the typed face of that manager: it asks each hook once, checks the records, and builds the
configured backend of each kind.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

import attrs
import pluggy

from faasflow import hookspecs
from faasflow.backends import Backend, Kind, RegisteredBackend
from faasflow.errors import (
    ConfigurationError,
    DuplicateBackendError,
    FaasflowError,
    PluginLoadError,
    UnknownBackendError,
)
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
    (``FAASFLOW_DISABLE_PLUGINS``) blocks plugins by entry-point name or distribution name, and
    ``settings.trace_plugins`` logs every hook call to the ``faasflow.plugins`` logger.
    A plugin that fails to import or to validate is skipped and kept in ``pm.broken``.
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
    _check_pending(pm)
    pm.trace_plugins = settings.trace_plugins  # type: ignore[attr-defined]
    if settings.trace_plugins:
        pm.add_hookcall_monitoring(_before_hook, _after_hook)
    return pm


def _before_hook(hook: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
    log.info("hook %s() called on %s", hook, ", ".join(repr(i.plugin_name) for i in impls))


def _after_hook(
    outcome: pluggy.Result[Any],
    hook: str,
    impls: Sequence[pluggy.HookImpl],
    kwargs: Mapping[str, Any],
) -> None:
    names = ", ".join(repr(i.plugin_name) for i in impls)
    if outcome.exception is not None:
        log.info("hook %s() on %s raised %r", hook, names, outcome.exception)
    else:
        log.info("hook %s() on %s returned", hook, names)


def _normalise_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _broken(pm: pluggy.PluginManager, name: str, dist_name: str, error: str) -> None:
    log.warning(
        "faasflow plugin %r from %s failed to load and was skipped: %s "
        "(set FAASFLOW_DISABLE_PLUGINS=%s to silence)",
        name, dist_name, error, name,
    )
    pm.broken.append(BrokenPlugin(name, dist_name, error))  # type: ignore[attr-defined]


def _load_entrypoints(pm: pluggy.PluginManager, settings: Settings) -> None:
    allowed = (
        None if settings.load_plugins is None
        else {_normalise_dist(n) for n in settings.load_plugins}
    )
    disabled = {_normalise_dist(n) for n in settings.disable_plugins}
    owners: dict[str, str] = {}  # entry-point name -> distribution that registered it
    for dist in metadata.distributions():
        # Entry points first: parsing every distribution's METADATA for its name costs ~50 ms.
        eps = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        if not eps:
            continue
        dist_name = dist.metadata["Name"] or "?"
        normalised = _normalise_dist(dist_name)
        if normalised in disabled or (allowed is not None and normalised not in allowed):
            continue
        for ep in eps:
            if pm.is_blocked(ep.name):
                continue
            owner = owners.get(ep.name)
            if owner is not None:
                if _normalise_dist(owner) != normalised:  # the same dist seen twice is harmless
                    _broken(
                        pm, ep.name, dist_name,
                        f"entry point name {ep.name!r} is already taken by {owner}",
                    )
                continue
            if pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:  # any failure is reported, not raised
                _broken(pm, ep.name, dist_name, f"{type(exc).__name__}: {exc}")
                continue
            owners[ep.name] = dist_name
            pm.distributions[ep.name] = (dist_name, dist.version)  # type: ignore[attr-defined]


def _check_pending(pm: pluggy.PluginManager) -> None:
    """Drop (and report) plugins that implement hooks faasflow does not define, e.g. a typo."""
    while True:
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            dists: dict[str, tuple[str, str]] = pm.distributions  # type: ignore[attr-defined]
            dist_name = dists.pop(name, (_CORE, ""))[0]
            if dist_name == _CORE:
                raise PluginLoadError(f"built-in plugin {name!r} is invalid: {exc}") from exc
            pm.unregister(exc.plugin)
            _broken(pm, name, dist_name, f"{exc} (known hooks: {', '.join(_HOOKS)})")
            continue
        return


_HOOKS = tuple(kind.hook for kind in Kind)


_SHARED: dict[tuple[object, ...], Registry] = {}
_SHARED_LOCK = threading.Lock()


class Registry:
    """The backends every loaded plugin declares, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._by_kind: dict[Kind, dict[str, RegisteredBackend]] = {}
        dists: dict[str, tuple[str, str]] = getattr(pm, "distributions", {})
        for kind in Kind:
            found: dict[str, RegisteredBackend] = {}
            hook = getattr(pm.hook, kind.hook)
            plugins = [impl.plugin for impl in hook.get_hookimpls()]
            for impl in hook.get_hookimpls():
                dist_name, version = dists.get(impl.plugin_name, (_CORE, _core_version()))
                # Through pluggy (one plugin at a time) so FAASFLOW_TRACE_PLUGINS sees the call.
                caller = pm.subset_hook_caller(
                    kind.hook, [p for p in plugins if p is not impl.plugin]
                )
                records = _call(caller, impl.plugin_name)
                if getattr(pm, "trace_plugins", False):
                    log.info(
                        "plugin %r (%s) declares %s backends: %s",
                        impl.plugin_name, dist_name, kind.label,
                        ", ".join(getattr(r, "name", repr(r)) for r in records) or "none",
                    )
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

    @classmethod
    def shared(cls, settings: Settings) -> Registry:
        """The registry for ``settings``' plugin-loading controls, built once per process.

        Discovery scans every installed distribution (tens of milliseconds); engines and
        ``faasflow.run`` calls in one process reuse its result.
        """
        key = (settings.load_plugins, settings.disable_plugins, settings.trace_plugins)
        with _SHARED_LOCK:
            registry = _SHARED.get(key)
            if registry is None:
                registry = _SHARED[key] = cls.from_settings(settings)
            return registry

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
            same = [b for b in self.broken if b.name == name]
            if same:
                note = (
                    f"plugin {name!r} from {same[0].distribution} failed to load: {same[0].error}"
                )
            elif self.broken:
                note = "plugins that failed to load: " + "; ".join(
                    f"{b.name!r} from {b.distribution}: {b.error}" for b in self.broken
                )
            else:
                note = ""
            raise UnknownBackendError(
                kind.value, name, self._by_kind[kind], kind.env_var, note
            ) from None

    def create(self, kind: Kind, settings: Settings, name: str | None = None) -> Any:
        """Build the configured (or the named) backend of ``kind`` from its options."""
        registered = self.get(kind, name or settings.backend_name(kind))
        options = settings.options_for(registered.backend)
        try:
            return registered.backend.factory(options)
        except FaasflowError:
            raise
        except Exception as exc:
            prefix = f"FAASFLOW_{registered.name.upper()}_"
            raise ConfigurationError(
                f"could not create {kind.label} {registered.name!r} "
                f"(from {registered.distribution}): {type(exc).__name__}: {exc}; check its "
                f"options ({prefix}*)"
            ) from exc


def _call(caller: Any, plugin_name: str) -> Iterable[Any]:
    try:
        return [record for result in caller() for record in (result or ())]
    except Exception as exc:
        raise PluginLoadError(
            f"plugin {plugin_name!r} raised while declaring its backends: "
            f"{type(exc).__name__}: {exc} (disable it with FAASFLOW_DISABLE_PLUGINS={plugin_name})"
        ) from exc


@functools.cache
def _core_version() -> str:
    try:
        return metadata.version("faasflow")
    except metadata.PackageNotFoundError:
        return "0+unknown"
