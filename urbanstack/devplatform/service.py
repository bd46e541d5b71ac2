"""What every service of the local platform provides to ``platform.up``."""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.request

from urbanstack.settings import Settings


class Service:
    """One process of the local platform: installed once into the cache,
    prepared once into the state folder, then started and probed."""

    name: str = ""
    depends_on: tuple[str, ...] = ()

    def __init__(self, settings: Settings):
        self.settings = settings

    @property
    def log_path(self):
        return self.settings.logs_dir / f"{self.name}.log"

    def install(self) -> None:
        """Download or build what the service needs into the cache (idempotent)."""

    def prepare(self) -> None:
        """Write configuration and initialise data in the state folder (idempotent)."""

    def needs_restart(self) -> bool:
        """True when the running process must be restarted to pick up new configuration."""
        return False

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def endpoint(self) -> str:
        raise NotImplementedError

    def purge(self) -> None:
        """Delete data kept outside the state folder (``dev down --purge``); most services keep none."""


def http_ok(url: str, *, token: str | None = None, cafile: str | None = None,
            insecure: bool = False, timeout: float = 2.0) -> bool:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = None
    if url.startswith("https"):
        context = ssl.create_default_context(cafile=cafile)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return False


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False
