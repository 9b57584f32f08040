"""alert.correlation_key, alert.correlation_lead_id: one message for many integrations failing together

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 13:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alert") as batch_op:
        batch_op.add_column(sa.Column("correlation_key", sa.String(length=400), nullable=True))
        batch_op.add_column(sa.Column("correlation_lead_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_alert_correlation_key", ["correlation_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alert") as batch_op:
        batch_op.drop_index("ix_alert_correlation_key")
        batch_op.drop_column("correlation_lead_id")
        batch_op.drop_column("correlation_key")
