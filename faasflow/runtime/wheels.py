"""Wheels of installed distributions and their dependencies, for builds without an index.

A distribution installed from a source checkout (``pip install -e``) is built from that source
with ``pip wheel --no-deps``. Any other installed distribution is packed back into the wheel it
was installed from: its files as recorded in ``RECORD`` and its ``.dist-info`` with a fresh
``RECORD``. Scripts outside site-packages are left out (pip writes console scripts again from
``entry_points.txt``). A packed wheel keeps its original tag: a compiled one (PyYAML,
``cp311-...-linux``) installs only on the same Python and platform, which :class:`WheelSet`
reports so the image's Python can be matched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import attrs

from faasflow.errors import ConfigurationError

__all__ = ["WheelSet", "build_wheels", "source_dir"]

_SKIPPED_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@attrs.define
class WheelSet:
    """What :func:`build_wheels` wrote: wheel files by canonical project name."""

    directory: Path
    wheels: dict[str, Path] = attrs.field(factory=dict)
    versions: dict[str, str] = attrs.field(factory=dict)

    @property
    def platform_wheels(self) -> list[Path]:
        """Wheels that install only on this Python and platform."""
        return sorted(p for p in self.wheels.values() if not p.name.endswith("-none-any.whl"))


def source_dir(dist: metadata.Distribution) -> Path | None:
    """The source checkout ``dist`` was installed from (``pip install -e``), if any."""
    raw = dist.read_text("direct_url.json")
    if not raw:
        # a develop install found through its source tree's own <name>.egg-info
        root = Path(str(dist.locate_file("")))
        egg = root / f"{re.sub(r'[-.]+', '_', dist.metadata['Name'])}.egg-info"
        return root if egg.is_dir() and (root / "pyproject.toml").is_file() else None
    doc = json.loads(raw)
    url = str(doc.get("url", ""))
    if not url.startswith("file://") or "dir_info" not in doc:
        return None
    path = Path(url[len("file://"):])
    return path if (path / "pyproject.toml").exists() or (path / "setup.py").exists() else None


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist()
                    if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode("utf-8", "replace")
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Requires-Dist:")]


def _needed(requirement: str) -> str | None:
    """The project a ``Requires-Dist`` line needs here, or ``None`` (an extra, a marker that
    does not apply)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # packaging is not a dependency; without it, only extras are skipped
        head, _, marker = requirement.partition(";")
        if "extra" in marker:
            return None
        found = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", head)
        return found.group(1) if found else None
    parsed = Requirement(requirement)
    if parsed.marker is not None and not parsed.marker.evaluate({"extra": ""}):
        return None
    return parsed.name


def _pack(dist: metadata.Distribution, directory: Path) -> Path:
    """The wheel ``dist`` was installed from, rebuilt from its installed files."""
    info = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Tag:")]
    if not tags:
        raise ConfigurationError(
            f"{dist.metadata['Name']} {dist.version} was not installed from a wheel (no WHEEL "
            "file); reinstall it with pip, or build its wheel yourself into the wheels directory"
        )
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    path = directory / f"{name}-{dist.version}-{tags[0]}.whl"
    records: list[str] = []
    info_dir = ""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in dist.files or ():
            relative = file.as_posix()
            if relative.startswith("..") or "__pycache__" in relative or relative.endswith(".pyc"):
                continue
            parts = relative.split("/")
            if parts[0].endswith(".dist-info"):
                info_dir = parts[0]
                if parts[-1] in _SKIPPED_INFO and len(parts) == 2:
                    continue
            source = Path(str(dist.locate_file(file)))
            if not source.is_file():
                continue
            data = source.read_bytes()
            archive.writestr(relative, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{relative},sha256={digest.decode()},{len(data)}")
        if not info_dir:
            raise ConfigurationError(f"{dist.metadata['Name']}: no .dist-info in its RECORD")
        records.append(f"{info_dir}/RECORD,,")
        archive.writestr(f"{info_dir}/RECORD", "\n".join(records) + "\n")
    return path


def _build(source: Path, directory: Path) -> Path:
    before = set(directory.glob("*.whl"))
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(directory)]
    # Offline when the build backend is installed here; otherwise pip fetches it from the
    # configured index into an isolated build environment.
    for extra in (["--no-build-isolation"], []):
        done = subprocess.run([*base, *extra, str(source)], capture_output=True, text=True,
                              check=False)
        if done.returncode == 0:
            break
    else:
        raise ConfigurationError(f"pip wheel {source} failed:\n{done.stderr.strip()[-2000:]}")
    made = set(directory.glob("*.whl")) - before
    if not made:
        name = _canonical(source.name).replace("-", "_")
        made = {p for p in directory.glob("*.whl") if p.name.lower().startswith(name)}
    return max(made, key=lambda p: p.stat().st_mtime)


def build_wheels(names: Iterable[str], directory: Path) -> WheelSet:
    """Wheels of the installed distributions ``names`` and of everything they require."""
    directory.mkdir(parents=True, exist_ok=True)
    result = WheelSet(directory)
    pending = list(names)
    while pending:
        name = pending.pop(0)
        key = _canonical(name)
        if key in result.wheels:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ConfigurationError(
                f"{name} is required but not installed here: install it (pip install {name}) "
                "so its wheel can be exported, or put its wheel in the wheels directory"
            ) from None
        source = source_dir(dist)
        wheel = _build(source, directory) if source is not None else _pack(dist, directory)
        result.wheels[key] = wheel
        result.versions[key] = wheel.name.split("-")[1]
        for requirement in _requirements(wheel):
            needed = _needed(requirement)
            if needed is not None and _canonical(needed) not in result.wheels:
                pending.append(needed)
    return result
