"""Reading a faas-cli ``stack.yml`` and loading the handlers it names.

The file is read as faas-cli reads it: environment substitution first (``${VAR}``,
``${VAR:-default}``, ``${VAR-default}``, ``${VAR:=default}``, ``${VAR^^}``, ``${VAR,,}``, ``$VAR``
and ``$$`` for a literal ``$``), ``provider.name`` must be ``openfaas``, ``environment_file``
values override inline ``environment``, and ``--filter`` (a glob) / ``--regex`` select
functions. Functions of languages faasflow cannot run (node20, golang-middleware, dockerfile,
...) are kept aside in :attr:`Stack.skipped` instead of refusing the whole stack.
"""

from __future__ import annotations

import fnmatch
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

__all__ = [
    "DEFAULT_NAMESPACE",
    "FLOW_LANGS",
    "HTTP_LANGS",
    "FunctionSpec",
    "Stack",
    "load_handler",
    "substitute",
]

FLOW_LANGS = frozenset({"faasflow", "faas-flow"})
HTTP_LANGS = frozenset({"python3-http", "python3-http-debian"})
#: The namespace of functions whose stack entry names none (as faas-cli 0.18 and OpenFaaS).
DEFAULT_NAMESPACE = "openfaas-fn"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBST = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:-|-|:=|=|\^\^|\^|,,|,)?(?P<arg>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


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
    namespace: str = DEFAULT_NAMESPACE
    secrets: tuple[str, ...] = ()
    """Names of the OpenFaaS secrets the function reads (files in the secrets directory)."""
    limits: Mapping[str, str] = attrs.field(factory=dict)
    requests: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def is_flow(self) -> bool:
        """True for ``lang: faasflow`` (a flow definition), False for a python3-http function."""
        return self.lang in FLOW_LANGS


@attrs.frozen
class Stack:
    """A parsed ``stack.yml``."""

    path: Path
    functions: Mapping[str, FunctionSpec]
    skipped: Mapping[str, str] = attrs.field(factory=dict)
    """Functions of other languages, by name: their ``lang``."""
    gateway: str = ""
    """``provider.gateway``, if the file names one."""

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The namespaces of the stack's functions, the default one first."""
        found = {spec.namespace for spec in self.functions.values()}
        return (DEFAULT_NAMESPACE, *sorted(found - {DEFAULT_NAMESPACE}))

    @classmethod
    def load(
        cls,
        path: str | Path,
        environ: Mapping[str, str] | None = None,
        *,
        filter: str | None = None,
        regex: str | None = None,
    ) -> Stack:
        """Parse ``path``; raise :class:`ConfigurationError` naming the file and the entry at
        fault. ``filter`` (a glob) and ``regex`` keep only the functions whose names match, as
        faas-cli's ``--filter`` and ``--regex``."""
        path = Path(path).resolve()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read stack file {path}: {exc.strerror or exc}"
                " (pass the path with -f stack.yml)"
            ) from None
        text = substitute(text, environ or {})
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("functions"), dict):
            raise ConfigurationError(
                f"{path} has no 'functions:' section; a stack file lists functions as "
                "functions: {name: {lang: ..., handler: ...}}"
            )
        gateway = _provider(path, doc.get("provider"))
        entries = {str(name): entry for name, entry in doc["functions"].items()}
        if not entries:
            raise ConfigurationError(f"{path} declares no functions under 'functions:'")
        entries = _select(path, entries, filter, regex)
        functions: dict[str, FunctionSpec] = {}
        skipped: dict[str, str] = {}
        for name, entry in entries.items():
            lang = _lang(path, name, entry)
            if lang in FLOW_LANGS | HTTP_LANGS:
                functions[name] = _function(path, name, entry, lang)
            else:
                skipped[name] = lang
        if not functions:
            others = ", ".join(f"{n!r} (lang {lang!r})" for n, lang in skipped.items())
            raise ConfigurationError(
                f"{path}: no function faasflow can run (they are {others}); faasflow runs "
                f"lang {', '.join(sorted(FLOW_LANGS | HTTP_LANGS))}"
            )
        return cls(path=path, functions=functions, skipped=skipped, gateway=gateway)

    def get(self, name: str) -> FunctionSpec:
        """The function ``name`` or an error listing those the stack declares."""
        try:
            return self.functions[name]
        except KeyError:
            raise ConfigurationError(
                f"{self.path} declares no function {name!r}; it has: "
                f"{', '.join(sorted(self.functions))}"
            ) from None


def substitute(text: str, environ: Mapping[str, str]) -> str:
    """Expand variables in ``text`` as faas-cli does (drone/envsubst's syntax)."""
    assigned: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        value = assigned.get(name, environ.get(name))
        op, arg = match["op"], match["arg"] or ""
        if match["bare"] or op is None:
            return value or ""
        if op in (":-", ":="):
            if not value:
                if op == ":=":
                    assigned[name] = arg
                return arg
            return value
        if op in ("-", "="):
            if value is None:
                if op == "=":
                    assigned[name] = arg
                return arg
            return value
        value = value or ""
        if op == "^^":
            return value.upper()
        if op == ",,":
            return value.lower()
        if op == "^":
            return value[:1].upper() + value[1:]
        return value[:1].lower() + value[1:]  # ","

    return _SUBST.sub(replace, text)


def _provider(path: Path, provider: Any) -> str:
    if provider is None:
        return ""
    if not isinstance(provider, dict):
        raise ConfigurationError(f"{path}: 'provider' must be a mapping with 'name: openfaas'")
    name = provider.get("name")
    if name != "openfaas":
        raise ConfigurationError(
            f"{path}: provider.name is {name!r}; 'openfaas' is the only valid provider (as for "
            "faas-cli): write provider: {name: openfaas}"
        )
    return str(provider.get("gateway") or "")


def _select(path: Path, entries: dict[str, Any], filter: str | None, regex: str | None
            ) -> dict[str, Any]:
    if filter is None and regex is None:
        return entries
    try:
        pattern = re.compile(regex) if regex is not None else None
    except re.error as exc:
        raise ConfigurationError(f"--regex {regex!r} is not a regular expression: {exc}") \
            from None
    chosen = {
        name: entry for name, entry in entries.items()
        if (filter is None or fnmatch.fnmatchcase(name, filter))
        and (pattern is None or pattern.search(name))
    }
    if not chosen:
        given = " and ".join(f"{flag} {value!r}" for flag, value in
                             (("--filter", filter), ("--regex", regex)) if value is not None)
        raise ConfigurationError(
            f"no function in {path} matches {given}; it has: {', '.join(sorted(entries))}"
        )
    return chosen


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


def _lang(path: Path, name: str, entry: Any) -> str:
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
    return lang


def _function(path: Path, name: str, entry: dict[str, Any], lang: str) -> FunctionSpec:
    where = f"{path}: function {name!r}"
    handler = entry.get("handler")
    if not isinstance(handler, str) or not handler:
        raise ConfigurationError(f"{where} has no 'handler' (the handler directory)")
    directory = (path.parent / handler).resolve()
    if not (directory / "handler.py").is_file():
        raise ConfigurationError(f"{where}: {directory / 'handler.py'} does not exist")
    # faas-cli: values from environment_file override the inline environment
    environment = _strings(path, name, "environment", entry.get("environment"))
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
        if not isinstance(env_doc, dict):
            raise ConfigurationError(f"{where}: environment_file {env_path} must hold "
                                     "'environment: {NAME: value}'")
        environment.update(_strings(path, name, "environment", env_doc.get("environment")))
    secrets = entry.get("secrets") or []
    if not isinstance(secrets, list) or not all(isinstance(s, str) and s for s in secrets):
        raise ConfigurationError(f"{where}: 'secrets' must be a list of secret names")
    namespace = entry.get("namespace") or DEFAULT_NAMESPACE
    if not isinstance(namespace, str) or not _NAME.match(namespace):
        raise ConfigurationError(f"{where}: namespace {namespace!r} is not a valid name")
    return FunctionSpec(
        name=name,
        lang=lang,
        handler=directory,
        environment=environment,
        labels=_strings(path, name, "labels", entry.get("labels")),
        annotations=_strings(path, name, "annotations", entry.get("annotations")),
        image=str(entry.get("image") or ""),
        namespace=namespace,
        secrets=tuple(secrets),
        limits=_strings(path, name, "limits", entry.get("limits")),
        requests=_strings(path, name, "requests", entry.get("requests")),
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
            from faasflow.runtime.requirements import missing_requirements_hint

            message = f"cannot import {source}: {type(exc).__name__}: {exc}"
            hint = missing_requirements_hint(directory, exc)
            raise ConfigurationError(f"{message}; {hint}" if hint else message) from exc
