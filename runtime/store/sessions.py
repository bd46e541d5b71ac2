"""Web sessions of the hubs. The browser holds a random token (``secrets.token_urlsafe(32)``)
in its cookie; the store keeps only its SHA-256, so a copy of the database signs nobody in.

A session ends after ``idle`` without a request (default 30 min) and ``absolute`` after it
began (default 8 h), whichever comes first. A request restarts the idle clock by writing
``last_seen_at`` only when the last write is ``TOUCH_INTERVAL`` (1 min) old or more: most
requests then only read their session (a write per page view serialised the pages of all
users on SQLite), and a session may end up to that minute before ``idle`` without requests. ``rotate`` issues a new token and CSRF token
for the same session (at sign-in) and makes the old token worthless.

Whoever keeps copies of sessions (the hubs' short in-process cache, :mod:`urbanstack.runtime.web.sessions`)
registers with :meth:`Sessions.on_change` and is told of every change or deletion made through this
object, before the call returns.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlalchemy import delete, or_

from urbanstack.runtime.store.dashboards import InvalidInput, slug
from urbanstack.runtime.store.models import WebSession, utcnow

TOUCH_INTERVAL = timedelta(minutes=1)
CHANGEABLE = frozenset({"subject", "username", "display_name", "email", "roles", "id_token", "refresh_token",
                        "pending_login", "access_expires_at", "language"})


def token_id(token: str) -> str:
    """The stored id of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> str:
    return secrets.token_urlsafe(32)


class Sessions:
    def __init__(self, store, *, idle: timedelta = timedelta(minutes=30), absolute: timedelta = timedelta(hours=8)):
        if idle <= timedelta(0) or absolute <= timedelta(0):
            raise InvalidInput("session idle and absolute lifetimes must be positive")
        self._store, self.idle, self.absolute = store, idle, absolute
        self._listeners: list[Callable[[str | None], None]] = []

    def on_change(self, listener: Callable[[str | None], None]) -> None:
        """``listener(id)`` is called after a session's row changed or was deleted (``id``: the token's
        :func:`token_id`; ``None``: possibly many sessions). Not for the idle clock's writes."""
        self._listeners.append(listener)

    def _changed(self, session_id: str | None) -> None:
        for listener in self._listeners:
            listener(session_id)

    def _alive(self, record: WebSession | None, now: datetime) -> bool:
        return record is not None and now < record.expires_at and now < record.last_seen_at + self.idle

    @staticmethod
    def _changes(changes: dict[str, Any]) -> dict[str, Any]:
        unknown = set(changes) - CHANGEABLE
        if unknown:
            raise InvalidInput(f"a session has no field(s) {', '.join(sorted(unknown))}; "
                               f"changeable: {', '.join(sorted(CHANGEABLE))}")
        return changes

    def create(self, tenant: str, *, now: datetime | None = None, **fields) -> tuple[str, WebSession]:
        """A new session (usually before sign-in, with ``pending_login``); returns (token, session)."""
        now, token = now or utcnow(), _new_token()
        record = WebSession(id=token_id(token), tenant=slug(tenant, "tenant"), csrf_token=secrets.token_urlsafe(32),
                            created_at=now, last_seen_at=now, expires_at=now + self.absolute,
                            **{"roles": [], **self._changes(fields)})
        with self._store.session() as session:
            session.add(record)
        return token, record

    def get(self, token: str, *, now: datetime | None = None) -> WebSession | None:
        """The live session of ``token``, or None (unknown, or expired: then it is deleted)."""
        return self._live(token, now or utcnow(), touch=False)

    def touch(self, token: str, *, now: datetime | None = None) -> WebSession | None:
        """Like :meth:`get`, and the idle clock starts again."""
        return self._live(token, now or utcnow(), touch=True)

    def _live(self, token: str, now: datetime, *, touch: bool) -> WebSession | None:
        if not token:
            return None
        with self._store.session() as session:
            record = session.get(WebSession, token_id(token))
            if record is None:
                return None
            if not self._alive(record, now):
                session.delete(record)
                self._changed(record.id)
                return None
            if touch and now - record.last_seen_at >= TOUCH_INTERVAL:
                record.last_seen_at = now
            return record

    def update(self, token: str, *, now: datetime | None = None, **changes) -> WebSession | None:
        """Change fields of a live session without a new token (e.g. refreshed access expiry)."""
        changes, now = self._changes(changes), now or utcnow()
        with self._store.session() as session:
            record = session.get(WebSession, token_id(token))
            if not self._alive(record, now):
                return None
            for name, value in changes.items():
                setattr(record, name, value)
            record.last_seen_at = now
        self._changed(record.id)
        return record

    def rotate(self, token: str, *, now: datetime | None = None, **changes) -> tuple[str, WebSession] | None:
        """The same session under a new token and CSRF token (with ``changes`` applied, e.g. the
        signed-in subject); the old token no longer works. None if the session is not live."""
        changes, now = self._changes(changes), now or utcnow()
        with self._store.session() as session:
            old = session.get(WebSession, token_id(token))
            if not self._alive(old, now):
                return None
            new_token = _new_token()
            fields = {name: getattr(old, name) for name in CHANGEABLE} | changes
            record = WebSession(id=token_id(new_token), tenant=old.tenant, csrf_token=secrets.token_urlsafe(32),
                                created_at=old.created_at, last_seen_at=now, expires_at=old.expires_at, **fields)
            session.delete(old)
            session.flush()
            session.add(record)
        self._changed(old.id)
        return new_token, record

    def delete(self, token: str) -> bool:
        with self._store.session() as session:
            deleted = session.execute(delete(WebSession).where(WebSession.id == token_id(token))).rowcount == 1
        self._changed(token_id(token))
        return deleted

    def delete_all_of(self, tenant: str, subject: str) -> int:
        """Ends every session of ``subject`` in ``tenant``; returns how many."""
        with self._store.session() as session:
            ended = session.execute(delete(WebSession).where(WebSession.tenant == tenant,
                                                             WebSession.subject == subject)).rowcount or 0
        self._changed(None)
        return ended

    def purge(self, *, now: datetime | None = None) -> int:
        """Delete every expired session; returns how many."""
        now = now or utcnow()
        with self._store.session() as session:
            purged = session.execute(delete(WebSession).where(or_(
                WebSession.expires_at <= now, WebSession.last_seen_at <= now - self.idle))).rowcount
        self._changed(None)
        return purged
