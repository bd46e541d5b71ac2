"""Services that will not run as root (PostgreSQL refuses to, mosquitto drops to its own user).

As root, such a service runs as its Debian system user, which cannot enter root's private
home; its folder then lives under ``base/<key of the state folder>`` (one per state folder),
and its files belong to that user. As anyone else everything stays as it is.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
from pathlib import Path


def as_root() -> bool:
    return os.geteuid() == 0


def folder(base: Path, state_dir: Path) -> Path:
    """The service's folder under ``base`` for this state folder (used as root)."""
    return base / hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]


def command_as(user: str, command: list[str]) -> list[str]:
    """``command`` run as ``user`` when we are root."""
    if not as_root():
        return command
    return [shutil.which("setpriv") or "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--",
            *command]


def own(path: Path, user: str) -> None:
    if as_root():
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def write_private(path: Path, text: str, user: str) -> None:
    """A file only its owner reads (0600), owned by ``user`` when we are root."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    own(path, user)
