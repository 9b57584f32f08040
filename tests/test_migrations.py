"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL, and keep rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from alerts import storage


def upgrade_to(engine: sa.Engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(storage.__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def test_migrated_schema_is_the_models_schema(db_url) -> None:
    engine = storage.make_engine(db_url)
    storage.upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
    assert storage.current_revision(engine) == storage.head_revision()
    engine.dispose()


def test_event_index_migration_keeps_events_and_still_refuses_a_replayed_id(db_url) -> None:
    engine = storage.make_engine(db_url)
    upgrade_to(engine, "0005")
    insert = ("INSERT INTO event (event_id, source, integration_id, status, received_at) "
              "VALUES ({}, 'native', 'sf', 'failed', '2026-11-28 09:00:00')")
    with engine.begin() as conn:
        for eid in ("'run-1'", "NULL", "NULL"):
            conn.exec_driver_sql(insert.format(eid))
    storage.upgrade(engine)
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM event").scalar_one() == 3
        conn.exec_driver_sql(insert.format("NULL"))  # events without an id are never each other's replays
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql(insert.format("'run-1'"))
    engine.dispose()
