"""Sending the platform's own e-mail (signup confirmations, ops notices) through the relay in
the settings: ``URBANSTACK_SMTP_HOST``/``PORT``/``USER``/``PASSWORD``/``FROM``/``STARTTLS``.
On the local platform the relay is its SMTP server on 127.0.0.1 (urbanstack.devplatform.smtp).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from urbanstack.settings import Settings

TIMEOUT = 15.0


class MailError(RuntimeError):
    """The relay refused or could not be reached; the message never contains the password."""


def send(settings: Settings, to: str, subject: str, text: str, html: str | None = None,
         sender_name: str = "Urban Stack") -> str:
    """Send one message; returns its Message-ID."""
    message = EmailMessage()
    message["From"] = formataddr((sender_name, settings.smtp_from))
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=settings.smtp_from.rsplit("@", 1)[-1])
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    host = settings.smtp_server
    try:
        with smtplib.SMTP(host, settings.smtp_port, timeout=TIMEOUT) as client:
            if settings.smtp_starttls:
                client.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                client.login(settings.smtp_user, settings.smtp_password)
            client.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        text_of = str(exc).replace(settings.smtp_password, "***") if settings.smtp_password else str(exc)
        raise MailError(f"the mail relay {host}:{settings.smtp_port} did not take the message to {to}: "
                        f"{type(exc).__name__}: {text_of}") from None
    return str(message["Message-ID"])
