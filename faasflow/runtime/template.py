"""Entry point of the ``faasflow`` OpenFaaS template (``template/faasflow/index.py``).

Imports ``function/handler.py`` (its ``define(flow, context)``) and serves the flow with
gunicorn behind the of-watchdog in HTTP mode. On OpenFaaS the next iterations of a request go
through the gateway's asynchronous queue, so the ``openfaas`` invoker is the default here; every
``FAASFLOW_*`` variable still wins.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from faasflow.runtime.app import FlowApp
from faasflow.settings import EnvVars, Settings

__all__ = ["create_app", "main"]

#: What the template assumes unless the function's environment says otherwise.
TEMPLATE_DEFAULTS = {EnvVars.INVOKER: "openfaas"}


def create_app(handler: Any = None, settings: Settings | None = None) -> FlowApp:
    """The WSGI app of the flow defined by ``handler`` (default: the ``function.handler``
    module)."""
    if handler is None:
        handler = importlib.import_module("function.handler")
    define = getattr(handler, "define", None)
    if not callable(define):
        raise SystemExit(
            f"faasflow: error: {getattr(handler, '__file__', handler)} defines no "
            "define(flow, context)"
        )
    return FlowApp(define, settings or Settings.from_env(defaults=TEMPLATE_DEFAULTS))


def main(argv: Sequence[str] | None = None) -> int:
    """``python index.py [--bind HOST:PORT] [--workers N] [--threads N]``."""
    parser = argparse.ArgumentParser(prog="index.py", description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1:5000",
                        help="address the of-watchdog forwards to (default 127.0.0.1:5000)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--timeout", type=int, default=300,
                        help="seconds a request may take (wait header, long sync flows)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    handler = importlib.import_module("function.handler")  # a broken handler stops here
    create_app(handler).close()  # and so does a configuration error

    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped,unused-ignore]

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": args.bind,
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
            return create_app(handler)  # in each worker, after the fork

    Server().run()
    return 0
