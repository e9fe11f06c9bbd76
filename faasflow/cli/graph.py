"""``faasflow graph TARGET``: print a flow definition as JSON, Graphviz DOT or Mermaid.

``TARGET`` is an OpenFaaS handler directory (holding ``handler.py``), a Python file, or an
importable module name; it must define ``define(flow, context)``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from faasflow.cli import EXIT_NOT_FOUND, EXIT_USAGE
from faasflow.errors import ConfigurationError, DefinitionError

__all__ = ["load_define", "register"]


class _LoadError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "graph",
        help="print a flow definition as JSON, Graphviz DOT or Mermaid",
        description=(
            "Compile the define(flow, context) of TARGET (a handler directory holding "
            "handler.py, a .py file, or a module name) and print it. Exit code 2 when the "
            "definition is invalid (the JSON format then prints is-valid: false)."
        ),
    )
    parser.add_argument("target", help="handler directory, Python file or module name")
    parser.add_argument(
        "--format",
        choices=("json", "dot", "mermaid"),
        default="json",
        help="output format (default: json, faas-flow's export-dag format extended)",
    )
    parser.add_argument(
        "--name", help="flow name (default: the directory, file or module name)"
    )
    parser.set_defaults(func=run)


def _import_file(path: Path) -> ModuleType:
    module_name = f"faasflow_graph_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise _LoadError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # so the file can import its siblings
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise _LoadError(f"cannot import {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.parent))
    return module


def _load(target: str) -> tuple[ModuleType, str, str]:
    """The module, the flow name it implies, and how to name it in messages."""
    path = Path(target)
    if path.is_dir() or (path.is_file() and path.name == "handler.py"):
        directory = path if path.is_dir() else path.resolve().parent
        if not (directory / "handler.py").is_file():
            raise _LoadError(
                f"{directory} holds no handler.py: give a handler directory, a .py file or a "
                "module name",
                EXIT_NOT_FOUND,
            )
        from faasflow.runtime.stack import load_handler
        from faasflow.runtime.worker import package_name

        name = directory.resolve().name
        try:
            module = load_handler(directory, package_name(name))
        except ConfigurationError as exc:
            raise _LoadError(str(exc)) from exc
        return module, name, str(directory / "handler.py")
    if path.suffix == ".py" or path.is_file():
        if not path.is_file():
            raise _LoadError(f"{path} does not exist", EXIT_NOT_FOUND)
        return _import_file(path), path.stem, str(path)
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise _LoadError(
                f"{target!r} is neither a directory, a file nor an importable module",
                EXIT_NOT_FOUND,
            ) from exc
        raise _LoadError(f"cannot import {target}: {exc}") from exc
    except Exception as exc:
        raise _LoadError(f"cannot import {target}: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(Path.cwd()))
    return module, target.rsplit(".", 1)[-1], target


def load_define(target: str) -> tuple[Callable[..., object], str]:
    """``define`` and the default flow name of a handler directory, file or module."""
    module, name, where = _load(target)
    define = getattr(module, "define", None)
    if not callable(define):
        raise _LoadError(f"{where} defines no define(flow, context)")
    return define, name


def run(args: argparse.Namespace) -> int:
    from faasflow.export import invalid_export, to_dot, to_mermaid
    from faasflow.flow import Flow

    try:
        define, default_name = load_define(args.target)
    except _LoadError as exc:
        print(f"faasflow: error: {exc}", file=sys.stderr)
        return exc.exit_code
    name = args.name or default_name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            flow = Flow(define, name=name)
        except DefinitionError as exc:
            if args.format == "json":
                print(json.dumps(invalid_export(name, str(exc)), indent=4))
            print(f"faasflow: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    for warning in caught:
        print(f"faasflow: warning: {warning.message}", file=sys.stderr)
    if args.format == "dot":
        text = to_dot(flow.graph())
    elif args.format == "mermaid":
        text = to_mermaid(flow.graph())
    else:
        text = json.dumps(flow.export(), indent=4) + "\n"
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `faasflow graph x | head`: the reader left, which is fine
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's exit quiet
    return 0
