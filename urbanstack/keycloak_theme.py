"""Urban Stack's Keycloak login theme (``templates/keycloak/theme``): our own pages for the
one-time-code steps on top of ``keycloak.v2``, with labels on every field and German texts
where Keycloak's catalogue has English.

The theme's folder name carries a hash of its content (``urbanstack-<12 hex>``). Keycloak's
folder theme provider looks a theme up on disk each time it is asked for one it has not cached,
and caches only themes it found, so a new name is picked up by a running Keycloak with theme
caching on, and a changed theme (a new name) never meets a stale cache. Realms name the theme by
this name: the operator's tenant and shared realms, the platform realm, the stack's ConfigMap.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

PREFIX = "urbanstack"


@lru_cache(maxsize=1)
def files() -> dict[str, bytes]:
    """The theme's files by their path inside the theme folder (``login/...``)."""
    import urbanstack.templates

    source = Path(next(iter(urbanstack.templates.__path__))) / "keycloak" / "theme"
    found = {p.relative_to(source).as_posix(): p.read_bytes()
             for p in sorted(source.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}
    if not found:
        raise RuntimeError(f"the Keycloak login theme is missing from the package ({source})")
    return found


def name() -> str:
    digest = hashlib.sha256()
    for path, content in files().items():
        digest.update(path.encode() + b"\0" + hashlib.sha256(content).digest())
    return f"{PREFIX}-{digest.hexdigest()[:12]}"


def install(themes_dir: Path) -> str:
    """Put the theme into Keycloak's ``themes`` folder under its content-hashed name (written
    aside, then renamed into place, so Keycloak never sees half a theme). Returns the name."""
    theme = name()
    target = themes_dir / theme
    if target.is_dir():
        return theme
    staging = Path(tempfile.mkdtemp(prefix=f".{theme}-", dir=themes_dir))
    try:
        for path, content in files().items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_bytes(content)
        os.chmod(staging, 0o755)
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():
            raise
    return theme
