"""What the flow app checks before it acts: callback URLs and signed control requests.

Callback URLs: a request's ``X-Faas-Flow-Callback-Url`` makes the flow POST its output to any
address the caller names, from inside the cluster (server-side request forgery). Only http and
https are accepted; ``FAASFLOW_CALLBACK_HOSTS`` (comma-separated globs, matched against the host
and against ``host:port``) limits the hosts. Without it every host is allowed except
link-local addresses (``169.254.0.0/16``, ``fe80::/10``: cloud metadata services).

Control requests: with ``FAASFLOW_AUTHENTICATE_REQUEST`` on, every route other than a new request
(which signs its body) and a forwarded iteration (which carries its own signature) needs
``X-Hub-Signature-256: sha256=<HMAC-SHA256 of "<path>[?<query>]\\n<body>">``, keyed with the
flow's HMAC secret. The path is the decoded path as requested, the query as sent.
"""

from __future__ import annotations

import fnmatch
import hmac
import ipaddress
from urllib.parse import urlsplit

from faasflow.errors import ConfigurationError, SignatureError
from faasflow.settings import HMAC_SECRET_NAME, EnvVars, Settings

__all__ = ["CallbackRefused", "check_callback", "signed_target", "verify_control"]

SIGNATURE = "X-Hub-Signature-256"


class CallbackRefused(ValueError):
    """A callback URL the flow will not call; the message names the fix."""


def check_callback(url: str, settings: Settings, header: str) -> None:
    """Raise :class:`CallbackRefused` unless ``url`` is an http(s) URL to an allowed host."""
    if not url.isascii() or any(c in url for c in " \t\r\n"):
        raise CallbackRefused(
            f"header {header}: {url!r} has non-ASCII characters or spaces; percent-encode the "
            "path and write a non-ASCII host in its IDNA (xn--) form"
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused(f"header {header}: {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise CallbackRefused(
            f"header {header}: {url!r} is not an http(s) URL with a host; send "
            "http://<host>[:<port>]/<path>"
        )
    allowed = settings.callback_hosts
    if allowed is None:
        if _link_local(host):
            raise CallbackRefused(
                f"header {header}: {url!r} names a link-local address (cloud metadata "
                f"services live there); list it in {EnvVars.CALLBACK_HOSTS} to allow it"
            )
        return
    candidates = [host.lower()]
    if port is not None:
        candidates.append(f"{host.lower()}:{port}")
    if not any(fnmatch.fnmatchcase(c, glob) for c in candidates for glob in allowed):
        raise CallbackRefused(
            f"header {header}: host {host!r} is not in {EnvVars.CALLBACK_HOSTS} "
            f"({','.join(allowed) or 'empty'}); add it there to allow callbacks to it"
        )


def _link_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_link_local
    except ValueError:
        return False


def signed_target(path: str, query: str, body: bytes) -> bytes:
    """The bytes a control request signs: ``<path>[?<query>]``, a newline, then the body."""
    target = path + (f"?{query}" if query else "")
    return target.encode("utf-8", "surrogateescape") + b"\n" + body


def verify_control(
    settings: Settings, path: str, query: str, body: bytes, header: str | None
) -> None:
    """Raise :class:`SignatureError` unless ``header`` signs this control request."""
    from faasflow.engine.message import sign_body

    key = settings.hmac_secret
    if key is None:
        raise ConfigurationError(
            "failed to get auth key: request authentication is on but no secret is set "
            f"(create the OpenFaaS secret {HMAC_SECRET_NAME} or set {EnvVars.HMAC_SECRET})"
        )
    if not header:
        raise SignatureError(
            f"failed to authenticate request: header {SIGNATURE} is missing; control routes, "
            "records and the request list sign '<path>[?<query>]\\n<body>' (docs/runtime.md)"
        )
    expected = sign_body(key, signed_target(path, query, body))
    if not hmac.compare_digest(header.strip().encode("utf-8", "replace"), expected.encode()):
        raise SignatureError(
            f"failed to authenticate request: {SIGNATURE} does not sign "
            f"'{path}{'?' + query if query else ''}' and its body"
        )
