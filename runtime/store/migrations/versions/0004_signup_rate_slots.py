"""Signup rate limits as slots: two simultaneous attempts can no longer both take the last one.

Revision ID: 0004_signup_rate_slots
Revises: 0003_citizen_feedback
Create Date: 2026-12-06

The counted attempts of ``signup_rate_events`` are only about the last day; they are dropped
rather than converted (the limits start afresh once). Self-contained (no import of the models).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_signup_rate_slots"
down_revision = "0003_citizen_feedback"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "signup_rate_slots",
        sa.Column("scope", sa.String(16), nullable=False), sa.Column("key", sa.String(255), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False), sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", "slot", name="pk_signup_rate_slots"),
    )
    op.drop_index("ix_signup_rate_events_scope_key_at", table_name="signup_rate_events")
    op.drop_table("signup_rate_events")


def downgrade() -> None:
    op.create_table(
        "signup_rate_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False), sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key", sa.String(255), nullable=False), sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_signup_rate_events"),
    )
    op.create_index("ix_signup_rate_events_scope_key_at", "signup_rate_events", ["scope", "key", "at"])
    op.drop_table("signup_rate_slots")
