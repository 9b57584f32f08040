"""token: what is known about each integration's refresh token (issue, use, expiry, warnings sent)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 13:05:00
"""

import sqlalchemy as sa
from alembic import op

import alerts.storage

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.String(length=200), nullable=False),
        sa.Column("integration_name", sa.String(length=200), nullable=True),
        sa.Column("provider", sa.String(length=100), nullable=True),
        sa.Column("issued_at", alerts.storage.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", alerts.storage.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", alerts.storage.UTCDateTime(timezone=True), nullable=True),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("reauthorize_url", sa.String(), nullable=True),
        sa.Column("warned", sa.JSON(), nullable=False),
        sa.Column("updated_at", alerts.storage.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("integration_id", name="uq_token_integration"),
    )


def downgrade() -> None:
    op.drop_table("token")
