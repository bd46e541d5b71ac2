"""SMTP for the local platform: aiosmtpd on 127.0.0.1 (``URBANSTACK_SMTP_PORT``) keeping each
message as a file in ``<state>/mail/``.

Keycloak's realms send their invitations here (the operator gives every realm the
platform's SMTP settings) and so do the signup confirmations. In production
``URBANSTACK_SMTP_HOST`` names a real relay and this service is not used.
"""

from __future__ import annotations

import os
import smtplib
import sys

from urbanstack.devplatform.service import Service


class Smtp(Service):
    name = "smtp"

    def prepare(self) -> None:
        self.settings.mail_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def command(self):
        return ([sys.executable, "-m", "urbanstack.devplatform.smtp_server", str(self.settings.mail_dir),
                 str(self.settings.smtp_port)], dict(os.environ))

    def ready(self) -> bool:
        return smtp_ready(self.settings.smtp_port)

    def endpoint(self) -> str:
        return f"smtp://127.0.0.1:{self.settings.smtp_port} (messages in {self.settings.mail_dir})"


def smtp_ready(port: int, host: str = "127.0.0.1") -> bool:
    """An SMTP server answers on ``host:port`` (a greeting and NOOP, not just an open port)."""
    try:
        with smtplib.SMTP(host, port, timeout=2) as client:
            return client.noop()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False
