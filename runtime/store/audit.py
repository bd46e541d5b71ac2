"""The audit trail of the hubs: who did what to which object, per municipality, append-only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from urbanstack.runtime.store.dashboards import Actor, InvalidInput, _actor, slug
from urbanstack.runtime.store.models import AuditEntry, utcnow

MAX_PAGE = 500


class Audit:
    def __init__(self, store):
        self._store = store

    def append(self, tenant: str, actor: Actor | None, action: str, target: str = "",
               detail: dict[str, Any] | None = None) -> AuditEntry:
        """Record one action; ``actor`` None for the system itself."""
        if not action or len(action) > 100:
            raise InvalidInput("an audit action needs a name of at most 100 characters")
        actor = _actor(actor) if actor is not None else Actor("", "system")
        with self._store.session() as session:
            entry = AuditEntry(tenant=slug(tenant, "tenant"), actor_subject=actor.subject, actor_name=actor.name,
                               action=action, target=target[:500], detail=detail or {}, at=utcnow())
            session.add(entry)
            return entry

    def list(self, tenant: str, *, limit: int = 100, before: int | None = None,
             action: str | None = None) -> list[AuditEntry]:
        """A page of the tenant's entries, newest first; the next page is ``before=<last id>``."""
        query = select(AuditEntry).where(AuditEntry.tenant == tenant)
        if before is not None:
            query = query.where(AuditEntry.id < before)
        if action:
            query = query.where(AuditEntry.action == action)
        with self._store.session() as session:
            return list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(max(1, min(int(limit), MAX_PAGE)))))
