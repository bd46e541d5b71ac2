"""A signed-in Gov Hub session made directly in the metadata store, for page tests that do
not need Keycloak's sign-in (tests/integration/test_gov_signin.py covers that)."""

from __future__ import annotations

import secrets
from datetime import timedelta

from urbanstack.runtime.store.models import WebSession, utcnow
from urbanstack.runtime.web import security


def signed_in_cookie(store, tenant, roles, subject="staff-1", name="Erika Mustermann"):
    """Returns (cookie name, token, CSRF token) of a live session of ``subject`` in ``tenant``."""
    token, csrf, now = security.new_token(), secrets.token_urlsafe(32), utcnow()
    with store.session() as db:
        db.add(WebSession(id=security.token_hash(token), tenant=tenant, subject=subject, username=subject,
                          display_name=name, email=f"{subject}@{tenant}.example", roles=sorted(roles),
                          csrf_token=csrf, access_expires_at=now + timedelta(hours=1), created_at=now,
                          last_seen_at=now, expires_at=now + timedelta(hours=8)))
    return security.COOKIE, token, csrf
