"""event: indexes for what is read, so that most events are an append

Every event is a row, so every index on ``event`` is paid on every event (issue 11), and an index by
alert or integration takes a random page per event into every commit. The unique constraint on
``event_id`` indexed the NULL of every event without an id; a partial index holds only the ids.
Nothing reads events by ``integration_id`` (alerts are found by fingerprint): that index goes. Events
are read by alert only to learn whether Fivetran reported it: an index of Fivetran's events replaces
the one of all.

On SQLite dropping the constraint rebuilds the table (a copy of every row, once).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

HAS_ID = sa.text("event_id IS NOT NULL")
FIVETRAN = sa.text("source = 'fivetran'")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:  # the constraint has no name in SQLite: the naming convention gives the reflected one ours
        with op.batch_alter_table("event", recreate="always",
                                  naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"}) as batch_op:
            batch_op.drop_constraint("uq_event_event_id", type_="unique")
            batch_op.drop_index("ix_event_integration_id")
            batch_op.drop_index("ix_event_alert_id")
    else:
        op.drop_constraint("event_event_id_key", "event", type_="unique")
        op.drop_index("ix_event_integration_id", table_name="event")
        op.drop_index("ix_event_alert_id", table_name="event")
    op.create_index("uq_event_event_id", "event", ["event_id"], unique=True, sqlite_where=HAS_ID,
                    postgresql_where=HAS_ID)
    op.create_index("ix_event_fivetran_alert", "event", ["alert_id"], sqlite_where=FIVETRAN,
                    postgresql_where=FIVETRAN)


def downgrade() -> None:
    op.drop_index("ix_event_fivetran_alert", table_name="event")
    op.drop_index("uq_event_event_id", table_name="event")
    op.create_index("ix_event_alert_id", "event", ["alert_id"], unique=False)
    op.create_index("ix_event_integration_id", "event", ["integration_id"], unique=False)
    with op.batch_alter_table("event") as batch_op:
        batch_op.create_unique_constraint("uq_event_event_id", ["event_id"])
