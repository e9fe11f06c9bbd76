"""The dashboard as one OpenFaaS function: a WSGI app factory for gunicorn.

The function reads ``gateway_url`` (default ``http://gateway.openfaas:8080``), the gateway's
basic-auth secrets (``basic-auth-user``, ``basic-auth-password`` under
``/var/openfaas/secrets``) and ``FAASFLOW_TOWER_READ_ONLY`` from its environment; see the
package README for the ``stack.yml`` entry.
"""

from __future__ import annotations

import os

from faasflow_tower.app import TowerApp
from faasflow_tower.config import TowerConfig

__all__ = ["create_app"]


def create_app() -> TowerApp:
    """``gunicorn 'faasflow_tower.openfaas:create_app()'``."""
    environ = dict(os.environ)
    environ.setdefault("FAASFLOW_TOWER_BASE_PATH", "/function/faasflow-tower")
    return TowerApp(TowerConfig.from_env(environ))
