"""The dashboard's options, read once from the environment (and OpenFaaS secret files)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

__all__ = ["READ_ONLY", "TowerConfig"]

READ_ONLY = "FAASFLOW_TOWER_READ_ONLY"
#: The gateway's basic-auth secrets, as OpenFaaS mounts them into a function.
USER_SECRET = "basic-auth-user"
PASSWORD_SECRET = "basic-auth-password"
_TRUE = ("1", "true", "yes", "on")


def _secret(directory: str, name: str) -> str | None:
    try:
        return (Path(directory) / name).read_text().strip() or None
    except OSError:
        return None


@attrs.frozen
class TowerConfig:
    gateway_url: str
    read_only: bool = False
    credentials: tuple[str, str] | None = None
    """The gateway's basic-auth user and password when the dashboard holds them (OpenFaaS):
    then the dashboard asks its users for the same ones. Without them it passes the user's own
    ``Authorization`` on to the gateway."""
    hmac_secret: bytes | None = None
    """Signs control calls to flows that authenticate them (``FAASFLOW_AUTHENTICATE_REQUEST``)."""
    use_dot: bool = True
    base_path: str = ""
    """Where the pages live when the WSGI server does not say (``SCRIPT_NAME``): on OpenFaaS
    ``/function/faasflow-tower`` (``FAASFLOW_TOWER_BASE_PATH``)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str], gateway_url: str | None = None
                 ) -> TowerConfig:
        """``gateway_url`` (else ``FAASFLOW_GATEWAY_URL``, else OpenFaaS's ``gateway_url``),
        ``FAASFLOW_TOWER_READ_ONLY``, ``FAASFLOW_TOWER_DOT`` (0 draws without Graphviz), the
        basic-auth secrets under ``FAASFLOW_SECRET_MOUNT_PATH`` (``/var/openfaas/secrets``) or
        ``FAASFLOW_TOWER_BASIC_AUTH_USER``/``_PASSWORD``, and the flows' HMAC secret."""
        from faasflow.settings import Settings

        settings = Settings.from_env(environ)
        url = gateway_url or environ.get("FAASFLOW_GATEWAY_URL") or \
            environ.get("gateway_url") or settings.gateway_url
        mount = settings.secret_mount_path
        user = environ.get("FAASFLOW_TOWER_BASIC_AUTH_USER") or _secret(mount, USER_SECRET)
        password = environ.get("FAASFLOW_TOWER_BASIC_AUTH_PASSWORD") or \
            _secret(mount, PASSWORD_SECRET)
        return cls(
            gateway_url=url.rstrip("/"),
            read_only=environ.get(READ_ONLY, "").strip().lower() in _TRUE,
            credentials=(user, password) if user and password else None,
            hmac_secret=settings.hmac_secret,
            use_dot=environ.get("FAASFLOW_TOWER_DOT", "1").strip().lower() in _TRUE,
            base_path=environ.get("FAASFLOW_TOWER_BASE_PATH", "").rstrip("/"),
        )
