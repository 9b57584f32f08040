"""Bulk statements on the ingest hot path, without SQLAlchemy's per-row work.

SQLAlchemy builds, caches and type-processes every parameter of every row in Python; on a batch of
events that was most of the time ingest spent (issue 11). Here a statement is compiled once per
dialect and run with the DB-API cursor of the session's own connection (same transaction), with the
few conversions our columns need done directly: UTC datetimes (naive text on SQLite, as SQLAlchemy
stores them), booleans, and JSON. Rows read back are converted the same way, so what this module
writes and reads is exactly what the ORM writes and reads.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

_compiled: dict[tuple[int, str, tuple[str, ...]], tuple[str, list[tuple[str, Any]]]] = {}


class Raw:
    """The session's DB-API connection, for :meth:`executemany` and :meth:`select`."""

    def __init__(self, session: Session) -> None:
        conn = session.connection()  # joins (or begins) the session's transaction
        self.dialect = conn.dialect
        self.sqlite = conn.dialect.name == "sqlite"
        self.dbapi = conn.connection.driver_connection
        self.mark = "?" if self.sqlite else "%s"

    def executemany(self, stmt: sa.sql.Executable, rows: list[dict[str, Any]]) -> None:
        """Run ``stmt`` (an INSERT or UPDATE of one table, without RETURNING) once per row."""
        if not rows:
            return
        keys = tuple(rows[0])
        cache_key = (id(stmt), self.dialect.name, keys)
        found = _compiled.get(cache_key)
        if found is None:
            compiled = stmt.compile(dialect=self.dialect, column_keys=list(keys))
            names = list(compiled.positiontup) if compiled.positional else list(keys)  # type: ignore[arg-type]
            columns = stmt.table.c  # type: ignore[attr-defined]
            found = _compiled[cache_key] = (compiled.string, [(n, self._converter(columns.get(n))) for n in names])
        sql, spec = found
        if self.dialect.positional:
            params: list[Any] = [tuple(row[k] if c is None else c(row[k]) for k, c in spec) for row in rows]
        else:
            params = [{k: row[k] if c is None else c(row[k]) for k, c in spec} for row in rows]
        self._run("executemany", sql, params)

    def select(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Rows of a SELECT written with ``{mark}`` placeholders (``?`` or ``%s``)."""
        return self._run("execute", sql.replace("{mark}", self.mark), [self.value(p) for p in params])

    def _run(self, method: str, sql: str, params: Any) -> list[tuple[Any, ...]]:
        """Run on a fresh cursor; driver errors become SQLAlchemy's (an ``IntegrityError`` is retried)."""
        cur = self.dbapi.cursor()
        try:
            getattr(cur, method)(sql, params)
            return list(cur.fetchall()) if method == "execute" else []
        except self.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, None, exc, self.dialect.loaded_dbapi.Error,
                                             dialect=self.dialect) from exc
        finally:
            cur.close()

    def _converter(self, column: Any) -> Any:
        """The conversion a column's values need (``None``: none), by the column's type."""
        from alerts.storage import UTCDateTime

        if column is None:
            return self.value
        if isinstance(column.type, UTCDateTime):
            return self.value if self.sqlite else None
        if isinstance(column.type, sa.JSON):
            return self.value
        return None

    def marks(self, n: int) -> str:
        return ", ".join([self.mark] * n)

    def value(self, v: Any) -> Any:
        """A Python value as the driver should get it for our columns."""
        if isinstance(v, datetime):
            return _sqlite_text(v) if self.sqlite else (v if v.tzinfo else v.replace(tzinfo=UTC))
        if isinstance(v, bool):
            return int(v) if self.sqlite else v
        if isinstance(v, dict | list):
            return json.dumps(v)
        return v

    def datetime_of(self, v: Any) -> datetime | None:
        """A datetime column as read back: aware UTC."""
        if v is None:
            return None
        if isinstance(v, str):
            return _sqlite_datetime(v)
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    def json_of(self, v: Any) -> Any:
        return json.loads(v) if isinstance(v, str | bytes) else v


# A batch repeats the same few instants (its ``now``, the occurrence times); both conversions are memoised.
@functools.lru_cache(maxsize=4096)
def _sqlite_text(v: datetime) -> str:
    """SQLAlchemy's SQLite storage format: naive UTC, always with microseconds."""
    if v.tzinfo is not None:
        v = v.astimezone(UTC).replace(tzinfo=None)
    return v.isoformat(sep=" ", timespec="microseconds")


@functools.lru_cache(maxsize=4096)
def _sqlite_datetime(v: str) -> datetime:
    return datetime.fromisoformat(v).replace(tzinfo=UTC)
