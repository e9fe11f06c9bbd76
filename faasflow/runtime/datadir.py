"""The local gateway's data directory: who may read it, and the key that signs iterations.

The directory holds request bodies, outputs and signed messages, so it is the owner's alone:
``faasflow up`` runs with umask 077 and, at start, brings a directory made by an older version
(0755 with 0644 files) to 0700/0600.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from faasflow.settings import HMAC_SECRET_NAME, EnvVars

__all__ = ["UMASK", "hmac_secret", "secure_tree"]

#: The umask of ``faasflow up`` and its workers: new files 0600, new directories 0700.
UMASK = 0o077


def secure_tree(root: Path) -> int:
    """Make ``root`` and everything under it that this user owns 0700 (directories) or 0600
    (files), without following symlinks; returns how many modes changed."""
    changed = 0
    uid = os.geteuid()

    def fix(path: str, directory: bool) -> None:
        nonlocal changed
        try:
            info = os.lstat(path)
        except OSError:
            return
        if stat.S_ISLNK(info.st_mode) or info.st_uid != uid:
            return
        mode = stat.S_IMODE(info.st_mode)
        wanted = 0o700 if directory else mode & 0o700
        if mode != wanted:
            os.chmod(path, wanted)
            changed += 1

    fix(str(root), True)
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            fix(os.path.join(directory, name), True)
        for name in files:
            fix(os.path.join(directory, name), False)
    return changed


def hmac_secret(data_dir: Path, secrets_dir: Path, environ: Mapping[str, str]) -> tuple[str, str]:
    """The key that signs iterations, and where it came from. A configured key wins:
    ``FAASFLOW_HMAC_SECRET``, then the secret ``faasflow-hmac-secret`` in the secrets
    directory; otherwise one generated once per data directory (``<data>/hmac-secret``)."""
    configured = (environ.get(EnvVars.HMAC_SECRET) or "").strip()
    if configured:
        return configured, EnvVars.HMAC_SECRET
    mounted = secrets_dir / HMAC_SECRET_NAME
    try:
        value = mounted.read_text().strip()
    except OSError:
        value = ""
    if value:
        return value, str(mounted)
    path = data_dir / "hmac-secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), str(path)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return path.read_text().strip(), str(path)
