"""Telling people and systems: e-mail through the platform's relay, signed webhooks.

Webhooks carry ``X-Urbanstack-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 over ``<t>.<body>`` with the subscription's secret. Each subscription has its
own secret, derived from the tool's client secret and the subscription URL
(:func:`subscription_secret`), so no secret sits in the settings ConfigMap; the receiver
gets it from the municipality's administrator (``urbanstack tool webhook-secret``) and
refuses requests whose ``t`` is older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Callable

import httpx

from urbanstack import mail

from .context import ToolContext

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Urbanstack-Signature"
WEBHOOK_TIMEOUT = 5.0
ATTEMPTS = 3


def retry(action: Callable[[], object], what: str, attempts: int = ATTEMPTS, backoff: float = 0.5,
          redact: Callable[[str], str] = str) -> bool:
    """Run ``action`` up to ``attempts`` times with exponential backoff; False when all failed."""
    for attempt in range(1, attempts + 1):
        try:
            action()
            return True
        except Exception as exc:  # noqa: BLE001 - logged (redacted), retried, then given up
            log.warning("%s failed (attempt %d/%d): %s", what, attempt, attempts, redact(str(exc)))
            if attempt < attempts:
                time.sleep(backoff * 2 ** (attempt - 1))
    return False


def subscription_secret(client_secret: str, url: str) -> str:
    return hmac.new(client_secret.encode(), f"webhook:{url}".encode(), hashlib.sha256).hexdigest()


def signature(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, *, now: float | None = None, tolerance: float = 300) -> bool:
    """What a receiver does: check the signature and that it is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, body, timestamp), header)


@dataclass
class Notifier:
    ctx: ToolContext
    http: httpx.Client | None = None

    def __post_init__(self):
        self.http = self.http or httpx.Client(timeout=WEBHOOK_TIMEOUT, follow_redirects=False)

    def mail(self, to: str, subject: str, text: str) -> bool:
        return retry(lambda: mail.send(self.ctx.platform, to, subject, text, sender_name=self.ctx.tool),
                     f"mail to {to}", redact=self.ctx.redact)

    def webhook(self, url: str, body: bytes, content_type: str) -> bool:
        secret = subscription_secret(self.ctx.client_secret, url)

        def post():
            headers = {"Content-Type": content_type,
                       SIGNATURE_HEADER: signature(secret, body, int(time.time()))}
            response = self.http.post(url, content=body, headers=headers)
            if response.status_code >= 300:
                raise RuntimeError(f"{url} answered {response.status_code}")

        return retry(post, f"webhook {url}", redact=self.ctx.redact)
