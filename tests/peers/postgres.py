"""The PostgreSQL server on 127.0.0.1:5432 (trust auth, database ``test``); one schema per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

BASE = os.environ.get("ALERTS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def available() -> bool:
    import sqlalchemy as sa

    try:
        eng = sa.create_engine(BASE, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.exec_driver_sql("select 1")
        eng.dispose()
        return True
    except Exception:
        return False


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A new schema; yields a database URL whose search_path points at it. Dropped afterwards."""
    import sqlalchemy as sa

    from tests.conftest import IN_CI

    if not available():
        if IN_CI:
            pytest.fail(f"PostgreSQL is not reachable at {BASE}")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(BASE)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"create schema {name}")
    try:
        yield f"{BASE}?options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"drop schema {name} cascade")
        admin.dispose()
