"""Web pages plugins mount into the local gateway under ``/ui/``.

A plugin answers the ``faasflow_web_apps`` hook with :class:`WebApp` records; ``faasflow up``
builds each app once it knows its own URL and sends it every request whose path starts with the
app's ``mount_path`` (the longest match wins). The app sees WSGI's ``SCRIPT_NAME`` set to its
mount path and ``PATH_INFO`` to the rest, so it builds links without knowing where it lives.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from faasflow.errors import ConfigurationError

if TYPE_CHECKING:
    from faasflow.settings import Settings

__all__ = ["GatewayContext", "WebApp", "WebMounts"]

log = logging.getLogger("faasflow.webapps")

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]
#: Every plugin page lives below this prefix, so it never shadows the gateway's own routes.
UI_PREFIX = "/ui"
_MOUNT = re.compile(r"^/ui(/[a-z0-9][a-z0-9-]*)*$")


def _check_mount(_: object, __: attrs.Attribute[str], path: str) -> None:
    if not _MOUNT.match(path):
        raise ValueError(
            f"web app mount path {path!r} must be /ui or /ui/<name>[/<name>...] with lower-case "
            "letters, digits and dashes (the gateway's own routes stay outside /ui)"
        )


@attrs.frozen
class GatewayContext:
    """What a web app is told about the gateway that mounts it."""

    gateway_url: str
    """Where the app reaches the gateway's API (``/system/*``, ``/function/*``)."""
    mount_path: str
    """The path prefix the app is served under (its WSGI ``SCRIPT_NAME``)."""
    environ: Mapping[str, str] = attrs.field(factory=dict)
    """The settings' environment, for apps with options of their own."""


@attrs.frozen
class WebApp:
    """One web app a plugin provides: ``factory(context)`` returns a WSGI application."""

    name: str
    mount_path: str = attrs.field(validator=_check_mount)
    factory: Callable[[GatewayContext], WSGIApp]
    summary: str = ""


class WebMounts:
    """The web apps of a gateway, keyed by mount path, and the routing to them."""

    def __init__(self, apps: Mapping[str, WSGIApp], names: Mapping[str, str]) -> None:
        self._apps = dict(sorted(apps.items(), key=lambda item: -len(item[0])))
        self.names = dict(names)
        """mount path -> web app name, for the start-up message."""

    @classmethod
    def build(cls, records: Iterable[WebApp], gateway_url: str,
              environ: Mapping[str, str] | None = None) -> WebMounts:
        """Build every app; two apps on one mount path are a configuration error."""
        apps: dict[str, WSGIApp] = {}
        names: dict[str, str] = {}
        for record in records:
            if record.mount_path in apps:
                raise ConfigurationError(
                    f"web apps {names[record.mount_path]!r} and {record.name!r} both mount at "
                    f"{record.mount_path}; uninstall or disable one (FAASFLOW_DISABLE_PLUGINS)"
                )
            context = GatewayContext(gateway_url, record.mount_path, dict(environ or {}))
            apps[record.mount_path] = record.factory(context)
            names[record.mount_path] = record.name
        return cls(apps, names)

    @classmethod
    def from_plugins(cls, gateway_url: str, settings: Settings | None = None) -> WebMounts:
        """The web apps every installed plugin declares (none when no plugin has any)."""
        from faasflow.plugins import make_plugin_manager
        from faasflow.settings import Settings

        settings = settings or Settings.from_env()
        pm = make_plugin_manager(settings)
        records = [r for answer in pm.hook.faasflow_web_apps() for r in (answer or ())]
        return cls.build(records, gateway_url, settings.environ)

    def route(self, environ: dict[str, Any]) -> WSGIApp | None:
        """The app serving this request, with ``SCRIPT_NAME``/``PATH_INFO`` set for it."""
        path = str(environ.get("PATH_INFO") or "/")
        if not path.startswith(UI_PREFIX):
            return None
        for mount, app in self._apps.items():
            if path == mount or path.startswith(mount + "/"):
                environ["SCRIPT_NAME"] = str(environ.get("SCRIPT_NAME") or "") + mount
                environ["PATH_INFO"] = path[len(mount):]
                return app
        return None

    def __bool__(self) -> bool:
        return bool(self._apps)
