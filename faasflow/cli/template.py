"""``faasflow template export DIR``: the OpenFaaS template with the wheels it needs, so
``faas-cli build`` works without a package index."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from faasflow.errors import ConfigurationError

__all__ = ["export_template", "register"]

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def register(subparsers: Any) -> None:
    """Add the ``template`` sub-command."""
    parser = subparsers.add_parser(
        "template",
        help="export the OpenFaaS template with wheels for an offline build",
        description=(
            "export DIR writes the faasflow OpenFaaS template to DIR (use DIR=template/faasflow "
            "next to your stack.yml) with wheels/ holding the installed faasflow, gunicorn, the "
            "plugins and packages function/requirements.txt names or --plugin lists, and all "
            "they require. Its Dockerfile then installs with pip --no-index from wheels/, so "
            "faas-cli build needs no package index. Exit codes: 0 written, 2 bad usage or a "
            "package that cannot be exported."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write the template and its wheels to DIR")
    export.add_argument("directory", metavar="DIR", help="where to write (must be empty or new)")
    export.add_argument("--plugin", action="append", default=[], metavar="NAME",
                        help="also export this installed distribution (repeatable), e.g. "
                        "faasflow-etcd")
    export.add_argument("--from", dest="source", metavar="TEMPLATE_DIR",
                        help="template to start from (default: template/faasflow of the "
                        "faasflow source this faasflow is installed from)")
    export.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    parser.set_defaults(func=run)


def _template_source(given: str | None) -> Path:
    if given:
        path = Path(given)
    else:
        from faasflow.runtime.wheels import source_dir

        root = source_dir(metadata.distribution("faasflow"))
        if root is None:  # a wheel install: look next to the package anyway
            root = Path(__file__).resolve().parents[2]
        path = root / "template" / "faasflow"
    if not (path / "template.yml").is_file():
        raise ConfigurationError(
            f"no faasflow template at {path}: pass --from <dir of template.yml> (for example "
            "the template/faasflow that faas-cli template pull wrote)"
        )
    return path


def _named(requirements: Path) -> list[str]:
    names = []
    if requirements.is_file():
        for raw in requirements.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            found = _NAME.match(line) if line and not line.startswith("-") else None
            if found:
                names.append(found.group(1))
    return names


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def export_template(
    directory: Path, *, plugins: list[str], source: str | None = None, force: bool = False
) -> list[str]:
    """Write the template and its wheels to ``directory``; returns notes for the user."""
    from faasflow.runtime.wheels import build_wheels

    template = _template_source(source)
    if directory.exists() and any(directory.iterdir()) and not force:
        raise ConfigurationError(f"{directory} is not empty; pick a new directory or pass --force")
    shutil.copytree(template, directory, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.whl", "__pycache__", ".faasflow"))
    notes: list[str] = []
    handler_needs = _named(directory / "function" / "requirements.txt")
    missing = [n for n in handler_needs if not _installed(n)]
    for name in missing:
        notes.append(f"{name} (function/requirements.txt) is not installed here: put its wheel "
                     "in wheels/ or the offline build will fail")
    base = _named(directory / "requirements.txt")
    wanted = ["faasflow", *base, *plugins, *(n for n in handler_needs if n not in missing)]
    wheels = build_wheels(wanted, directory / "wheels")
    pins = [f"faasflow=={wheels.versions['faasflow']}"]
    pins += [line for line in (directory / "requirements.txt").read_text().splitlines()
             if line.strip() and _NAME.match(line)]
    pins += [f"{name}=={wheels.versions[_key(name)]}" for name in plugins]
    (directory / "requirements.txt").write_text("\n".join(dict.fromkeys(pins)) + "\n")
    if wheels.platform_wheels:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        dockerfile = directory / "Dockerfile"
        dockerfile.write_text(re.sub(r"(?m)^ARG PYTHON_IMAGE=python:3\.\d+",
                                     f"ARG PYTHON_IMAGE=python:{version}",
                                     dockerfile.read_text()))
        names = ", ".join(p.name for p in wheels.platform_wheels)
        notes.append(f"compiled wheels for this Python and platform only ({names}): the "
                     f"Dockerfile now builds on python:{version}; build for the same platform")
    notes.insert(0, f"wrote {directory} with {len(wheels.wheels)} wheels in "
                 f"{directory / 'wheels'}")
    return notes


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def run(args: argparse.Namespace) -> int:
    from faasflow.cli import EXIT_USAGE

    try:
        notes = export_template(Path(args.directory), plugins=args.plugin, source=args.source,
                                force=args.force)
    except ConfigurationError as exc:
        print(f"faasflow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for note in notes:
        print(note)
    return 0
