"""log_offset: 64-bit device/inode/offset; context and head fingerprint for exact restarts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("log_offset") as batch_op:
        for name in ("device", "inode", "offset"):
            batch_op.alter_column(name, existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)
        batch_op.add_column(sa.Column("context", sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column("fingerprint", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("fingerprint_len", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("log_offset") as batch_op:
        batch_op.drop_column("fingerprint_len")
        batch_op.drop_column("fingerprint")
        batch_op.drop_column("context")
        for name in ("device", "inode", "offset"):
            batch_op.alter_column(name, existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
