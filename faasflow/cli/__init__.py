"""The ``faasflow`` command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (``args -> exit code``).

Exit codes a script can rely on: 0 success, 1 the flow or request failed, 2 bad usage or bad
input, 3 not found, 4 a backend or server could not be reached, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from faasflow.errors import FaasflowError

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "interrupted",
    "main",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = (
    "faasflow.cli.run",
    "faasflow.cli.up",
    "faasflow.cli.worker",
    "faasflow.cli.invoke",
    "faasflow.cli.requests",
    "faasflow.cli.logs",
    "faasflow.cli.sweep",
    "faasflow.cli.graph",
    "faasflow.cli.plugins",
    "faasflow.cli.new",
    "faasflow.cli.template",
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
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at exit
        return code
    except FaasflowError as exc:
        print(f"faasflow: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_FAILED)
    except BrokenPipeError:
        return _reader_left()
    except KeyboardInterrupt:
        interrupted()


def _reader_left() -> int:
    """``faasflow ... | head``: the reader stopped reading, which is not an error."""
    # what is still buffered for the closed pipe would fail again at exit, with a traceback
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file (an embedding caller's stream)
        pass
    return 0


def interrupted(detail: str = "") -> NoReturn:
    """Leave at once after Ctrl-C with exit status 130 and one line on stderr.

    ``os._exit`` because a function may still hang in a worker thread, and the interpreter's
    exit would join it (a second Ctrl-C then prints a threading traceback).
    """
    try:
        sys.stderr.write(f"faasflow: interrupted{f'; {detail}' if detail else ''}\n")
        sys.stderr.flush()
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os._exit(EXIT_INTERRUPTED)
