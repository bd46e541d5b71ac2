"""Self-service signup: requests, rate-limit events, spent proofs of work.

Revision ID: 0002_signup
Revises: 0001
Create Date: 2026-12-05

Self-contained on purpose (no import of the models), like 0001.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_signup"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _text(name: str, length: int | None = None, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length) if length else sa.Text(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "signup_requests",
        _text("id", 32), _text("status_token_hash", 64), _text("confirm_token_hash", 64, nullable=True),
        _when("confirm_expires_at", nullable=True), _when("confirmed_at", nullable=True),
        _text("state", 20), _text("ags", 8), _text("open_ags", 8, nullable=True),
        _text("municipality_name", 255), _text("kreis", 255), _text("land", 255), _text("slug", 63),
        _text("contact_name", 255, nullable=True), _text("email", 320, nullable=True), _text("email_domain", 255),
        _text("plan", 40), sa.Column("tools", JSON, nullable=False), _text("leitweg_id", 50, nullable=True),
        _text("terms_version", 20), _text("language", 8), sa.Column("checks", JSON, nullable=False),
        _text("reject_reason", nullable=True), _text("decided_by", 255, nullable=True),
        _when("decided_at", nullable=True), _when("ready_at", nullable=True), _when("invited_at", nullable=True),
        _when("created_at"), _when("updated_at"), _when("purged_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_signup_requests"),
        sa.UniqueConstraint("status_token_hash", name="uq_signup_requests_status_token_hash"),
        sa.UniqueConstraint("confirm_token_hash", name="uq_signup_requests_confirm_token_hash"),
        sa.UniqueConstraint("open_ags", name="uq_signup_requests_open_ags"),
    )
    op.create_index("ix_signup_requests_state", "signup_requests", ["state"])
    op.create_index("ix_signup_requests_ags", "signup_requests", ["ags"])
    op.create_index("ix_signup_requests_email_domain", "signup_requests", ["email_domain"])

    op.create_table(
        "signup_rate_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False), _text("scope", 16), _text("key", 255),
        _when("at"),
        sa.PrimaryKeyConstraint("id", name="pk_signup_rate_events"),
    )
    op.create_index("ix_signup_rate_events_scope_key_at", "signup_rate_events", ["scope", "key", "at"])

    op.create_table(
        "signup_proof_uses",
        _text("id", 64), _when("used_at"),
        sa.PrimaryKeyConstraint("id", name="pk_signup_proof_uses"),
    )
    op.create_index("ix_signup_proof_uses_used_at", "signup_proof_uses", ["used_at"])


def downgrade() -> None:
    for table in ("signup_proof_uses", "signup_rate_events", "signup_requests"):
        op.drop_table(table)
