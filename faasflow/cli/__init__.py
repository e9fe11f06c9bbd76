"""The ``faasflow`` command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (``args -> exit code``).

Exit codes a script can rely on: 0 success, 1 the flow or request failed, 2 bad usage or bad
input, 3 not found, 4 a backend or server could not be reached.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from faasflow.errors import FaasflowError

__all__ = ["EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_UNAVAILABLE", "EXIT_USAGE", "main"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = (
    "faasflow.cli.run",
    "faasflow.cli.up",
    "faasflow.cli.invoke",
    "faasflow.cli.requests",
    "faasflow.cli.graph",
    "faasflow.cli.plugins",
    "faasflow.cli.new",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faasflow",
        description="Function composition for serverless functions.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``faasflow`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except FaasflowError as exc:
        print(f"faasflow: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_FAILED)
    except KeyboardInterrupt:
        return 130
