"""A signed-in hub session written straight into the metadata store, for page tests that do not
go through Keycloak (the sign-in itself has its own tests)."""

from __future__ import annotations

import secrets
from datetime import timedelta

from urbanstack.runtime.store.models import WebSession
from urbanstack.runtime.web import security


def signed_in_cookie(store, tenant: str, roles, subject: str = "test-subject", name: str = "Test User"
                     ) -> tuple[str, str, str]:
    """A live session of ``tenant`` with ``roles``; returns (cookie name, cookie token, CSRF token).

    The row's id is the SHA-256 hex of the token, as the hub looks it up."""
    token, csrf = security.new_token(), secrets.token_urlsafe(32)
    now = security.now()
    with store.session() as db:
        db.add(WebSession(id=security.token_hash(token), tenant=tenant, subject=subject, username=subject,
                          display_name=name, email=f"{subject}@example.org", roles=sorted(roles), csrf_token=csrf,
                          pending_login=None, access_expires_at=now + timedelta(hours=1), created_at=now,
                          last_seen_at=now, expires_at=now + timedelta(hours=8)))
    return security.COOKIE, token, csrf
