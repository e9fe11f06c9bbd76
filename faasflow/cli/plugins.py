"""``faasflow plugins``: every backend the installed plugins provide, by kind."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from faasflow.backends import Kind, RegisteredBackend
from faasflow.settings import EnvVars, Settings

__all__ = ["collect", "register"]


def register(subparsers: Any) -> None:
    """Add the ``plugins`` sub-command."""
    parser = subparsers.add_parser(
        "plugins",
        help="list the installed backends by kind",
        description=(
            "List every backend the built-in and installed plugins provide, by kind, with its "
            "distribution, version and options; '*' marks the one selected by FAASFLOW_<KIND>. "
            "Honours FAASFLOW_LOAD_PLUGINS, FAASFLOW_DISABLE_PLUGINS and FAASFLOW_TRACE_PLUGINS."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also list each backend's option variables"
    )
    parser.set_defaults(func=run)


def _backend(entry: RegisteredBackend, selected: bool) -> dict[str, Any]:
    record = entry.backend
    options = {
        option: {
            "variable": EnvVars.option(record.name, option),
            "description": description,
            "also": list(record.env.get(option, ())),
        }
        for option, description in record.options.items()
    }
    return {
        "kind": entry.kind.value,
        "name": entry.name,
        "summary": record.summary,
        "plugin": entry.plugin,
        "distribution": entry.distribution,
        "version": entry.version,
        "selected": selected,
        "options": options,
    }


def collect(settings: Settings) -> dict[str, Any]:
    """What ``faasflow plugins --json`` prints."""
    from faasflow.plugins import Registry

    registry = Registry.from_settings(settings)
    selected = {kind.value: settings.backend_name(kind) for kind in Kind}
    return {
        "selected": selected,
        "backends": [
            _backend(entry, selected[entry.kind.value] == entry.name) for entry in registry.all()
        ],
        "broken": [
            {"name": b.name, "distribution": b.distribution, "error": b.error}
            for b in registry.broken
        ],
    }


def _print_text(data: dict[str, Any], verbose: bool) -> None:
    backends = data["backends"]
    width = max((len(b["name"]) for b in backends), default=8)
    origin = max((len(f"{b['distribution']} {b['version']}") for b in backends), default=8)
    for kind in Kind:
        name = data["selected"][kind.value]
        mine = [b for b in backends if b["kind"] == kind.value]
        missing = "" if any(b["selected"] for b in mine) else " - NOT INSTALLED"
        print(f"{kind.label} ({kind.env_var}={name}{missing})")
        for b in mine:
            mark = "*" if b["selected"] else " "
            source = f"{b['distribution']} {b['version']}"
            print(f"  {mark} {b['name']:<{width}}  {source:<{origin}}  {b['summary']}")
            for option in b["options"].values() if verbose else ():
                also = f" (also {', '.join(option['also'])})" if option["also"] else ""
                print(f"      {option['variable']}{also}: {option['description']}")
        print()
    if data["broken"]:
        print("plugins that failed to load (skipped):")
        for b in data["broken"]:
            print(f"  {b['name']} ({b['distribution']}): {b['error']}")


def run(args: argparse.Namespace) -> int:
    """List the backends; exit code 0 (broken plugins are listed, not fatal)."""
    settings = Settings.from_env()
    if settings.trace_plugins:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger = logging.getLogger("faasflow.plugins")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    data = collect(settings)
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        _print_text(data, args.verbose)
    return 0
