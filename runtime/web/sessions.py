"""Server-side sessions of signed-in staff, kept in the metadata store.

A request's session is found by the hash of its cookie token; it is dropped when idle
or too old (:class:`security.SessionPolicy`). When its access token has expired the
roles are refreshed from Keycloak (see :mod:`.oidc`), so removing a colleague's access
or ending their Keycloak session ends the hub session within one access-token lifetime.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from fastapi import Request
from sqlalchemy import delete

from urbanstack.runtime.api.auth import ROLE_PERMISSIONS, Principal
from urbanstack.runtime.store.models import WebSession

from . import security
from .oidc import HubClient, Keycloak, PendingLogin, SignedIn, SignInError


@dataclass(frozen=True)
class Session:
    """What a page needs of the session (a detached copy of the row)."""
    key: str
    tenant: str
    subject: str | None
    username: str
    display_name: str
    email: str
    roles: tuple[str, ...]
    csrf_token: str
    language: str | None

    @property
    def signed_in(self) -> bool:
        return self.subject is not None

    @property
    def principal(self) -> Principal:
        permissions = frozenset(p for role in self.roles for p in ROLE_PERMISSIONS.get(role, ()))
        return Principal(tenant=self.tenant, roles=frozenset(self.roles), subject=self.subject or "",
                         permissions=permissions)

    def has(self, role: str) -> bool:
        return role in self.roles


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _copy(row: WebSession) -> Session:
    return Session(key=row.id, tenant=row.tenant, subject=row.subject, username=row.username or "",
                   display_name=row.display_name or "", email=row.email or "", roles=tuple(row.roles or ()),
                   csrf_token=row.csrf_token, language=getattr(row, "language", None))


class Sessions:
    def __init__(self, store, keycloak: Keycloak, policy: security.SessionPolicy | None = None):
        self.store, self.keycloak = store, keycloak
        self.policy = policy or security.SessionPolicy()

    def load(self, request: Request, client_for) -> Session | None:
        """The request's live session, refreshed if its access token expired; None if there is none.

        ``client_for(tenant)`` gives the hub's OIDC client of a tenant (for the refresh)."""
        token = security.session_token(request)
        if not token:
            return None
        key = security.token_hash(token)
        now = security.now()
        with self.store.session() as db:
            row = db.get(WebSession, key)
            if row is None:
                return None
            if (now - _aware(row.last_seen_at) > self.policy.idle or now - _aware(row.created_at) > self.policy.lifetime
                    or (row.expires_at is not None and now > _aware(row.expires_at))):
                db.delete(row)
                db.commit()
                return None
            if row.subject is not None and row.access_expires_at is not None and now >= _aware(row.access_expires_at):
                try:
                    self._apply(row, self.keycloak.refresh(client_for(row.tenant), row.refresh_token or ""))
                except SignInError:
                    db.delete(row)
                    db.commit()
                    return None
            row.last_seen_at = now
            db.commit()
            return _copy(row)

    def begin(self, tenant: str, return_to: str, existing: Session | None) -> tuple[str, PendingLogin]:
        """A pre-login session holding the login's state, nonce and PKCE verifier; returns its new token."""
        pending = PendingLogin.new(return_to)
        token = security.new_token()
        now = security.now()
        with self.store.session() as db:
            if existing is not None:
                db.execute(delete(WebSession).where(WebSession.id == existing.key))
            db.add(WebSession(id=security.token_hash(token), tenant=tenant, subject=None, roles=[],
                              csrf_token=secrets.token_urlsafe(32), pending_login=pending.as_dict(),
                              created_at=now, last_seen_at=now, expires_at=now + self.policy.lifetime))
            db.commit()
        return token, pending

    def pending(self, session: Session) -> PendingLogin | None:
        with self.store.session() as db:
            row = db.get(WebSession, session.key)
            data = row.pending_login if row is not None else None
        return PendingLogin(**data) if data else None

    def complete(self, session: Session, signed_in: SignedIn) -> str:
        """Signs the session in under a new token (the pre-login token stops working)."""
        token = security.new_token()
        now = security.now()
        with self.store.session() as db:
            old = db.get(WebSession, session.key)
            language = getattr(old, "language", None) if old is not None else None
            if old is not None:
                db.delete(old)
            row = WebSession(id=security.token_hash(token), tenant=signed_in.principal.tenant,
                             csrf_token=secrets.token_urlsafe(32), pending_login=None, created_at=now,
                             last_seen_at=now, expires_at=now + self.policy.lifetime)
            if language and hasattr(row, "language"):
                row.language = language
            self._apply(row, signed_in)
            db.add(row)
            db.commit()
        return token

    def remember_language(self, session: Session, lang: str) -> None:
        with self.store.session() as db:
            row = db.get(WebSession, session.key)
            if row is not None and hasattr(row, "language"):
                row.language = lang
                db.commit()

    def end(self, session: Session) -> tuple[str | None, str | None]:
        """Deletes the session; returns its ID token and refresh token for ending the Keycloak session."""
        with self.store.session() as db:
            row = db.get(WebSession, session.key)
            if row is None:
                return None, None
            hint, refresh = row.id_token, row.refresh_token
            db.delete(row)
            db.commit()
        return hint, refresh

    def end_all_of(self, tenant: str, subject: str) -> int:
        """Ends every hub session of a user (access removed by an admin)."""
        with self.store.session() as db:
            result = db.execute(delete(WebSession).where(WebSession.tenant == tenant, WebSession.subject == subject))
            db.commit()
            return result.rowcount or 0

    def purge(self) -> int:
        now = security.now()
        with self.store.session() as db:
            result = db.execute(delete(WebSession).where(
                (WebSession.last_seen_at < now - self.policy.idle) | (WebSession.created_at < now - self.policy.lifetime)))
            db.commit()
            return result.rowcount or 0

    @staticmethod
    def _apply(row: WebSession, signed_in: SignedIn) -> None:
        principal = signed_in.principal
        row.subject = principal.subject
        row.roles = sorted(principal.roles)
        row.username = signed_in.username or row.username
        row.display_name = signed_in.display_name or row.display_name
        row.email = signed_in.email or row.email
        row.id_token = signed_in.id_token or row.id_token
        if signed_in.refresh_token:
            row.refresh_token = signed_in.refresh_token
        row.access_expires_at = signed_in.access_expires_at


__all__ = ["HubClient", "Session", "Sessions"]
