"""Credentials the local platform generates for itself, kept in 0600 files."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def get_or_create(secrets_dir: Path, name: str, nbytes: int = 24) -> str:
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    path = secrets_dir / name
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value
