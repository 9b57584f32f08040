"""digest_run.status: baseline, sent, empty, manual

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 12:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("digest_run") as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=False, server_default="sent"))


def downgrade() -> None:
    with op.batch_alter_table("digest_run") as batch_op:
        batch_op.drop_column("status")
