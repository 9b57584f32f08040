"""slack_pace: one token bucket per Slack channel, shared by every replica (R2.6)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 13:00:00
"""

import sqlalchemy as sa
from alembic import op

import alerts.storage

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slack_pace",
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", alerts.storage.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel"),
    )


def downgrade() -> None:
    op.drop_table("slack_pace")
