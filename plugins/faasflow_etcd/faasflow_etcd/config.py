"""Where and how to reach etcd: the ``FAASFLOW_ETCD_*`` options, checked and resolved."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import attrs

from faasflow.errors import ConfigurationError
from faasflow.interfaces import Options
from faasflow_etcd import OPTIONS

__all__ = ["DEFAULT_ENDPOINT", "DEFAULT_PORT", "DEFAULT_TIMEOUT", "EtcdConfig"]

DEFAULT_ENDPOINT = "127.0.0.1:2379"
DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0


def _bool(raw: str, option: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigurationError(
        f"FAASFLOW_ETCD_{option.upper()}={raw!r} is not a boolean; use true or false"
    )


def _host_port(raw: str) -> tuple[str, int, str]:
    """``(host, port, scheme)`` of one endpoint written as a URL or ``host[:port]``."""
    text = raw.strip()
    parts = urlsplit(text if "://" in text else f"//{text}")
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = -1
    if not parts.hostname or port < 0 or scheme not in {"", "http", "https"} or parts.path:
        raise ConfigurationError(
            f"etcd endpoint {raw!r} is not host:port or http(s)://host:port "
            "(FAASFLOW_ETCD_ENDPOINTS / ETCDCTL_ENDPOINTS)"
        )
    host = parts.hostname
    return (f"[{host}]" if ":" in host else host), port, scheme


@attrs.frozen
class EtcdConfig:
    """Where and how to reach etcd, resolved from the backend options."""

    endpoints: tuple[tuple[str, int], ...]
    tls: bool = False
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_options(cls, options: Options) -> EtcdConfig:
        """Check and resolve ``FAASFLOW_ETCD_*`` options; raise ConfigurationError naming the
        variable at fault."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown etcd option(s) {', '.join(unknown)} (from FAASFLOW_ETCD_"
                f"{unknown[0].upper()}); valid options: {', '.join(OPTIONS)}"
            )
        raw = [e for e in (options.get("endpoints") or DEFAULT_ENDPOINT).split(",") if e.strip()]
        parsed = [_host_port(e) for e in raw] or [_host_port(DEFAULT_ENDPOINT)]
        schemes = {scheme for _, _, scheme in parsed if scheme}
        if len(schemes) > 1:
            raise ConfigurationError(
                "etcd endpoints mix http:// and https:// (FAASFLOW_ETCD_ENDPOINTS); "
                "use one scheme for every member"
            )
        ca_cert, cert, key = (options.get(n) or None for n in ("ca_cert", "cert", "key"))
        tls = (
            schemes == {"https"}
            or ca_cert is not None
            or cert is not None
            or _bool(options.get("tls", ""), "tls")
        )
        if schemes == {"http"} and tls:
            raise ConfigurationError(
                "etcd endpoints use http:// but TLS options are set; use https:// endpoints"
            )
        if (cert is None) != (key is None):
            raise ConfigurationError(
                "etcd mutual TLS needs both FAASFLOW_ETCD_CERT and FAASFLOW_ETCD_KEY"
            )
        for name, path in (("ca_cert", ca_cert), ("cert", cert), ("key", key)):
            if path is not None and not Path(path).is_file():
                raise ConfigurationError(
                    f"FAASFLOW_ETCD_{name.upper()}={path!r}: no such file"
                )
        user = options.get("user") or None
        password = options.get("password") or None
        if user is not None and password is None and ":" in user:
            user, password = user.split(":", 1)  # etcdctl's --user user:password form
        if (user is None) != (password is None):
            raise ConfigurationError(
                "etcd authentication needs both FAASFLOW_ETCD_USER and FAASFLOW_ETCD_PASSWORD"
            )
        timeout_raw = options.get("timeout") or str(DEFAULT_TIMEOUT)
        try:
            timeout = float(timeout_raw)
        except ValueError:
            timeout = 0.0
        if timeout <= 0:
            raise ConfigurationError(
                f"FAASFLOW_ETCD_TIMEOUT={timeout_raw!r} must be a positive number of seconds"
            )
        return cls(
            endpoints=tuple((host, port) for host, port, _ in parsed),
            tls=tls,
            ca_cert=ca_cert,
            cert=cert,
            key=key,
            user=user,
            password=password,
            timeout=timeout,
        )

    def label(self, index: int) -> str:
        """The URL of endpoint ``index``, as error messages show it."""
        host, port = self.endpoints[index]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"
