"""The one syntax every command uses to name a flow definition.

A target is, in this order of lookup:

- a function name of the stack file (``-f``, default ``stack.yml`` / ``stack.yaml``);
- a handler directory holding ``handler.py``;
- a Python file, ``path/to/flows.py``;
- an importable module, ``pkg.flows`` (the working directory is on the path, as with
  ``python -m``);

each of the last three optionally followed by ``:function`` (default ``define``).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import attrs

from faasflow.errors import ConfigurationError

if TYPE_CHECKING:
    from faasflow.runtime.stack import FunctionSpec, Stack

__all__ = ["FORMS", "Target", "TargetError", "default_stack_file", "resolve"]

#: How to write a target, for messages and ``--help``.
FORMS = ("a stack function name, a handler directory, path/to/file.py[:define] or "
         "pkg.module[:define]")

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TargetError(Exception):
    """The target names nothing (``exit_code`` 3) or cannot be loaded (2)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@attrs.frozen
class Target:
    """A resolved target: its ``define(flow, context)`` and what the commands need with it."""

    define: Callable[..., Any]
    name: str
    """The flow name it implies: the stack function's, else the directory, file or module's."""
    where: str
    """How to name it in messages."""
    spec: FunctionSpec | None = None
    """The stack entry, when the target is a stack function."""

    @property
    def environment(self) -> Mapping[str, str]:
        """The stack entry's ``environment:`` (empty for other targets)."""
        return self.spec.environment if self.spec is not None else {}


def default_stack_file(file: str | None) -> Path | None:
    """``-f FILE``, else ``stack.yml`` or ``stack.yaml`` of the working directory when present."""
    if file:
        return Path(file)
    for name in ("stack.yml", "stack.yaml"):
        if Path(name).exists():
            return Path(name)
    return None


def flow_name(raw: str) -> str:
    """A flow name (lower-case letters, digits and '-') from a file or module name."""
    return re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-") or "flow"


def resolve(target: str, stack: Stack | None = None) -> Target:
    """The definition ``target`` names (see the module's documentation)."""
    if stack is not None and target in stack.functions:
        return _stack_function(stack.functions[target])
    reference, attribute = _split(target)
    path = Path(reference)
    if path.is_dir():
        if not (path / "handler.py").is_file():
            raise TargetError(f"{path} holds no handler.py; give {FORMS}", 3)
        return _from_handler(path, "handler", attribute, flow_name(path.resolve().name))
    if path.suffix == ".py" or "/" in reference or "\\" in reference:
        if not path.is_file():
            raise TargetError(f"{path} does not exist; give {FORMS}", 3)
        name = path.resolve().parent.name if path.name == "handler.py" else path.stem
        return _from_handler(path.parent, path.stem, attribute, flow_name(name))
    if not _MODULE.match(reference):
        raise TargetError(f"{target!r} is not a target: give {FORMS}", 2)
    return _from_module(target, reference, attribute, stack)


def _split(target: str) -> tuple[str, str]:
    """``ref:function`` into its parts (``define`` by default); a ':' that is part of a path
    (``C:\\flows``) stays."""
    reference, sep, attribute = target.rpartition(":")
    if sep and reference and _ATTRIBUTE.match(attribute):
        return reference, attribute
    return target, "define"


def _stack_function(spec: FunctionSpec) -> Target:
    if not spec.is_flow:
        raise TargetError(f"{spec.name} is a {spec.lang} function, not a flow; use "
                          f"`faasflow invoke {spec.name}` with `faasflow up`", 3)
    module = _load_handler(spec.handler, spec.name, "handler")
    return Target(_define(module, "define", str(spec.handler / "handler.py")), spec.name,
                  f"{spec.name} ({spec.handler / 'handler.py'})", spec)


def _from_handler(directory: Path, module_name: str, attribute: str, name: str) -> Target:
    directory = directory.resolve()
    # the directory is the handler's package (``from . import helper`` works, as in the
    # template) and on the path (``import helper`` works, as with ``python file.py``)
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    module = _load_handler(directory, directory.name, module_name)
    where = str(directory / f"{module_name}.py")
    return Target(_define(module, attribute, where), name, where)


def _load_handler(directory: Path, function: str, module_name: str) -> ModuleType:
    from faasflow.runtime.stack import load_handler
    from faasflow.runtime.worker import package_name

    try:
        return load_handler(directory, package_name(function), module_name)
    except ConfigurationError as exc:  # it says when the handler's requirements are missing
        raise TargetError(str(exc), 2) from exc


def _from_module(target: str, reference: str, attribute: str, stack: Stack | None) -> Target:
    # as `python -m` does: the working directory first, so `pkg.flows` of the project imports
    # without PYTHONPATH; it stays, because a definition may import more modules later
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(reference)
    except ModuleNotFoundError as exc:
        if exc.name and (reference == exc.name or reference.startswith(exc.name + ".")):
            where = f" of {stack.path}" if stack is not None else ""
            raise TargetError(f"no flow {target!r}: not a function{where}, a directory, a file "
                              f"or an importable module; give {FORMS}", 3) from None
        raise TargetError(f"cannot import {reference}: {exc}", 2) from exc
    except Exception as exc:
        raise TargetError(f"cannot import {reference}: {type(exc).__name__}: {exc}", 2) \
            from exc
    return Target(_define(module, attribute, reference), flow_name(reference.rsplit(".", 1)[-1]),
                  reference)


def _define(module: ModuleType, attribute: str, where: str) -> Callable[..., Any]:
    define = getattr(module, attribute, None)
    if not callable(define):
        raise TargetError(f"{where} defines no {attribute}(flow, context)", 2)
    return define  # type: ignore[no-any-return]
