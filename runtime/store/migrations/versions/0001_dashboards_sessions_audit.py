"""Dashboards with versions, editors, shares and comments; web sessions; audit trail.

Revision ID: 0001
Revises:
Create Date: 2025-12-05

Self-contained on purpose (no import of the models): a migration must keep meaning
what it meant when it was written. Later ALTERs use ``op.batch_alter_table`` so they
also run on SQLite.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _text(name: str, length: int | None = None, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length) if length else sa.Text(), nullable=nullable)


def _dashboard_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["dashboard_id"], ["dashboards.id"], ondelete="CASCADE",
                                   name=f"fk_{table}_dashboard_id_dashboards")


def upgrade() -> None:
    op.create_table(
        "dashboards",
        _text("id", 32), _text("tenant", 63), _text("title", 200), _text("description"),
        _text("owner_subject", 255), _text("owner_name", 255),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        _when("published_at", nullable=True), _when("created_at"), _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_dashboards"),
    )
    op.create_index("ix_dashboards_tenant", "dashboards", ["tenant"])
    op.create_index("ix_dashboards_owner_subject", "dashboards", ["owner_subject"])
    op.create_index("ix_dashboards_published", "dashboards", ["published"])

    op.create_table(
        "dashboard_versions",
        _text("dashboard_id", 32), sa.Column("version", sa.Integer(), nullable=False), _text("title", 200),
        sa.Column("spec", JSON, nullable=False),
        _text("saved_by_subject", 255), _text("saved_by_name", 255), _when("saved_at"), _text("note", 500),
        _dashboard_fk("dashboard_versions"),
        sa.PrimaryKeyConstraint("dashboard_id", "version", name="pk_dashboard_versions"),
    )

    op.create_table(
        "dashboard_editors",
        _text("dashboard_id", 32), _text("subject", 255), _text("name", 255), _text("email", 320),
        _dashboard_fk("dashboard_editors"),
        sa.PrimaryKeyConstraint("dashboard_id", "subject", name="pk_dashboard_editors"),
    )
    op.create_index("ix_dashboard_editors_subject", "dashboard_editors", ["subject"])

    op.create_table(
        "dashboard_shares",
        _text("dashboard_id", 32), _text("municipality", 63),
        _dashboard_fk("dashboard_shares"),
        sa.PrimaryKeyConstraint("dashboard_id", "municipality", name="pk_dashboard_shares"),
    )
    op.create_index("ix_dashboard_shares_municipality", "dashboard_shares", ["municipality"])

    op.create_table(
        "comments",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        _text("dashboard_id", 32), _text("tenant", 63), _text("author_subject", 255), _text("author_name", 255),
        _text("body"), _when("created_at"),
        _dashboard_fk("comments"),
        sa.PrimaryKeyConstraint("id", name="pk_comments"),
    )
    op.create_index("ix_comments_dashboard_created", "comments", ["dashboard_id", "created_at"])

    op.create_table(
        "web_sessions",
        _text("id", 64), _text("tenant", 63), _text("subject", 255, nullable=True), _text("username", 255),
        _text("display_name", 255), _text("email", 320),
        sa.Column("roles", JSON, nullable=False),
        _text("id_token", nullable=True), _text("refresh_token", nullable=True), _text("csrf_token", 64),
        _text("language", 8, nullable=True),
        sa.Column("pending_login", JSON, nullable=True),
        _when("access_expires_at", nullable=True), _when("created_at"), _when("last_seen_at"), _when("expires_at"),
        sa.PrimaryKeyConstraint("id", name="pk_web_sessions"),
    )
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])

    op.create_table(
        "audit_entries",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        _text("tenant", 63), _text("actor_subject", 255), _text("actor_name", 255), _text("action", 100),
        _text("target", 500), sa.Column("detail", JSON, nullable=False), _when("at"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_entries"),
    )
    op.create_index("ix_audit_entries_tenant_id", "audit_entries", ["tenant", "id"])


def downgrade() -> None:
    for table in ("audit_entries", "web_sessions", "comments", "dashboard_shares", "dashboard_editors",
                  "dashboard_versions", "dashboards"):
        op.drop_table(table)  # their indexes go with them
