"""Signed-in Gov Hub sessions for page tests, made through the metadata store's own session API
(the real Keycloak sign-in is tested in test_gov_signin.py and the browser tests)."""

from __future__ import annotations

from datetime import timedelta

from urbanstack.runtime.store.models import utcnow
from urbanstack.runtime.web import security


def signed_in_cookie(store, tenant: str, roles, subject: str = "test-user", name: str = "Erika Muster"
                     ) -> tuple[str, str, str]:
    """A live session of ``subject`` in ``tenant`` with ``roles``: (cookie name, token, CSRF token)."""
    token, row = store.sessions.create(tenant, subject=subject, username=subject, display_name=name,
                                       email=f"{subject}@example.org", roles=sorted(roles),
                                       access_expires_at=utcnow() + timedelta(hours=1))
    return security.COOKIE, token, row.csrf_token
