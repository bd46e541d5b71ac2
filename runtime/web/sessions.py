"""Signed-in staff sessions: the store's server-side sessions (:mod:`urbanstack.runtime.store.sessions`)
joined with Keycloak sign-in.

A request's session is found by its cookie token; the store drops it when idle or too old.
When its access token has expired, the roles are refreshed from Keycloak (see :mod:`.oidc`),
so removing a colleague's access or ending their Keycloak session ends the hub session within
one access-token lifetime (Keycloak's default: 5 minutes).

A live session is kept in a short in-process cache (:data:`CACHE_SECONDS`), so the pages of a
busy user do not each read it from the store again. Every change made through this process's store
(sign-out, sign-in's token rotation, a language choice, removed access, a refresh of the roles)
drops the copy at once; an entry never outlives the session's idle or absolute end, nor its access
token (then the roles are refreshed as before). With several hub processes over one store, a
session ended in one of them still opens pages in the others for at most :data:`CACHE_SECONDS`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request

from urbanstack.runtime.api.auth import ROLE_PERMISSIONS, Principal
from urbanstack.runtime.store.models import WebSession, utcnow
from urbanstack.runtime.store.sessions import token_id

from . import security
from .i18n import N_

# How long a session read from the store serves the requests of its cookie without being read again.
CACHE_SECONDS = 5.0
CACHE_ENTRIES = 10_000
ROLE_NAMES = {"gov-admin": N_("Administrator"), "gov-editor": N_("Editor"), "gov-viewer": N_("Viewer")}
from .oidc import HubClient, Keycloak, PendingLogin, SignedIn, SignInError


@dataclass(frozen=True)
class Session:
    """What a page needs of the session (a copy; the row stays in the store)."""
    token: str
    tenant: str
    subject: str | None
    username: str
    display_name: str
    email: str
    roles: tuple[str, ...]
    csrf_token: str
    language: str | None

    @property
    def key(self) -> str:
        """A stable id of the session that is not its token (the store's id: the token's SHA-256)."""
        return token_id(self.token)

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

    @property
    def role(self) -> str:
        """The highest staff role (roles are composites: an admin is also editor and viewer)."""
        return next((role for role in ("gov-admin", "gov-editor", "gov-viewer") if role in self.roles), "")


def _copy(token: str, row: WebSession) -> Session:
    return Session(token=token, tenant=row.tenant, subject=row.subject, username=row.username or "",
                   display_name=row.display_name or "", email=row.email or "", roles=tuple(row.roles or ()),
                   csrf_token=row.csrf_token, language=row.language)


def _identity(signed_in: SignedIn) -> dict:
    principal = signed_in.principal
    fields = {"subject": principal.subject, "roles": sorted(principal.roles), "username": signed_in.username,
              "display_name": signed_in.display_name, "email": signed_in.email,
              "access_expires_at": signed_in.access_expires_at}
    if signed_in.id_token:
        fields["id_token"] = signed_in.id_token
    if signed_in.refresh_token:
        fields["refresh_token"] = signed_in.refresh_token
    return fields


class Sessions:
    def __init__(self, store, keycloak: Keycloak, *, cache_seconds: float = CACHE_SECONDS):
        self.store, self.keycloak = store, keycloak
        self._cache_for = timedelta(seconds=cache_seconds)
        self._cached: OrderedDict[str, tuple[datetime, Session]] = OrderedDict()
        self._generation = 0    # counts invalidations: a read that overlapped one is not kept
        self._lock = threading.Lock()
        store.sessions.on_change(self._forget)

    def _forget(self, session_id: str | None) -> None:
        with self._lock:
            self._generation += 1
            if session_id is None:
                self._cached.clear()
            else:
                self._cached.pop(session_id, None)

    def _keep(self, session_id: str, session: Session, row: WebSession, generation: int) -> None:
        now = utcnow()
        ends = [now + self._cache_for, row.expires_at, row.last_seen_at + self.store.sessions.idle]
        if row.subject is not None and row.access_expires_at is not None:
            ends.append(row.access_expires_at)
        with self._lock:
            if generation != self._generation or self._cache_for <= timedelta(0):
                return
            self._cached[session_id] = (min(ends), session)
            while len(self._cached) > CACHE_ENTRIES:
                self._cached.popitem(last=False)

    def load(self, request: Request, client_for) -> Session | None:
        """The request's live session, its roles refreshed if the access token expired; None if there is none.

        ``client_for(tenant)`` gives the hub's OIDC client of a tenant (for the refresh)."""
        token = security.session_token(request)
        if not token:
            return None
        session_id = token_id(token)
        cached = self._cached.get(session_id)
        if cached is not None and utcnow() < cached[0]:
            return cached[1]
        generation = self._generation
        row = self.store.sessions.touch(token)
        if row is None:
            return None
        if row.subject is not None and row.access_expires_at is not None and utcnow() >= row.access_expires_at:
            try:
                signed_in = self.keycloak.refresh(client_for(row.tenant), row.refresh_token or "")
            except SignInError:
                self.store.sessions.delete(token)
                return None
            if signed_in.principal.tenant != row.tenant or signed_in.principal.subject != row.subject:
                self.store.sessions.delete(token)
                return None
            row = self.store.sessions.update(token, **_identity(signed_in))
            if row is None:
                return None
            generation = self._generation   # the update above was this request's own
        session = _copy(token, row)
        self._keep(session_id, session, row, generation)
        return session

    def begin(self, tenant: str, return_to: str, existing: Session | None) -> tuple[str, PendingLogin]:
        """A pre-login session holding the login's state, nonce and PKCE verifier; returns its token."""
        pending = PendingLogin.new(return_to)
        if existing is not None:
            self.store.sessions.delete(existing.token)
        token, _ = self.store.sessions.create(tenant, pending_login=pending.as_dict(),
                                              language=existing.language if existing else None)
        return token, pending

    def pending(self, session: Session) -> PendingLogin | None:
        row = self.store.sessions.get(session.token)
        return PendingLogin(**row.pending_login) if row is not None and row.pending_login else None

    def complete(self, session: Session, signed_in: SignedIn) -> str | None:
        """Signs the session in under a new token and CSRF token (the pre-login token stops working)."""
        rotated = self.store.sessions.rotate(session.token, pending_login=None, **_identity(signed_in))
        return rotated[0] if rotated else None

    def remember_language(self, session: Session, lang: str) -> None:
        if session.language != lang:
            self.store.sessions.update(session.token, language=lang)

    def end(self, session: Session) -> tuple[str | None, str | None]:
        """Deletes the session; returns its ID token and refresh token for ending the Keycloak session."""
        row = self.store.sessions.get(session.token)
        self.store.sessions.delete(session.token)
        return (row.id_token, row.refresh_token) if row is not None else (None, None)

    def end_all_of(self, tenant: str, subject: str) -> int:
        """Ends every hub session of a user (their access was removed)."""
        return self.store.sessions.delete_all_of(tenant, subject)


__all__ = ["HubClient", "Session", "Sessions"]
