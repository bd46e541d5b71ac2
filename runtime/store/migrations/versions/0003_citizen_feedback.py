"""Accessibility feedback from the Citizen Hub.

Revision ID: 0003_citizen_feedback
Revises: 0002_signup
Create Date: 2026-12-05

Self-contained (no import of the models), like 0001.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_citizen_feedback"
down_revision = "0002_signup"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accessibility_feedback",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("page", sa.String(500), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accessibility_feedback"),
    )
    op.create_index("ix_accessibility_feedback_tenant_id", "accessibility_feedback", ["tenant", "id"])


def downgrade() -> None:
    op.drop_table("accessibility_feedback")
