"""Configuration: the only module that reads the environment and secret files.

Every variable name lives on :class:`EnvVars`; ``docs/configuration.md`` documents each one and a
test keeps the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from faasflow.backends import Backend, Kind
from faasflow.errors import ConfigurationError

__all__ = ["EnvVars", "Settings"]


class EnvVars:
    """Names of every environment variable faasflow reads."""

    STATE_STORE = "FAASFLOW_STATE_STORE"
    DATA_STORE = "FAASFLOW_DATA_STORE"
    TRACER = "FAASFLOW_TRACER"
    INVOKER = "FAASFLOW_INVOKER"
    LOAD_PLUGINS = "FAASFLOW_LOAD_PLUGINS"
    DISABLE_PLUGINS = "FAASFLOW_DISABLE_PLUGINS"
    TRACE_PLUGINS = "FAASFLOW_TRACE_PLUGINS"
    FLOW_NAME = "FAASFLOW_FLOW_NAME"
    GATEWAY_URL = "FAASFLOW_GATEWAY_URL"
    HMAC_SECRET = "FAASFLOW_HMAC_SECRET"
    SECRET_MOUNT_PATH = "FAASFLOW_SECRET_MOUNT_PATH"
    VALIDATE_REQUEST = "FAASFLOW_VALIDATE_REQUEST"
    AUTHENTICATE_REQUEST = "FAASFLOW_AUTHENTICATE_REQUEST"
    INLINE_LIMIT = "FAASFLOW_INLINE_LIMIT"
    RECORD_RETENTION = "FAASFLOW_RECORD_RETENTION"
    REQUEST_TIMEOUT = "FAASFLOW_REQUEST_TIMEOUT"
    DEFAULT_METHOD = "FAASFLOW_DEFAULT_METHOD"
    DATA_DIR = "FAASFLOW_DATA_DIR"
    WORKERS = "FAASFLOW_WORKERS"
    BACKEND_RETRY = "FAASFLOW_BACKEND_RETRY"
    CALL_RETRIES = "FAASFLOW_CALL_RETRIES"
    ITERATION_ATTEMPTS = "FAASFLOW_ITERATION_ATTEMPTS"
    CLAIM_LEASE = "FAASFLOW_CLAIM_LEASE"
    REDRIVE = "FAASFLOW_REDRIVE"
    CAPTURE = "FAASFLOW_CAPTURE"
    CAPTURE_LIMIT = "FAASFLOW_CAPTURE_LIMIT"
    CAPTURE_REDACT = "FAASFLOW_CAPTURE_REDACT"
    SWEEP_INTERVAL = "FAASFLOW_SWEEP_INTERVAL"
    MAX_BODY = "FAASFLOW_MAX_BODY"
    REPLICAS = "FAASFLOW_REPLICAS"
    CALLBACK_HOSTS = "FAASFLOW_CALLBACK_HOSTS"
    #: ``0``: a flow's call of a function its own ``faasflow up`` worker serves goes through
    #: the gateway over HTTP instead of straight to the handler.
    SAME_PROCESS_CALLS = "FAASFLOW_SAME_PROCESS_CALLS"
    #: of-watchdog's own variable: where it forwards requests (the template binds there).
    UPSTREAM_URL = "upstream_url"
    #: OpenFaaS's own variable: ``true`` puts ``/system/*`` of ``faasflow up`` behind basic auth.
    BASIC_AUTH = "basic_auth"
    KEEPALIVE_TIMEOUT = "FAASFLOW_KEEPALIVE_TIMEOUT"
    SERVER_THREADS = "FAASFLOW_SERVER_THREADS"
    #: ``0`` turns off iterations kept on the ``faasflow up`` worker that handed them on.
    SAME_WORKER_ITERATIONS = "FAASFLOW_SAME_WORKER_ITERATIONS"

    # faas-flow's own names, still honoured so existing stack.yml files keep working.
    LEGACY = {
        "FAASFLOW_FLOW_NAME": "flow_name",
        "FAASFLOW_GATEWAY_URL": "gateway",
        "FAASFLOW_SECRET_MOUNT_PATH": "secret_mount_path",
        "FAASFLOW_VALIDATE_REQUEST": "validate_request",
        "FAASFLOW_AUTHENTICATE_REQUEST": "authenticate_request",
        "FAASFLOW_DEFAULT_METHOD": "default-method",
    }

    @staticmethod
    def option(backend: str, option: str) -> str:
        """``FAASFLOW_<BACKEND>_<OPTION>``: the variable that sets one backend option."""
        return f"FAASFLOW_{backend.upper()}_{option.upper()}"


HMAC_SECRET_NAME = "faasflow-hmac-secret"
#: Seconds a request may run before it fails (FAASFLOW_REQUEST_TIMEOUT=0 or none: no limit).
DEFAULT_REQUEST_TIMEOUT = 3600.0
DEFAULT_BACKENDS = {
    Kind.STATE_STORE: "memory",
    Kind.DATA_STORE: "memory",
    Kind.TRACER: "none",
    Kind.INVOKER: "local",
}


def _bool(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean; use true or false")


def _choice(raw: str, name: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigurationError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return value


def _number(raw: str, name: str, kind: type[float] | type[int]) -> float:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number"
        ) from None
    if value < 0:
        raise ConfigurationError(f"{name}={raw!r} must not be negative")
    return value


@attrs.frozen
class Settings:
    """Everything faasflow was told by its environment, resolved once."""

    backends: Mapping[Kind, str] = attrs.field(factory=lambda: dict(DEFAULT_BACKENDS))
    load_plugins: tuple[str, ...] | None = None
    disable_plugins: tuple[str, ...] = ()
    trace_plugins: bool = False
    flow_name: str | None = None
    gateway_url: str = "http://gateway.openfaas:8080"
    hmac_secret: bytes | None = None
    secret_mount_path: str = "/var/openfaas/secrets"
    validate_request: bool = True
    authenticate_request: bool = False
    inline_limit: int = 64 * 1024
    record_retention: float = 24 * 3600.0
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT
    default_method: str = "POST"
    data_dir: str = ".faasflow"
    workers: int = 8
    backend_retry: float = 10.0
    """Seconds an iteration keeps retrying a failing store or gateway call (0: no retry)."""
    call_retries: int = 3
    """Attempts of a function call that failed transiently (reset, 502/503/504); 1: none."""
    iteration_attempts: int = 5
    """Deliveries of an in-process iteration before its request fails."""
    claim_lease: float = 300.0
    redrive: bool = False
    capture: str = "none"
    """``none``, ``errors`` or ``all``: which node inputs and outputs the record keeps."""
    capture_limit: int = 65536
    capture_redact: str | None = None
    """``module:function`` applied to every captured payload before it is stored."""
    """Keep a failed request's state and its input until its record expires (redrive, rerun)."""
    """Seconds a node instance stays claimed by a delivery that went silent."""
    sweep_interval: float = 60.0
    """Seconds between opportunistic sweeps by a serving flow (0: only on demand)."""
    max_body: int = 64 * 1024 * 1024
    replicas: int = 1
    """Most replicas the function may run (``FAASFLOW_REPLICAS``); above 1 a host-local store
    is refused."""
    basic_auth: bool = False
    """``faasflow up``: ``/system/*`` needs the basic-auth secrets (OpenFaaS's ``basic_auth``)."""
    keepalive_timeout: float = 75.0
    """Seconds the built-in server keeps an idle keep-alive connection open."""
    server_threads: int = 64
    """Requests the built-in server serves at once (one thread each)."""
    callback_hosts: tuple[str, ...] | None = None
    """Globs of hosts a callback URL may name; ``None`` allows every host."""
    upstream_url: str | None = None
    environ: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        defaults: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read settings from ``environ`` (default: ``os.environ``).

        ``defaults`` supplies values for variables that are not set, e.g. the local gateway
        defaults to the persistent ``sqlite`` stores.
        """
        given = dict(os.environ if environ is None else environ)
        # faas-flow's names stand for the new ones before defaults apply: a default must never
        # hide a value the user did set, even under its legacy name.
        for new, old in EnvVars.LEGACY.items():
            if new not in given and old in given:
                given[new] = given[old]
        env: dict[str, str] = {**(defaults or {}), **given}

        def get(name: str) -> str | None:
            value = env.get(name)
            return None if value is None or value.strip() == "" else value.strip()

        backends = {kind: get(kind.env_var) or DEFAULT_BACKENDS[kind] for kind in Kind}
        load = env.get(EnvVars.LOAD_PLUGINS)
        mount = get(EnvVars.SECRET_MOUNT_PATH) or "/var/openfaas/secrets"
        secret = get(EnvVars.HMAC_SECRET)
        hmac_secret = (
            secret.encode() if secret else _read_secret(mount, HMAC_SECRET_NAME)
        )
        timeout = get(EnvVars.REQUEST_TIMEOUT)
        return cls(
            backends={k: v.lower() for k, v in backends.items()},
            load_plugins=None if load is None else _names(load),
            disable_plugins=_names(env.get(EnvVars.DISABLE_PLUGINS, "")),
            trace_plugins=_bool(env.get(EnvVars.TRACE_PLUGINS, ""), EnvVars.TRACE_PLUGINS),
            flow_name=get(EnvVars.FLOW_NAME),
            gateway_url=_url(get(EnvVars.GATEWAY_URL) or "http://gateway.openfaas:8080"),
            hmac_secret=hmac_secret,
            secret_mount_path=mount,
            # An empty value means "not set" (a blank line in stack.yml), not "false".
            validate_request=_bool(
                get(EnvVars.VALIDATE_REQUEST) or "true", EnvVars.VALIDATE_REQUEST
            ),
            authenticate_request=_bool(
                get(EnvVars.AUTHENTICATE_REQUEST) or "false", EnvVars.AUTHENTICATE_REQUEST
            ),
            inline_limit=int(
                _number(get(EnvVars.INLINE_LIMIT) or "65536", EnvVars.INLINE_LIMIT, int)
            ),
            record_retention=_number(
                get(EnvVars.RECORD_RETENTION) or "86400", EnvVars.RECORD_RETENTION, float
            ),
            request_timeout=(
                DEFAULT_REQUEST_TIMEOUT if timeout is None
                else None if timeout.lower() in {"none", "off", "never"}
                else _number(timeout, EnvVars.REQUEST_TIMEOUT, float) or None
            ),
            default_method=(get(EnvVars.DEFAULT_METHOD) or "POST").upper(),
            data_dir=get(EnvVars.DATA_DIR) or ".faasflow",
            workers=max(1, int(_number(get(EnvVars.WORKERS) or "8", EnvVars.WORKERS, int))),
            backend_retry=_number(
                get(EnvVars.BACKEND_RETRY) or "10", EnvVars.BACKEND_RETRY, float
            ),
            call_retries=max(1, int(
                _number(get(EnvVars.CALL_RETRIES) or "3", EnvVars.CALL_RETRIES, int)
            )),
            iteration_attempts=max(1, int(_number(
                get(EnvVars.ITERATION_ATTEMPTS) or "5", EnvVars.ITERATION_ATTEMPTS, int
            ))),
            claim_lease=_number(get(EnvVars.CLAIM_LEASE) or "300", EnvVars.CLAIM_LEASE, float),
            redrive=_bool(get(EnvVars.REDRIVE) or "false", EnvVars.REDRIVE),
            capture=_choice(get(EnvVars.CAPTURE) or "none", EnvVars.CAPTURE,
                            ("none", "errors", "all")),
            capture_limit=int(_number(get(EnvVars.CAPTURE_LIMIT) or "65536",
                                      EnvVars.CAPTURE_LIMIT, int)),
            capture_redact=get(EnvVars.CAPTURE_REDACT) or None,
            sweep_interval=_number(
                get(EnvVars.SWEEP_INTERVAL) or "60", EnvVars.SWEEP_INTERVAL, float
            ),
            max_body=int(_number(get(EnvVars.MAX_BODY) or str(64 * 1024 * 1024),
                                 EnvVars.MAX_BODY, int)),
            replicas=max(1, int(_number(get(EnvVars.REPLICAS) or "1", EnvVars.REPLICAS, int))),
            callback_hosts=(
                None if get(EnvVars.CALLBACK_HOSTS) is None
                else _names(env[EnvVars.CALLBACK_HOSTS].lower())
            ),
            upstream_url=get(EnvVars.UPSTREAM_URL),
            basic_auth=_bool(get(EnvVars.BASIC_AUTH) or "false", EnvVars.BASIC_AUTH),
            keepalive_timeout=_number(get(EnvVars.KEEPALIVE_TIMEOUT) or "75",
                                      EnvVars.KEEPALIVE_TIMEOUT, float) or 75.0,
            server_threads=max(1, int(_number(get(EnvVars.SERVER_THREADS) or "64",
                                              EnvVars.SERVER_THREADS, int))),
            environ=env,
        )

    def backend_name(self, kind: Kind) -> str:
        """The configured backend name for ``kind``."""
        return self.backends[kind]

    def options_for(self, backend: Backend) -> dict[str, str]:
        """Resolve a backend's options: ``FAASFLOW_<NAME>_<OPTION>`` first, then the ecosystem
        variables the backend names, then its OpenFaaS secrets."""
        prefix = f"FAASFLOW_{backend.name.upper()}_"
        options: dict[str, str] = {}
        for option, secret in backend.secrets.items():
            raw = _read_secret(self.secret_mount_path, secret)
            if raw is not None:
                options[option] = raw.decode()
        for option, names in backend.env.items():
            for name in reversed(names):  # the first name listed wins
                if self.environ.get(name):
                    options[option] = self.environ[name]
        core = _core_names()
        for name, value in self.environ.items():
            # A core variable is never a backend option, even when a backend's name makes it
            # look like one (backend "request" and FAASFLOW_REQUEST_TIMEOUT).
            if name.startswith(prefix) and len(name) > len(prefix) and value and name not in core:
                options[name[len(prefix):].lower()] = value
        return options

    def with_backends(self, **names: str) -> Settings:
        """A copy with some backends replaced, e.g. ``with_backends(state_store="sqlite")``."""
        backends = dict(self.backends)
        for kind, name in names.items():
            backends[Kind(kind)] = name
        return attrs.evolve(self, backends=backends)


def _url(raw: str) -> str:
    # faas-flow's `gateway` was a bare host:port ("gateway.openfaas:8080").
    url = raw.rstrip("/")
    return url if "://" in url else f"http://{url}"


def _core_names() -> frozenset[str]:
    return frozenset(
        value for key, value in vars(EnvVars).items() if key.isupper() and isinstance(value, str)
    )


def _names(raw: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in raw.split(",") if n.strip())


def _read_secret(mount_path: str, name: str) -> bytes | None:
    try:
        return (Path(mount_path) / name).read_bytes().strip()
    except OSError:
        return None
