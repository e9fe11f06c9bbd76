"""Which gateway ``faasflow invoke`` and ``faasflow requests`` talk to, found as faas-cli does.

``-g/--gateway``, then ``OPENFAAS_URL`` (then faasflow's own ``FAASFLOW_GATEWAY_URL``), then
``provider.gateway`` of the stack file (``-f``, default ``stack.yml`` / ``stack.yaml``), then
``http://127.0.0.1:8080``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import attrs
import yaml

from faasflow.settings import EnvVars, Settings

__all__ = ["DEFAULT_GATEWAY", "Gateway", "StackFileError", "add_arguments", "find_gateway"]

DEFAULT_GATEWAY = "http://127.0.0.1:8080"

HELP = ("gateway URL (default: OPENFAAS_URL, FAASFLOW_GATEWAY_URL, provider.gateway of the "
        "stack file, then http://127.0.0.1:8080)")


@attrs.frozen
class Gateway:
    url: str
    source: str
    """Where the URL came from, for messages: ``--gateway``, ``OPENFAAS_URL``, a stack file."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``-g/--gateway`` and ``-f/--file`` (the stack file whose ``provider.gateway`` counts)."""
    parser.add_argument("-g", "--gateway", default=None, help=HELP)
    parser.add_argument("-f", "--file", "--yaml", dest="file", default=None,
                        help="stack file whose provider.gateway is used (default: stack.yml, "
                             "then stack.yaml, when present)")


def find_gateway(option: str | None, stack_file: str | None) -> Gateway:
    """The gateway to use; a stack file named with ``-f`` must be readable."""
    if option:
        return Gateway(option, "--gateway")
    environ = Settings.from_env().environ
    for variable in ("OPENFAAS_URL", EnvVars.GATEWAY_URL):
        if environ.get(variable):
            return Gateway(environ[variable], variable)
    path = Path(stack_file) if stack_file else next(
        (Path(name) for name in ("stack.yml", "stack.yaml") if Path(name).is_file()), None)
    if path is not None:
        url = _provider_gateway(path, environ, required=bool(stack_file))
        if url:
            return Gateway(url, f"provider.gateway of {path}")
    return Gateway(DEFAULT_GATEWAY, "the default")


class StackFileError(Exception):
    """A stack file named with ``-f`` cannot be read."""


def _provider_gateway(path: Path, environ: Mapping[str, str], *, required: bool) -> str:
    # the stack's own ${VAR:-default} substitution, as faas-cli applies it to the whole file
    from faasflow.runtime.stack import substitute

    try:
        doc = yaml.safe_load(substitute(path.read_text(), environ))
    except (OSError, yaml.YAMLError) as exc:
        if required:
            raise StackFileError(f"cannot read the gateway from {path}: {exc}") from None
        return ""  # a broken default stack file is `faasflow up`'s to report, not ours
    provider = doc.get("provider") if isinstance(doc, dict) else None
    gateway = provider.get("gateway") if isinstance(provider, dict) else None
    return str(gateway) if gateway else ""
