"""What the ``faasflow`` commands that talk to a gateway share: its URL, HTTP and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import requests

from faasflow.settings import EnvVars, Settings

__all__ = ["DEFAULT_GATEWAY", "GatewayClient", "GatewayUnreachable", "exit_code", "fail"]

#: Where ``faasflow up`` listens by default.
DEFAULT_GATEWAY = "http://127.0.0.1:8080"


class GatewayUnreachable(Exception):
    """The gateway could not be reached."""


def fail(message: str, code: int) -> int:
    """Print ``faasflow: error: <message>`` to stderr and return ``code``."""
    print(f"faasflow: error: {message}", file=sys.stderr)
    return code


def exit_code(status: int) -> int:
    """The exit code for an HTTP status (see :mod:`faasflow.cli`)."""
    from faasflow.cli import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE

    if status < 400:
        return 0
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (502, 503, 504):
        return EXIT_UNAVAILABLE
    if status < 500:
        return EXIT_USAGE
    return EXIT_FAILED


class GatewayClient:
    """A keep-alive session to one gateway."""

    def __init__(self, url: str | None = None, timeout: float = 330.0) -> None:
        if url is None:
            environ = Settings.from_env().environ
            url = environ.get(EnvVars.GATEWAY_URL) or environ.get("OPENFAAS_URL") or \
                DEFAULT_GATEWAY
        if "://" not in url:
            url = f"http://{url}"
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes = b"",
        headers: Mapping[str, str] | None = None,
        params: str | None = None,
        timeout: float | None = None,
    ) -> requests.Response:
        url = f"{self.url}{path}" + (f"?{params}" if params else "")
        try:
            return self.session.request(
                method, url, data=data, headers=dict(headers or {}),
                timeout=timeout or self.timeout,
            )
        except requests.ConnectionError:
            raise GatewayUnreachable(
                f"cannot reach the gateway at {self.url}: is `faasflow up` running? "
                "(pass --gateway URL or set OPENFAAS_URL)"
            ) from None
        except requests.Timeout:
            raise GatewayUnreachable(f"the gateway at {self.url} did not answer in time") from None
        except requests.RequestException as exc:
            raise GatewayUnreachable(f"request to {url} failed: {exc}") from None

    def close(self) -> None:
        self.session.close()
