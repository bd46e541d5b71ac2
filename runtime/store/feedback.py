"""Accessibility feedback: stored from the Citizen Hub's form, listed per municipality
for its Gov Hub administrators. Input is checked here (lengths, a plausible email) so
nothing unbounded reaches the database."""

from __future__ import annotations

import re

from sqlalchemy import delete, select

from urbanstack.runtime.store.dashboards import InvalidInput, slug
from urbanstack.runtime.store.models import AccessibilityFeedback, utcnow

MAX_MESSAGE = 4000
MAX_NAME = 200
MAX_EMAIL = 320
MAX_LIST = 200
_EMAIL = re.compile(r"^[^@\s<>]{1,64}@[^@\s<>]+\.[^@\s<>]{2,}$")


class Feedback:
    def __init__(self, store):
        self._store = store

    def add(self, tenant: str, message: str, *, name: str = "", email: str = "", page: str = "") -> AccessibilityFeedback:
        tenant = slug(tenant, "tenant")
        message, name, email = (message or "").strip(), (name or "").strip(), (email or "").strip()
        if not message:
            raise InvalidInput("message: please describe the barrier")
        if len(message) > MAX_MESSAGE:
            raise InvalidInput(f"message: at most {MAX_MESSAGE} characters")
        if len(name) > MAX_NAME:
            raise InvalidInput(f"name: at most {MAX_NAME} characters")
        if email and (len(email) > MAX_EMAIL or not _EMAIL.match(email)):
            raise InvalidInput("email: enter an email address like name@example.org, or leave it empty")
        with self._store.session() as session:
            entry = AccessibilityFeedback(tenant=tenant, message=message, name=name, email=email,
                                          page=(page or "")[:500], created_at=utcnow())
            session.add(entry)
            session.flush()
            return entry

    def list(self, tenant: str, limit: int = MAX_LIST) -> list[AccessibilityFeedback]:
        """The newest messages of ``tenant``, newest first, at most ``limit``."""
        limit = max(1, min(int(limit), MAX_LIST))
        with self._store.session() as session:
            return list(session.scalars(select(AccessibilityFeedback).where(AccessibilityFeedback.tenant == tenant)
                                        .order_by(AccessibilityFeedback.id.desc()).limit(limit)))

    def delete(self, tenant: str, feedback_id: int) -> bool:
        with self._store.session() as session:
            return session.execute(delete(AccessibilityFeedback).where(
                AccessibilityFeedback.tenant == tenant, AccessibilityFeedback.id == feedback_id)).rowcount == 1
