"""Dashboards in the metadata store: create, list for a viewer, save with a real
compare-and-set, every version kept, restore, editors, shares, publishing, comments.

Who may do what is the hub's decision; this module stores and checks consistency
(a save against a stale version fails with :class:`VersionConflict`, input that
cannot be stored fails with :class:`InvalidInput`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, select, update

from urbanstack.runtime.store.models import (TITLE, Comment, Dashboard, DashboardEditor, DashboardShare,
                                             DashboardVersion, utcnow)

log = logging.getLogger("urbanstack.store.dashboards")
MAX_LIST = 200  # rows any listing returns at most
# How long an overview (the Gov Hub's start page and dashboard list) is reused. A change made in
# this process clears them at once; one made by another replica shows after at most this long.
OVERVIEW_SECONDS = 5.0
OVERVIEW_ENTRIES = 1_000
MAX_COMMENT = 4000  # characters
MAX_DESCRIPTION = 2000  # characters
MAX_SPEC_BYTES = 1_000_000  # a dashboard's spec as UTF-8 JSON
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Actor:
    """Who does something: the token's subject and a display name."""

    subject: str
    name: str = ""


class InvalidInput(ValueError):
    """Input the store refuses; the message says what is wrong and what is allowed."""


class NotFound(LookupError):
    pass


class VersionConflict(RuntimeError):
    """Someone saved the dashboard since the caller loaded it."""

    def __init__(self, dashboard_id: str, expected: int, current: int, saved_by_subject: str, saved_by_name: str,
                 saved_at: datetime | None):
        self.dashboard_id, self.expected, self.current = dashboard_id, expected, current
        self.saved_by_subject, self.saved_by_name, self.saved_at = saved_by_subject, saved_by_name, saved_at
        when = f" at {saved_at.isoformat(timespec='seconds')}" if saved_at else ""
        super().__init__(f"dashboard {dashboard_id} is at version {current} (saved by "
                         f"{saved_by_name or saved_by_subject}{when}), not {expected}; reload it and save again")


@dataclass(frozen=True)
class DashboardSummary:
    """One row of a listing (no spec)."""

    id: str
    tenant: str
    title: str
    description: str
    owner_subject: str
    owner_name: str
    version: int
    published: bool
    published_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class Overview:
    """What a viewer sees, each list newest first and at most ``limit`` long. A dashboard
    appears once: mine before editable before the rest of my municipality."""

    mine: list[DashboardSummary]
    editable: list[DashboardSummary]
    municipality: list[DashboardSummary]
    shared: list[DashboardSummary]
    published: list[DashboardSummary]


_SUMMARY = (Dashboard.id, Dashboard.tenant, Dashboard.title, Dashboard.description, Dashboard.owner_subject,
            Dashboard.owner_name, Dashboard.version, Dashboard.published, Dashboard.published_at,
            Dashboard.updated_at)


def _limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIST))


def slug(value: str, what: str = "municipality") -> str:
    if not isinstance(value, str) or not _SLUG.match(value):
        raise InvalidInput(f"{what} must be a slug of lowercase letters, digits and hyphens (at most 63), "
                           f"got {value!r}")
    return value


def _title(title: str) -> str:
    title = (title or "").strip() if isinstance(title, str) else ""
    if not title:
        raise InvalidInput("a dashboard needs a title")
    if len(title) > TITLE:
        raise InvalidInput(f"a title may have at most {TITLE} characters, got {len(title)}")
    return title


def _description(text: str) -> str:
    text = (text or "").strip()
    if len(text) > MAX_DESCRIPTION:
        raise InvalidInput(f"a description may have at most {MAX_DESCRIPTION} characters, got {len(text)}")
    return text


def _spec(spec: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise InvalidInput(f"a dashboard spec must be a JSON object, got {type(spec).__name__}")
    try:
        size = len(json.dumps(spec, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a dashboard spec must be plain JSON: {exc}") from None
    if size > MAX_SPEC_BYTES:
        raise InvalidInput(f"a dashboard spec may have at most {MAX_SPEC_BYTES} bytes as JSON, got {size}")
    return spec


def _actor(actor: Actor) -> Actor:
    if not isinstance(actor, Actor) or not actor.subject:
        raise InvalidInput("an actor needs a subject")
    return actor


class Dashboards:
    def __init__(self, store):
        self._store = store
        # Called with the municipality after a committed change of what a dashboard shows, whether it
        # is published or with whom it is shared (the Citizen Hub forgets its cached pages of it).
        self.listeners: list[Callable[[str], None]] = []
        # (tenant, subject, limit) -> (generation, monotonic time, Overview); five queries saved per page
        self._overviews: dict[tuple[str, str, int], tuple[int, float, Overview]] = {}
        # dashboard id -> (generation, monotonic time, Dashboard or None): what pages that only show
        # a dashboard read, reused like the overview (``viewed``)
        self._viewed: dict[str, tuple[int, float, Dashboard | None]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def _touched(self) -> None:
        """Any write: every cached overview and viewed dashboard is stale (shares and publishing reach
        other tenants)."""
        with self._lock:
            self._generation += 1
            self._overviews.clear()
            self._viewed.clear()

    def _changed(self, tenant: str | None) -> None:
        self._touched()
        for listener in list(self.listeners):
            try:
                listener(tenant)
            except Exception:  # noqa: BLE001 - a listener's failure must not undo a committed write
                log.exception("dashboard change listener failed")

    # Reading -------------------------------------------------------------
    def get(self, dashboard_id: str) -> Dashboard | None:
        with self._store.session() as session:
            return session.get(Dashboard, dashboard_id)

    def viewed(self, dashboard_id: str) -> Dashboard | None:
        """The dashboard for a page that only shows it (view, panels, a panel's table or CSV):
        reused for :data:`OVERVIEW_SECONDS` unless something changes in this process, so a busy
        dashboard is not read from the database on every view. Editing, saving and restoring read
        it with :meth:`get` (the version a save is checked against is always the stored one)."""
        with self._lock:
            generation, cached = self._generation, self._viewed.get(dashboard_id)
        if cached is not None and cached[0] == generation and time.monotonic() - cached[1] < OVERVIEW_SECONDS:
            return cached[2]
        began = time.monotonic()
        dashboard = self.get(dashboard_id)
        with self._lock:
            if self._generation == generation:   # no write since the read began: it may be kept
                if len(self._viewed) >= OVERVIEW_ENTRIES:
                    self._viewed.clear()
                self._viewed[dashboard_id] = (generation, began, dashboard)
        return dashboard

    def overview(self, tenant: str, subject: str, limit: int = MAX_LIST) -> Overview:
        """The dashboards ``subject`` of ``tenant`` sees, in five lists; reused for
        :data:`OVERVIEW_SECONDS` unless something changes in this process."""
        limit = _limit(limit)
        key = (tenant, subject, limit)
        with self._lock:
            generation, cached = self._generation, self._overviews.get(key)
        if cached is not None and cached[0] == generation and time.monotonic() - cached[1] < OVERVIEW_SECONDS:
            return cached[2]
        began = time.monotonic()
        overview = self._read_overview(tenant, subject, limit)
        with self._lock:
            if self._generation == generation:   # no write since the read began: it may be kept
                if len(self._overviews) >= OVERVIEW_ENTRIES:
                    self._overviews.clear()
                self._overviews[key] = (generation, began, overview)
        return overview

    def _read_overview(self, tenant: str, subject: str, limit: int) -> Overview:
        editor = exists().where(DashboardEditor.dashboard_id == Dashboard.id, DashboardEditor.subject == subject)
        own = Dashboard.tenant == tenant
        newest = (Dashboard.updated_at.desc(), Dashboard.id)

        def rows(session, *where, order=newest, join=None):
            query = select(*_SUMMARY)
            if join is not None:
                query = query.join(*join)
            return [DashboardSummary(*row) for row in session.execute(query.where(*where).order_by(*order).limit(limit))]

        with self._store.session() as session:
            return Overview(
                mine=rows(session, own, Dashboard.owner_subject == subject),
                editable=rows(session, own, Dashboard.owner_subject != subject, editor),
                municipality=rows(session, own, Dashboard.owner_subject != subject, ~editor),
                shared=rows(session, Dashboard.tenant != tenant, DashboardShare.municipality == tenant,
                            join=(DashboardShare, DashboardShare.dashboard_id == Dashboard.id)),
                published=rows(session, Dashboard.published.is_(True),
                               order=(Dashboard.published_at.desc(), Dashboard.id)),
            )

    def versions(self, dashboard_id: str, limit: int = MAX_LIST) -> list[DashboardVersion]:
        """Saved versions, newest first."""
        with self._store.session() as session:
            return list(session.scalars(select(DashboardVersion).where(DashboardVersion.dashboard_id == dashboard_id)
                                        .order_by(DashboardVersion.version.desc()).limit(_limit(limit))))

    def version(self, dashboard_id: str, version: int) -> DashboardVersion | None:
        with self._store.session() as session:
            return session.get(DashboardVersion, (dashboard_id, version))

    # Writing -------------------------------------------------------------
    def installed(self, tenant: str, note: str) -> Dashboard | None:
        """The municipality's dashboard whose first version carries ``note`` (how a City Tool marks
        the dashboard it installed), or None."""
        with self._store.session() as session:
            return session.scalars(
                select(Dashboard).join(DashboardVersion, DashboardVersion.dashboard_id == Dashboard.id)
                .where(Dashboard.tenant == tenant, DashboardVersion.version == 1, DashboardVersion.note == note[:500])
                .order_by(Dashboard.created_at).limit(1)).first()

    def create(self, tenant: str, owner: Actor, title: str, spec: dict[str, Any], description: str = "",
               note: str = "created") -> Dashboard:
        tenant, owner, title = slug(tenant, "tenant"), _actor(owner), _title(title)
        spec, description, now = _spec(spec), _description(description), utcnow()
        with self._store.session() as session:
            dashboard = Dashboard(tenant=tenant, title=title, description=description, owner_subject=owner.subject,
                                  owner_name=owner.name, spec=spec, version=1, published=False, created_at=now,
                                  updated_at=now)
            session.add(dashboard)
            session.flush()
            session.add(DashboardVersion(dashboard_id=dashboard.id, version=1, title=title, spec=spec,
                                         saved_by_subject=owner.subject, saved_by_name=owner.name, saved_at=now,
                                         note=note[:500]))
        self._touched()
        return dashboard

    def save(self, dashboard_id: str, expected_version: int, title: str, spec: dict[str, Any], by: Actor,
             note: str = "", description: str | None = None) -> Dashboard:
        """Store a new version if the dashboard is still at ``expected_version``, else raise
        :class:`VersionConflict` naming the current version, who saved it and when."""
        title, spec, by, now = _title(title), _spec(spec), _actor(by), utcnow()
        values: dict[str, Any] = {"version": Dashboard.version + 1, "title": title, "spec": spec, "updated_at": now}
        if description is not None:
            values["description"] = _description(description)
        with self._store.session() as session:
            # The compare-and-set is this one statement and comes first in the transaction:
            # PostgreSQL re-checks the WHERE after a concurrent writer commits; SQLite takes
            # its write lock here, before anything was read.
            changed = session.execute(
                update(Dashboard).where(Dashboard.id == dashboard_id, Dashboard.version == expected_version)
                .values(**values).execution_options(synchronize_session=False)).rowcount
            if changed != 1:
                raise self._conflict(session, dashboard_id, expected_version)
            session.add(DashboardVersion(dashboard_id=dashboard_id, version=expected_version + 1, title=title,
                                         spec=spec, saved_by_subject=by.subject, saved_by_name=by.name, saved_at=now,
                                         note=note[:500]))
            session.flush()
            saved = session.get(Dashboard, dashboard_id, populate_existing=True)
        self._changed(saved.tenant)
        return saved

    @staticmethod
    def _conflict(session, dashboard_id: str, expected: int) -> Exception:
        current = session.scalar(select(Dashboard.version).where(Dashboard.id == dashboard_id))
        if current is None:
            return NotFound(f"no dashboard {dashboard_id}")
        last = session.get(DashboardVersion, (dashboard_id, current))
        return VersionConflict(dashboard_id, expected, current, last.saved_by_subject if last else "",
                               last.saved_by_name if last else "", last.saved_at if last else None)

    def restore(self, dashboard_id: str, version: int, expected_version: int, by: Actor) -> Dashboard:
        """A new version with the content of ``version``; nothing is overwritten."""
        old = self.version(dashboard_id, version)
        if old is None:
            raise NotFound(f"dashboard {dashboard_id} has no version {version}")
        return self.save(dashboard_id, expected_version, old.title, old.spec, by,
                         note=f"restored from version {version}")

    def delete(self, dashboard_id: str) -> bool:
        """Delete the dashboard with all its versions, editors, shares and comments."""
        with self._store.session() as session:
            tenant = session.scalar(select(Dashboard.tenant).where(Dashboard.id == dashboard_id))
            for child in (DashboardVersion, DashboardEditor, DashboardShare, Comment):
                session.execute(delete(child).where(child.dashboard_id == dashboard_id))
            deleted = session.execute(delete(Dashboard).where(Dashboard.id == dashboard_id)).rowcount == 1
        if deleted:
            self._changed(tenant)
        return deleted

    def publish(self, dashboard_id: str) -> Dashboard:
        return self._set_published(dashboard_id, True)

    def unpublish(self, dashboard_id: str) -> Dashboard:
        return self._set_published(dashboard_id, False)

    def _set_published(self, dashboard_id: str, published: bool) -> Dashboard:
        with self._store.session() as session:
            dashboard = self._existing(session, dashboard_id)
            if dashboard.published != published:
                dashboard.published, dashboard.published_at = published, utcnow() if published else None
        self._changed(dashboard.tenant)
        return dashboard

    @staticmethod
    def _existing(session, dashboard_id: str) -> Dashboard:
        dashboard = session.get(Dashboard, dashboard_id)
        if dashboard is None:
            raise NotFound(f"no dashboard {dashboard_id}")
        return dashboard

    # Editors and shares --------------------------------------------------
    def editors(self, dashboard_id: str) -> list[DashboardEditor]:
        with self._store.session() as session:
            return list(session.scalars(select(DashboardEditor).where(DashboardEditor.dashboard_id == dashboard_id)
                                        .order_by(DashboardEditor.name, DashboardEditor.subject).limit(MAX_LIST)))

    def is_editor(self, dashboard_id: str, subject: str) -> bool:
        with self._store.session() as session:
            return session.get(DashboardEditor, (dashboard_id, subject)) is not None

    def add_editor(self, dashboard_id: str, subject: str, name: str = "", email: str = "") -> DashboardEditor:
        if not subject:
            raise InvalidInput("an editor needs a subject")
        with self._store.session() as session:
            self._existing(session, dashboard_id)
            editor = session.merge(DashboardEditor(dashboard_id=dashboard_id, subject=subject, name=name, email=email))
        self._touched()
        return editor

    def remove_editor(self, dashboard_id: str, subject: str) -> bool:
        with self._store.session() as session:
            removed = session.execute(delete(DashboardEditor).where(
                DashboardEditor.dashboard_id == dashboard_id, DashboardEditor.subject == subject)).rowcount == 1
        self._touched()
        return removed

    def shares(self, dashboard_id: str) -> list[str]:
        with self._store.session() as session:
            return list(session.scalars(select(DashboardShare.municipality)
                                        .where(DashboardShare.dashboard_id == dashboard_id)
                                        .order_by(DashboardShare.municipality)))

    def share_with(self, dashboard_id: str, municipalities: Iterable[str]) -> list[str]:
        """Give other municipalities read access; returns every municipality it is shared with."""
        wanted = {slug(m) for m in municipalities}
        with self._store.session() as session:
            dashboard = self._existing(session, dashboard_id)
            if dashboard.tenant in wanted:
                raise InvalidInput(f"dashboard {dashboard_id} belongs to {dashboard.tenant}; share it with other "
                                   f"municipalities only")
            have = set(session.scalars(select(DashboardShare.municipality)
                                       .where(DashboardShare.dashboard_id == dashboard_id)))
            session.add_all(DashboardShare(dashboard_id=dashboard_id, municipality=m) for m in sorted(wanted - have))
            tenant = dashboard.tenant
        self._changed(tenant)
        return sorted(have | wanted)

    def unshare(self, dashboard_id: str, municipality: str) -> bool:
        with self._store.session() as session:
            tenant = session.scalar(select(Dashboard.tenant).where(Dashboard.id == dashboard_id))
            removed = session.execute(delete(DashboardShare).where(
                DashboardShare.dashboard_id == dashboard_id, DashboardShare.municipality == municipality)).rowcount == 1
        if removed:
            self._changed(tenant)
        return removed

    # Comments ------------------------------------------------------------
    def add_comment(self, dashboard_id: str, tenant: str, author: Actor, body: str) -> Comment:
        """``tenant``: the author's municipality (a shared dashboard gets comments from others)."""
        tenant, author = slug(tenant, "tenant"), _actor(author)
        body = (body or "").strip()
        if not body:
            raise InvalidInput("a comment cannot be empty")
        if len(body) > MAX_COMMENT:
            raise InvalidInput(f"a comment may have at most {MAX_COMMENT} characters, got {len(body)}")
        with self._store.session() as session:
            self._existing(session, dashboard_id)
            comment = Comment(dashboard_id=dashboard_id, tenant=tenant, author_subject=author.subject,
                              author_name=author.name, body=body, created_at=utcnow())
            session.add(comment)
            return comment

    def comments(self, dashboard_id: str, limit: int = MAX_LIST) -> list[Comment]:
        """The newest ``limit`` comments, oldest first."""
        with self._store.session() as session:
            newest = session.scalars(select(Comment).where(Comment.dashboard_id == dashboard_id)
                                     .order_by(Comment.created_at.desc(), Comment.id.desc()).limit(_limit(limit)))
            return list(reversed(list(newest)))

    def delete_comment(self, comment_id: int) -> bool:
        with self._store.session() as session:
            return session.execute(delete(Comment).where(Comment.id == comment_id)).rowcount == 1
