"""Debian packages the local platform needs (etcd, PostgreSQL, Chromium, ...), installed with apt-get when missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from urbanstack.devplatform.progress import Step


def ensure_installed(package: str, *, provides: str | Path, what: str) -> None:
    """Install Debian ``package`` unless ``provides`` (an absolute path, or a command on PATH) exists.

    ``apt-get update`` runs only when the first install attempt fails (a fresh machine's
    package lists may be stale or empty). Safe to call twice."""
    import shutil

    if (Path(provides).exists() if os.path.isabs(str(provides)) else shutil.which(str(provides))):
        return
    with Step(f"{what}: installing Debian's {package}"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
        if subprocess.run(command, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"could not install {package} with apt-get "
                                   f"(run 'apt-get install {package}' as root): {result.stderr[-500:]}")
