"""Basic authentication of the local gateway's ``/system/*`` API, as OpenFaaS does it.

With ``basic_auth=true`` (or ``faasflow up --basic-auth``) the credentials are the secrets
``basic-auth-user`` and ``basic-auth-password`` in the secrets directory; ``faasflow up``
creates them on first start (user ``admin``, a random password). ``/function/*``,
``/async-function/*`` and ``/healthz`` stay open, as in OpenFaaS.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from pathlib import Path

import attrs

from faasflow.errors import ConfigurationError
from faasflow.runtime.web import WebRequest, WebResponse, error

__all__ = ["PASSWORD_SECRET", "REALM", "USER_SECRET", "Credentials", "load_credentials"]

USER_SECRET = "basic-auth-user"
PASSWORD_SECRET = "basic-auth-password"
#: The realm OpenFaaS's gateway names in ``WWW-Authenticate``.
REALM = "Restricted"


@attrs.frozen
class Credentials:
    """The one user allowed on ``/system/*``."""

    user: str
    password: str = attrs.field(repr=False)

    def allows(self, request: WebRequest) -> bool:
        """True when ``request`` carries these credentials as HTTP Basic auth."""
        header = request.header("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # both compared, whatever the first gives, so timing says nothing about which failed
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return bool(sep) and user_ok and password_ok

    def challenge(self, request: WebRequest) -> WebResponse:
        """The 401 answer asking for credentials."""
        return error(request, 401, "this route needs the gateway's basic auth credentials "
                     f"(secrets {USER_SECRET} and {PASSWORD_SECRET}; faas-cli login -u USER "
                     "--password-stdin)", None,
                     ("WWW-Authenticate", f'Basic realm="{REALM}"'))


def load_credentials(secrets_dir: Path, *, create: bool) -> tuple[Credentials, bool]:
    """The credentials in ``secrets_dir`` and whether they were created now. With ``create``
    a missing user becomes ``admin`` and a missing password a random one (files mode 0600);
    without, a missing secret is a :class:`ConfigurationError` naming the file."""
    created = False
    values: dict[str, str] = {}
    for name, default in ((USER_SECRET, "admin"), (PASSWORD_SECRET, None)):
        path = secrets_dir / name
        try:
            values[name] = path.read_text().strip()
        except FileNotFoundError:
            if not create:
                raise ConfigurationError(
                    f"basic auth is on but the secret {path} does not exist; create it (mode "
                    "0600) or turn basic auth off"
                ) from None
            values[name] = default or secrets.token_urlsafe(18)
            write_secret(path, values[name])
            created = True
        except OSError as exc:
            raise ConfigurationError(f"cannot read the secret {path}: {exc.strerror}") from None
        if not values[name]:
            raise ConfigurationError(f"the secret {path} is empty; write the {name} into it")
    return Credentials(values[USER_SECRET], values[PASSWORD_SECRET]), created


def write_secret(path: Path, value: str) -> None:
    """Create ``path`` (mode 0600, its directory 0700) holding ``value``."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value)
