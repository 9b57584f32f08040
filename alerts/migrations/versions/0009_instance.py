"""instance: one random id per database, so that two deployments never share a message's identity

The outbox's idempotency key (sha256 of alert id, receiver, channel, kind, seq) repeats across
databases: alert 1 of staging and alert 1 of production have the same keys. Where those keys leave the
database — a Slack message's metadata, which a retry looks for before posting again, and email
Message-IDs — two deployments posting to one channel or mailbox mistook each other's messages for their
own (a retry "found" the other deployment's post and never posted; its resolution then edited it).
Every replica of one deployment shares its database, and so this id.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 15:00:00
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "instance",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": uuid.uuid4().hex}])


def downgrade() -> None:
    op.drop_table("instance")
