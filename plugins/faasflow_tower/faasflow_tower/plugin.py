"""The faasflow plugin: mounts the dashboard at ``/ui`` of ``faasflow up``'s gateway."""

from __future__ import annotations

from collections.abc import Iterator

from faasflow import hookimpl
from faasflow.webapps import GatewayContext, WebApp
from faasflow_tower.app import TowerApp
from faasflow_tower.config import TowerConfig

__all__ = ["faasflow_web_apps"]


def _build(context: GatewayContext) -> TowerApp:
    return TowerApp(TowerConfig.from_env(context.environ, gateway_url=context.gateway_url))


@hookimpl
def faasflow_web_apps() -> Iterator[WebApp]:
    yield WebApp(name="tower", mount_path="/ui", factory=_build,
                 summary="the dashboard: flows, requests, live DAG, timeline, control")
