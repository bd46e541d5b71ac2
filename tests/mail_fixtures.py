"""The ``mailbox`` fixture: real SMTP for tests.

When the local platform's SMTP server runs (``urbanstack dev up``), its mail folder is
read. Otherwise a private server is started through the same ``platform.up`` code path
on a temporary state folder: on ``URBANSTACK_SMTP_PORT`` when that port is free (so
Keycloak realms the operator configured deliver to it), else on a free port (then only
mail sent by the test process itself arrives). The private one is stopped and purged
at the end.
"""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass

import pytest

from urbanstack.devplatform.mailbox import Mailbox
from urbanstack.settings import Settings


@dataclass(frozen=True)
class TestMail:
    box: Mailbox
    settings: Settings  # smtp_port: where the server listens
    own: bool  # a private server of this test session


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    for port in range(26000, 26600):  # below Linux's ephemeral range, like every platform port
        if _port_free(port):
            return port
    raise RuntimeError("no free port in 26000-26599 for a test SMTP server")


@pytest.fixture(scope="session")
def mailbox(settings):
    from urbanstack.devplatform import platform, processes
    from urbanstack.devplatform.smtp import Smtp

    if processes.find("smtp", settings.run_dir) is not None and Smtp(settings).ready():
        yield TestMail(Mailbox(settings.mail_dir), settings, own=False)
        return
    port = settings.smtp_port if _port_free(settings.smtp_port) else _free_port()
    state = tempfile.mkdtemp(prefix="urbanstack-test-smtp-")
    own = Settings.from_env({"URBANSTACK_STATE_DIR": state, "URBANSTACK_SMTP_PORT": str(port),
                             "URBANSTACK_READY_TIMEOUT": "30"})
    platform.up(own, ["smtp"])
    try:
        yield TestMail(Mailbox(own.mail_dir), own, own=True)
    finally:
        platform.down(own, purge=True)
