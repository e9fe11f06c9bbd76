"""Why a handler did not import, when the answer is "its requirements.txt is not installed".

faas-cli builds each function's image with ``pip install -r requirements.txt``; ``faasflow up``
and ``faasflow run`` import handlers into the current Python environment instead, so a package a
handler lists there is missing until the user installs it. This module finds that case and says
what to run.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["missing_requirements_hint"]


def _listed(requirements: Path) -> list[str]:
    """The project names a requirements file lists (options, URLs and comments skipped)."""
    try:
        lines = requirements.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    names = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match:
            names.append(match.group(0))
    return names


def missing_requirements_hint(directory: Path, error: BaseException) -> str | None:
    """A sentence to add to an import error of the handler in ``directory``, or None when the
    error is not a missing module or the handler lists no requirements."""
    missing: ModuleNotFoundError | None = None
    seen: BaseException | None = error
    while seen is not None and missing is None:  # the import may be wrapped by a loader
        if isinstance(seen, ModuleNotFoundError):
            missing = seen
        seen = seen.__cause__ or seen.__context__
    if missing is None:
        return None
    requirements = directory / "requirements.txt"
    listed = _listed(requirements)
    if not listed:
        return None
    module = (missing.name or "").split(".", 1)[0]
    normal = {re.sub(r"[-_.]+", "_", name).lower(): name for name in listed}
    named = normal.get(module.lower())
    which = f"{named} is listed in {requirements}" if named else \
        f"{requirements} lists {', '.join(listed)}"
    return (
        f"{which}, but faasflow up and faasflow run use the current Python environment (they "
        f"do not build an image as faas-cli does): pip install -r {requirements}"
    )
