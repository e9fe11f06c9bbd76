"""Reading a faas-cli ``stack.yml`` and loading the handlers it names.

Only what running functions locally needs is read: each function's ``lang``, ``handler``,
``environment`` (and ``environment_file``), ``labels`` and ``annotations``. ``${VAR}`` and
``${VAR:-default}`` are substituted from the environment as faas-cli does.
"""

from __future__ import annotations

import importlib
import re
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import yaml

from faasflow.errors import ConfigurationError

__all__ = ["FLOW_LANGS", "HTTP_LANGS", "FunctionSpec", "Stack", "load_handler"]

FLOW_LANGS = frozenset({"faasflow", "faas-flow"})
HTTP_LANGS = frozenset({"python3-http", "python3-http-debian"})
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBST = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


@attrs.frozen
class FunctionSpec:
    """One entry of ``functions:``."""

    name: str
    lang: str
    handler: Path
    """The handler directory (holding ``handler.py``)."""
    environment: Mapping[str, str] = attrs.field(factory=dict)
    labels: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    image: str = ""

    @property
    def is_flow(self) -> bool:
        """True for ``lang: faasflow`` (a flow definition), False for a python3-http function."""
        return self.lang in FLOW_LANGS


@attrs.frozen
class Stack:
    """A parsed ``stack.yml``."""

    path: Path
    functions: Mapping[str, FunctionSpec]

    @property
    def directory(self) -> Path:
        return self.path.parent

    @classmethod
    def load(cls, path: str | Path, environ: Mapping[str, str] | None = None) -> Stack:
        """Parse ``path``; raise :class:`ConfigurationError` naming the file and the entry at
        fault."""
        path = Path(path).resolve()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read stack file {path}: {exc.strerror or exc}"
                " (pass the path with -f stack.yml)"
            ) from None
        text = _substitute(text, environ or {})
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("functions"), dict):
            raise ConfigurationError(
                f"{path} has no 'functions:' section; a stack file lists functions as "
                "functions: {name: {lang: ..., handler: ...}}"
            )
        if not doc["functions"]:
            raise ConfigurationError(f"{path} declares no functions under 'functions:'")
        functions = {
            str(name): _function(path, str(name), entry)
            for name, entry in doc["functions"].items()
        }
        return cls(path=path, functions=functions)

    def get(self, name: str) -> FunctionSpec:
        """The function ``name`` or an error listing those the stack declares."""
        try:
            return self.functions[name]
        except KeyError:
            raise ConfigurationError(
                f"{self.path} declares no function {name!r}; it has: "
                f"{', '.join(sorted(self.functions))}"
            ) from None


def _substitute(text: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        value = environ.get(match.group(1))
        if value:
            return value
        return match.group(2) or ""

    return _SUBST.sub(replace, text)


def _strings(path: Path, name: str, field: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"{path}: function {name!r}: '{field}' must be a mapping")
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            out[str(key)] = "true" if item else "false"
        elif item is None:
            out[str(key)] = ""
        else:
            out[str(key)] = str(item)
    return out


def _function(path: Path, name: str, entry: Any) -> FunctionSpec:
    where = f"{path}: function {name!r}"
    if not _NAME.match(name):
        raise ConfigurationError(
            f"{where}: a function name is lower-case letters, digits and '-', at most 63 long"
        )
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where} must be a mapping with 'lang' and 'handler'")
    lang = entry.get("lang")
    if not isinstance(lang, str) or not lang:
        raise ConfigurationError(f"{where} has no 'lang'")
    if lang not in FLOW_LANGS | HTTP_LANGS:
        raise ConfigurationError(
            f"{where}: lang {lang!r} cannot run locally; faasflow runs lang faasflow and "
            f"{', '.join(sorted(HTTP_LANGS))} handlers"
        )
    handler = entry.get("handler")
    if not isinstance(handler, str) or not handler:
        raise ConfigurationError(f"{where} has no 'handler' (the handler directory)")
    directory = (path.parent / handler).resolve()
    if not (directory / "handler.py").is_file():
        raise ConfigurationError(f"{where}: {directory / 'handler.py'} does not exist")
    environment: dict[str, str] = {}
    files = entry.get("environment_file") or []
    if isinstance(files, str):
        files = [files]
    for file in files:
        env_path = path.parent / str(file)
        try:
            env_doc = yaml.safe_load(env_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"{where}: cannot read environment_file {env_path}: {exc}") \
                from None
        environment.update(_strings(path, name, "environment", env_doc.get("environment")))
    environment.update(_strings(path, name, "environment", entry.get("environment")))
    return FunctionSpec(
        name=name,
        lang=lang,
        handler=directory,
        environment=environment,
        labels=_strings(path, name, "labels", entry.get("labels")),
        annotations=_strings(path, name, "annotations", entry.get("annotations")),
        image=str(entry.get("image") or ""),
    )


_import_lock = threading.Lock()


def load_handler(directory: Path, package: str, module: str = "handler") -> ModuleType:
    """Import ``<directory>/handler.py`` (or ``<module>.py``) as ``<package>.handler``.

    The directory becomes a package, as OpenFaaS templates copy it to ``function/``, so a handler
    can import its siblings with ``from . import helper``.
    """
    module_name = f"{package}.{module}"
    source = directory / f"{module}.py"
    with _import_lock:
        if module_name in sys.modules:
            return sys.modules[module_name]
        created = package not in sys.modules
        if created:
            init = directory / "__init__.py"
            pkg = ModuleType(package)
            pkg.__path__ = [str(directory)]
            pkg.__file__ = str(init) if init.exists() else None
            sys.modules[package] = pkg
        try:
            if created and pkg.__file__:
                exec(compile(init.read_bytes(), str(init), "exec"), pkg.__dict__)
            return importlib.import_module(module_name)
        except Exception as exc:
            if created:
                sys.modules.pop(package, None)
            sys.modules.pop(module_name, None)
            raise ConfigurationError(
                f"cannot import {source}: {type(exc).__name__}: {exc}"
            ) from exc
