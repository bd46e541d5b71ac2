"""The tables of the metadata store: what the hubs own (dashboards, their versions,
editors, shares and comments; web sessions; the audit trail).

Timestamps are timezone-aware UTC on both backends (:class:`UTCDateTime`); JSON is
``JSONB`` on PostgreSQL and text on SQLite. Ids of dashboards are random url-safe
tokens, so a dashboard's address cannot be guessed.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, MetaData, String, Text,
                        TypeDecorator)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names are fixed, so migrations can address them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SUBJECT = 255
NAME = 255
SLUG = 63
TITLE = 200


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_dashboard_id() -> str:
    """22 url-safe characters from 16 random bytes."""
    return secrets.token_urlsafe(16)


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out; SQLite keeps naive UTC text."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (use datetime.now(timezone.utc))")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


JSONDocument = JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONDocument, list[str]: JSONDocument}


class Dashboard(Base):
    __tablename__ = "dashboards"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_dashboard_id)
    tenant: Mapped[str] = mapped_column(String(SLUG), index=True)
    title: Mapped[str] = mapped_column(String(TITLE))
    description: Mapped[str] = mapped_column(Text, default="")
    owner_subject: Mapped[str] = mapped_column(String(SUBJECT), index=True)
    owner_name: Mapped[str] = mapped_column(String(NAME), default="")
    spec: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer, default=1)
    published: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    published_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DashboardVersion(Base):
    """Every saved state of a dashboard, the current one included; nothing is ever overwritten."""

    __tablename__ = "dashboard_versions"

    dashboard_id: Mapped[str] = mapped_column(ForeignKey("dashboards.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE))
    spec: Mapped[dict[str, Any]]
    saved_by_subject: Mapped[str] = mapped_column(String(SUBJECT))
    saved_by_name: Mapped[str] = mapped_column(String(NAME), default="")
    saved_at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str] = mapped_column(String(500), default="")


class DashboardEditor(Base):
    __tablename__ = "dashboard_editors"

    dashboard_id: Mapped[str] = mapped_column(ForeignKey("dashboards.id", ondelete="CASCADE"), primary_key=True)
    subject: Mapped[str] = mapped_column(String(SUBJECT), primary_key=True, index=True)
    name: Mapped[str] = mapped_column(String(NAME), default="")
    email: Mapped[str] = mapped_column(String(320), default="")


class DashboardShare(Base):
    """Read-only access for another municipality."""

    __tablename__ = "dashboard_shares"

    dashboard_id: Mapped[str] = mapped_column(ForeignKey("dashboards.id", ondelete="CASCADE"), primary_key=True)
    municipality: Mapped[str] = mapped_column(String(SLUG), primary_key=True, index=True)


class Comment(Base):
    __tablename__ = "comments"
    __table_args__ = (Index("ix_comments_dashboard_created", "dashboard_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dashboard_id: Mapped[str] = mapped_column(ForeignKey("dashboards.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(SLUG))
    author_subject: Mapped[str] = mapped_column(String(SUBJECT))
    author_name: Mapped[str] = mapped_column(String(NAME), default="")
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebSession(Base):
    """A browser session of the hub. ``id`` is the SHA-256 (hex) of the cookie's token;
    the token itself is never stored."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(SLUG))
    subject: Mapped[str | None] = mapped_column(String(SUBJECT))
    username: Mapped[str] = mapped_column(String(NAME), default="")
    display_name: Mapped[str] = mapped_column(String(NAME), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    roles: Mapped[list[str]] = mapped_column(default=list)
    id_token: Mapped[str | None] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text)  # keeps the roles current; never leaves the server
    language: Mapped[str | None] = mapped_column(String(8))  # the language the user chose (de/en)
    csrf_token: Mapped[str] = mapped_column(String(64))
    pending_login: Mapped[dict[str, Any] | None]
    access_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_tenant_id", "tenant", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(SLUG))
    actor_subject: Mapped[str] = mapped_column(String(SUBJECT), default="")
    actor_name: Mapped[str] = mapped_column(String(NAME), default="")
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(500), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class AccessibilityFeedback(Base):
    """A message sent through a municipality's accessibility statement (Citizen Hub): a barrier
    someone met, shown to that municipality's administrators in the Gov Hub. Name and email are
    optional (an answer needs an address); nothing else about the sender is kept."""

    __tablename__ = "accessibility_feedback"
    __table_args__ = (Index("ix_accessibility_feedback_tenant_id", "tenant", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(SLUG))
    page: Mapped[str] = mapped_column(String(500), default="")
    name: Mapped[str] = mapped_column(String(NAME), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Self-service signup ---------------------------------------------------------

class SignupRequest(Base):
    """A municipality's request to join the platform. The applicant reaches it only through the
    status link (``status_token_hash``: SHA-256 hex of the link's token) and confirms the address
    with a single-use link (``confirm_token_hash``); neither token is stored. ``open_ags`` is the
    AGS while the request is open or done (received … ready) and NULL once rejected or abandoned:
    its unique constraint keeps two requests for one municipality from ever both going ahead.
    Personal data (contact, address, Leitweg-ID) is emptied by the purge (``purged_at``)."""

    __tablename__ = "signup_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_dashboard_id)
    status_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    confirm_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    confirm_expires_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(20), index=True)
    ags: Mapped[str] = mapped_column(String(8), index=True)
    open_ags: Mapped[str | None] = mapped_column(String(8), unique=True)
    municipality_name: Mapped[str] = mapped_column(String(NAME))
    kreis: Mapped[str] = mapped_column(String(NAME), default="")
    land: Mapped[str] = mapped_column(String(NAME), default="")
    slug: Mapped[str] = mapped_column(String(SLUG))
    contact_name: Mapped[str | None] = mapped_column(String(NAME))
    email: Mapped[str | None] = mapped_column(String(320))
    email_domain: Mapped[str] = mapped_column(String(255), index=True)
    plan: Mapped[str] = mapped_column(String(40))
    tools: Mapped[list[str]] = mapped_column(default=list)
    leitweg_id: Mapped[str | None] = mapped_column(String(50))
    terms_version: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(8), default="de")
    checks: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reject_reason: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(NAME))
    decided_at: Mapped[datetime | None]
    ready_at: Mapped[datetime | None]
    invited_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    purged_at: Mapped[datetime | None]


class SignupRateSlot(Base):
    """One of the ``count`` slots of a signup rate limit (per client address, e-mail domain, AGS),
    holding the time of the attempt that took it. An attempt takes a slot that is missing or whose
    time is older than the window, by an INSERT that does nothing on conflict or a conditional
    UPDATE: the primary key makes two simultaneous attempts unable to take the same slot. In the
    store, so every replica counts the same."""

    __tablename__ = "signup_rate_slots"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class SignupProofUse(Base):
    """A proof-of-work solution that was spent (SHA-256 hex of the challenge's signature): each
    solves one form submission only."""

    __tablename__ = "signup_proof_uses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
