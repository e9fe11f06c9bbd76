"""Entry point of the ``faasflow`` OpenFaaS template (``template/faasflow/index.py``).

Imports ``function/handler.py`` (its ``define(flow, context)``) and serves the flow with
gunicorn behind the of-watchdog in HTTP mode, on the address of the watchdog's ``upstream_url``.

Its defaults run a DAG on one replica with several worker processes: the next iterations of a
request go through the gateway's asynchronous queue (the ``openfaas`` invoker) and may reach any
worker, so state and data live in stores every process of the container shares: ``sqlite``
state in ``<data dir>/state.db`` and ``filesystem`` data in ``<data dir>/data``, the data
directory being ``FAASFLOW_DATA_DIR`` (default ``.faasflow`` in the function's directory,
``/home/app/.faasflow`` in the image), private to the function's user (0700, files 0600). Every
``FAASFLOW_*`` variable still wins; a store that cannot reach every worker or replica
(``FAASFLOW_REPLICAS``) is refused at start.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from faasflow.backends import Kind
from faasflow.errors import FaasflowError
from faasflow.runtime.app import FlowApp
from faasflow.settings import EnvVars, Settings

__all__ = ["DEFAULT_BIND", "create_app", "main", "template_settings"]

DEFAULT_BIND = "127.0.0.1:5000"


def template_defaults(data_dir: str | Path) -> dict[str, str]:
    """What the template assumes unless the function's environment says otherwise."""
    data = Path(data_dir)
    return {
        EnvVars.INVOKER: "openfaas",
        Kind.STATE_STORE.env_var: "sqlite",
        Kind.DATA_STORE.env_var: "filesystem",
        EnvVars.option("sqlite", "path"): str(data / "state.db"),
        EnvVars.option("filesystem", "path"): str(data / "data"),
    }


def template_settings() -> Settings:
    """The environment's settings over the template's defaults."""
    return Settings.from_env(defaults=template_defaults(Settings.from_env().data_dir))


def _private_data_dir(settings: Settings) -> None:
    # Bodies, outputs and signed messages live here: readable by the function's user only.
    os.umask(0o077)
    path = Path(settings.data_dir)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def _bind(settings: Settings) -> str:
    if not settings.upstream_url:
        return DEFAULT_BIND
    parts = urlsplit(settings.upstream_url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 80}"


def create_app(
    handler: Any = None, settings: Settings | None = None, *, processes: int = 1
) -> FlowApp:
    """The WSGI app of the flow defined by ``handler`` (default: the ``function.handler``
    module), served by ``processes`` worker processes."""
    if handler is None:
        handler = importlib.import_module("function.handler")
    define = getattr(handler, "define", None)
    if not callable(define):
        raise SystemExit(
            f"faasflow: error: {getattr(handler, '__file__', handler)} defines no "
            "define(flow, context)"
        )
    return FlowApp(define, settings or template_settings(), processes=processes)


def main(argv: Sequence[str] | None = None) -> int:
    """``python index.py [--bind HOST:PORT] [--workers N] [--threads N]``."""
    parser = argparse.ArgumentParser(prog="index.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default=None,
                        help="address to serve on (default: the host and port of upstream_url, "
                        f"else {DEFAULT_BIND})")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--timeout", type=int, default=300,
                        help="seconds a request may take (wait header, long sync flows)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    handler = importlib.import_module("function.handler")  # a broken handler stops here
    try:
        settings = template_settings()
        _private_data_dir(settings)
        create_app(handler, settings, processes=args.workers).close()  # and a bad configuration
    except (FaasflowError, OSError) as exc:
        print(f"faasflow: error: {exc}", file=sys.stderr)
        return 2
    bind = args.bind or _bind(settings)

    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped,unused-ignore]

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": bind,
                "workers": args.workers,
                "threads": args.threads,
                "worker_class": "gthread",
                "timeout": args.timeout,
                "keepalive": 75,
                "accesslog": None,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> FlowApp:
            # in each worker, after the fork
            return create_app(handler, template_settings(), processes=args.workers)

    Server().run()
    return 0
