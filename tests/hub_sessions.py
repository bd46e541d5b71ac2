"""Signed-in Gov Hub sessions for page tests, written straight into the metadata store
(the real Keycloak sign-in is exercised by the browser tests)."""

from __future__ import annotations

import secrets
from datetime import timedelta

from urbanstack.runtime.store.models import WebSession
from urbanstack.runtime.web import security


def signed_in_cookie(store, tenant: str, roles, subject: str = "test-user", name: str = "Erika Muster"
                     ) -> tuple[str, str, str]:
    """A live session of ``subject`` in ``tenant`` with ``roles``: (cookie name, token, CSRF token)."""
    token = security.new_token()
    csrf = secrets.token_urlsafe(32)
    now = security.now()
    with store.session() as db:
        db.add(WebSession(id=security.token_hash(token), tenant=tenant, subject=subject, username=subject,
                          display_name=name, email=f"{subject}@example.org", roles=sorted(roles), csrf_token=csrf,
                          pending_login=None, access_expires_at=now + timedelta(hours=1), created_at=now,
                          last_seen_at=now, expires_at=now + timedelta(hours=8)))
        db.commit()
    return security.COOKIE, token, csrf


class _AnyAsset(dict):
    def __missing__(self, name: str) -> str:
        return name


def without_bundle(app) -> None:
    """Page tests on a branch without the built front-end bundle: asset URLs name the file as is."""
    app.state.hub.renderer.assets.__dict__["manifest"] = _AnyAsset()
