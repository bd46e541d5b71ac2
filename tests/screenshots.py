"""Where the browser tests put their screenshots: ``URBANSTACK_SCREENSHOTS_DIR`` when set, else
``<state folder>/screenshots`` (``URBANSTACK_STATE_DIR``), never the source tree on an ordinary run.
``make screenshots`` runs the browser tests with the folder set to ``docs/screenshots`` to refresh
the pictures the documentation shows."""

from __future__ import annotations

import os
from pathlib import Path

from urbanstack.settings import Settings

VARIABLE = "URBANSTACK_SCREENSHOTS_DIR"


def folder(environ=None) -> Path:
    environ = os.environ if environ is None else environ
    given = environ.get(VARIABLE)
    return Path(given).expanduser() if given else Settings.from_env(environ).state_dir / "screenshots"


def save(page, name: str) -> Path:
    """A full-page screenshot of ``page`` as ``<folder>/<name>.png``."""
    target = folder() / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    return target
