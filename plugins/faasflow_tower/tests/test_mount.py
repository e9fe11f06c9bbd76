"""The core's web app hook: faasflow-tower is found through it and mounted under /ui."""

from __future__ import annotations

from typing import Any

import pytest

from faasflow.errors import ConfigurationError
from faasflow.settings import Settings
from faasflow.webapps import GatewayContext, WebApp, WebMounts


def app_named(name: str) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return [f"{name} {environ['SCRIPT_NAME']} {environ['PATH_INFO']}".encode()]

    return app


def test_the_installed_dashboard_is_mounted_at_ui() -> None:
    mounts = WebMounts.from_plugins("http://127.0.0.1:1", Settings.from_env({}))
    assert mounts.names == {"/ui": "tower"}


def test_the_longest_mount_path_wins_and_sees_the_rest_of_the_path() -> None:
    mounts = WebMounts.build([WebApp("a", "/ui", lambda c: app_named("a")),
                              WebApp("b", "/ui/extra", lambda c: app_named("b"))], "http://x")
    environ: dict[str, Any] = {"PATH_INFO": "/ui/extra/page"}
    app = mounts.route(environ)
    assert app is not None
    assert app(environ, None) == [b"b /ui/extra /page"]
    assert mounts.route({"PATH_INFO": "/function/ui"}) is None
    assert mounts.route({"PATH_INFO": "/uix"}) is None


def test_the_factory_gets_the_gateway_url_and_its_mount_path() -> None:
    seen: list[GatewayContext] = []
    WebMounts.build([WebApp("a", "/ui/a", lambda c: seen.append(c) or app_named("a"))],
                    "http://127.0.0.1:9")
    assert (seen[0].gateway_url, seen[0].mount_path) == ("http://127.0.0.1:9", "/ui/a")


def test_two_apps_on_one_mount_path_are_refused_naming_both() -> None:
    with pytest.raises(ConfigurationError, match="'a' and 'b' both mount at /ui"):
        WebMounts.build([WebApp("a", "/ui", lambda c: app_named("a")),
                         WebApp("b", "/ui", lambda c: app_named("b"))], "http://x")


@pytest.mark.parametrize("path", ["/system", "/ui/", "/ui/Caps", "ui"])
def test_a_mount_path_outside_ui_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="must be /ui"):
        WebApp("a", path, lambda c: app_named("a"))
