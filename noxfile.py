"""Sessions for the core, every plugin under plugins/, the example plugin, lint and typecheck.

    nox -l                                   # list the sessions
    nox -s tests                             # the core suite
    nox -s "plugin(faasflow_etcd)"           # one plugin's suite
    nox -s lint typecheck

Knobs (environment variables, logged at start): FAASFLOW_NOX_PLUGINS (comma list of plugin
directories to run, default all), FAASFLOW_NOX_SKIP_PLUGINS (comma list to leave out).
Extra arguments after ``--`` go to pytest. Plugin suites that talk to real servers expect them
running on 127.0.0.1 (``bash .ci/services up``; see scripts/test).
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.needs_version = ">=2024.4"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "plugin", "example", "lint", "typecheck"]

ROOT = Path(__file__).parent
EXAMPLE = ROOT / "docs" / "examples" / "faasflow-example"


def _names(variable: str) -> set[str]:
    return {n.strip() for n in os.environ.get(variable, "").split(",") if n.strip()}


def _plugins() -> list[str]:
    """Directories under plugins/ that are distributions (hold a pyproject.toml)."""
    found = sorted(p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml"))
    only, skip = _names("FAASFLOW_NOX_PLUGINS"), _names("FAASFLOW_NOX_SKIP_PLUGINS")
    return [p for p in found if (not only or p in only) and p not in skip]


def _with_test_extra(path: Path) -> str:
    """``path[test]`` when the distribution declares a ``test`` extra, else ``path``."""
    project = nox.project.load_toml(path / "pyproject.toml").get("project", {})
    extras = project.get("optional-dependencies", {})
    return f"{path}[test]" if "test" in extras else str(path)


PLUGINS = _plugins()
print(f"nox: plugins={','.join(PLUGINS) or '-'}")


@nox.session
def tests(session: nox.Session) -> None:
    """The core suite (the example plugin is installed: a core test selects it)."""
    session.install("-e", f"{ROOT}[dev]", str(EXAMPLE))
    # the integration tests need the store plugins and the servers of .ci/services: scripts/test
    session.run("pytest", str(ROOT / "tests"), "-m", "not integration", *session.posargs)


@nox.session
@nox.parametrize("plugin", PLUGINS, ids=PLUGINS)
def plugin(session: nox.Session, plugin: str) -> None:
    """One plugin's suite, with the core and that plugin alone installed."""
    path = ROOT / "plugins" / plugin
    session.install("-e", f"{ROOT}[testing]", "-e", _with_test_extra(path))
    session.chdir(path)
    session.run("pytest", *session.posargs)


@nox.session
def example(session: nox.Session) -> None:
    """The example third-party plugin of docs/examples, which must pass the contracts."""
    session.install("-e", f"{ROOT}[testing]", _with_test_extra(EXAMPLE))
    session.chdir(EXAMPLE)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", str(ROOT), *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the core, then on each plugin package."""
    session.install("-e", f"{ROOT}[dev]", *(str(ROOT / "plugins" / p) for p in PLUGINS))
    session.run("mypy", "--config-file", str(ROOT / "pyproject.toml"), str(ROOT / "faasflow"))
    for name in PLUGINS:
        package = ROOT / "plugins" / name / name
        if package.is_dir():
            session.chdir(ROOT / "plugins" / name)
            session.run("mypy", "--strict", name)
    session.chdir(ROOT)
