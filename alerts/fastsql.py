"""Bulk statements on the ingest hot path, without SQLAlchemy's per-row work.

SQLAlchemy builds, caches and type-processes every parameter of every row in Python; on a batch of
events that was most of the time ingest spent (issue 11). Here statements are written out and run
on a DB-API connection — a pooled one in a transaction of its own (:func:`transaction`, the hot
path), or an ORM session's (:meth:`Raw.of`, same transaction) — one statement for many rows
(``executemany`` steps the database once per row), with the few conversions our columns need done
directly: UTC datetimes (naive text on SQLite, as SQLAlchemy stores them) and JSON. Rows read back
are converted the same way, so what this module writes and reads is what the ORM writes and reads.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

_converters: dict[tuple[int, str, tuple[str, ...]], list[Any]] = {}
_json_sources: dict[tuple[Any, ...], str] = {}


@contextmanager
def transaction(engine: sa.Engine, phases: dict[str, float] | None = None) -> Iterator[Raw]:
    """One write transaction on a pooled DB-API connection, without an ORM session (whose set-up and
    commit cost ~0.25 ms of Python per transaction, most of it while SQLite's write lock is held).
    SQLite: the process's writers' lock and ``BEGIN IMMEDIATE``, as :func:`alerts.storage.session_scope`.

    ``phases``, when given, receives the seconds spent waiting for the write lock (``wait``: SQLite
    only, zero elsewhere), running the statements (``work``) and committing (``commit``: the fsync)."""
    lock = getattr(engine, "info", {}).get("write_lock")
    start = time.perf_counter()
    with lock if lock is not None else nullcontext():
        locked = time.perf_counter()
        pooled = engine.raw_connection()
        dbapi = pooled.driver_connection
        try:
            raw = Raw(dbapi, engine.dialect)
            if raw.sqlite:
                raw.driver("BEGIN IMMEDIATE", dbapi.execute)  # waits busy_timeout for another process's lock
            yield raw
            worked = time.perf_counter()
            raw.driver("COMMIT", lambda _: dbapi.commit())
            if phases is not None:
                phases.update(wait=locked - start, work=worked - locked, commit=time.perf_counter() - worked)
        except BaseException:
            try:
                dbapi.rollback()
            except Exception:  # noqa: BLE001 - a broken connection: the pool must not hand it out again
                pooled.invalidate()
            raise
        finally:
            pooled.close()


class Raw:
    """A DB-API connection in a transaction: :meth:`insert`, :meth:`update`, :meth:`update_from`,
    :meth:`executemany`, :meth:`select`. :meth:`of` gives an ORM session's (same transaction)."""

    def __init__(self, dbapi: Any, dialect: Any) -> None:
        self.dbapi = dbapi
        self.dialect = dialect
        self.sqlite = dialect.name == "sqlite"
        self.mark = "?" if self.sqlite else "%s"

    def driver(self, sql: str, call: Any) -> Any:
        """``call(sql)``, a driver error raised as SQLAlchemy's (as :meth:`_run` does): callers tell a lock
        or a lost connection (``OperationalError``) from a bug by one set of types."""
        try:
            return call(sql)
        except self.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, None, exc, self.dialect.loaded_dbapi.Error,
                                             dialect=self.dialect) from exc

    @classmethod
    def of(cls, session: Session) -> Raw:
        conn = session.connection()  # joins (or begins) the session's transaction
        return cls(conn.connection.driver_connection, conn.dialect)

    def insert(self, table: sa.Table, columns: list[str], rows: list[tuple[Any, ...]], *, conflict: str = "",
               returning: str = "") -> list[tuple[Any, ...]]:
        """``INSERT INTO table (columns) <rows> [conflict] [RETURNING returning]``, one statement for many rows.

        ``rows`` hold Python values in ``columns`` order; ``conflict`` is an ``ON CONFLICT …`` clause.
        """
        out: list[tuple[Any, ...]] = []
        head = f"INSERT INTO {table.name} ({', '.join(columns)}) "
        tail = (f" {conflict}" if conflict else "") + (f" RETURNING {returning}" if returning else "")
        for source, params in self._sources(table, columns, rows):
            out += self._run(head + source + tail, params, fetch=bool(returning))
        return out

    def update(self, table: sa.Table, columns: list[str], rows: list[tuple[Any, ...]], *, key: str = "id") -> None:
        """Set ``columns`` of many rows, each found by ``key`` (the last value of each row)."""
        convert = [*self._converters(table, tuple(columns)), None]
        if rows:
            sets = ", ".join(f"{c} = {self.mark}" for c in columns)
            self._run(f"UPDATE {table.name} SET {sets} WHERE {key} = {self.mark}",
                      [tuple([v if c is None else c(v) for v, c in zip(row, convert, strict=True)]) for row in rows],
                      many=True)

    def update_from(self, table: sa.Table, names: list[str], rows: list[tuple[Any, ...]], *, set_: str, where: str,
                    returning: str = "", params: list[Any] | None = None,
                    types: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """``WITH v (names) AS (<rows>) UPDATE table SET set_ FROM v WHERE where [RETURNING returning]``.

        ``v`` has one row per tuple of ``rows``; a name is a column of ``table`` (its values are converted
        and typed as that column's) unless ``types`` gives its type. ``{mark}`` in ``where`` takes
        ``params``, after the rows' values. Rows found through an index and changed by expressions of
        their own values: one statement where :meth:`update` needs a read first.
        """
        tail = (f") UPDATE {table.name} SET {set_} FROM v WHERE {where.replace('{mark}', self.mark)}"
                + (f" RETURNING {returning}" if returning else ""))
        extra = [self.value(v) for v in params or []]
        out: list[tuple[Any, ...]] = []
        for source, values in self._sources(table, names, rows, types or {}):
            out += self._run(f"WITH v ({', '.join(names)}) AS (" + source + tail, values + extra, fetch=bool(returning))
        return out

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run ``sql`` (``{mark}`` placeholders) once per row of values (converted as :meth:`value` does)."""
        if rows:
            self._run(sql.replace("{mark}", self.mark), [tuple([self.value(v) for v in row]) for row in rows],
                      many=True)

    def _sources(self, table: sa.Table, columns: list[str], rows: list[tuple[Any, ...]],
                 types: dict[str, Any] | None = None) -> Iterator[tuple[str, list[Any]]]:
        """``rows`` as a row source (SQL text and its parameters), in as few pieces as the database takes.

        SQLite: ``VALUES (?, …), (?, …)``, a few hundred rows a piece (its limit is 32,766 parameters).
        PostgreSQL: the rows as one JSON parameter, ``SELECT (r->>0)::type, … FROM jsonb_array_elements(%s)``:
        a short statement that psycopg parses once and the server prepares once, and one string to send.
        A VALUES list of thousands of placeholders was parsed anew, in Python, each time (~4 ms per 100
        rows), and array parameters are built element by element in Python too.
        """
        if not rows:
            return
        types = types or {}
        convert = self._converters(table, tuple(columns), types)
        if not self.sqlite:
            data = [[_json_value(v if c is None else c(v)) for v, c in zip(row, convert, strict=True)] for row in rows]
            yield self._json_source(table, tuple(columns), types), [json.dumps(data, separators=(",", ":"))]
            return
        per = max(1, min(500, 30_000 // len(columns)))
        marks = "(" + ", ".join(["?"] * len(columns)) + ")"
        width = len(columns)
        # Converted column by column, only the columns that need it (a few of a row's values are
        # datetimes or JSON): per value work in Python was ~1/3 of the time SQLite's write lock was held.
        todo = [(i, c) for i, c in enumerate(convert) if c is not None]
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            params = [v for row in chunk for v in row]
            if len(params) != width * len(chunk):
                raise ValueError(f"rows of {width} values expected for columns {columns}")
            for i, c in todo:
                params[i::width] = map(c, params[i::width])
            yield "VALUES " + ", ".join([marks] * len(chunk)), params

    def _json_source(self, table: sa.Table, columns: tuple[str, ...], types: dict[str, Any]) -> str:
        """PostgreSQL's row source for ``columns`` (each cast compiled once per process, not per statement)."""
        key = (id(table), self.dialect.name, columns, tuple(sorted((n, repr(t)) for n, t in types.items())))
        found = _json_sources.get(key)
        if found is None:
            casts = ", ".join(f"(r->>{i})::{(types.get(n) or table.c[n].type).compile(dialect=self.dialect)}"
                              for i, n in enumerate(columns))
            found = _json_sources[key] = f"SELECT {casts} FROM jsonb_array_elements({self.mark}::jsonb) AS r"
        return found

    def _converters(self, table: sa.Table, columns: tuple[str, ...], types: dict[str, Any] | None = None) -> list[Any]:
        key = (id(table), self.dialect.name, columns)
        found = _converters.get(key)
        if found is None:
            found = _converters[key] = [None if c in (types or {}) else self._converter(table.c.get(c))
                                        for c in columns]
        return found

    def select(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Rows of a SELECT written with ``{mark}`` placeholders (``?`` or ``%s``)."""
        return self._run(sql.replace("{mark}", self.mark), [self.value(p) for p in params], fetch=True)

    def _run(self, sql: str, params: list[Any], *, fetch: bool = False, many: bool = False) -> list[tuple[Any, ...]]:
        """Run on a fresh cursor (``executemany`` when ``many``); driver errors become SQLAlchemy's (an
        ``IntegrityError`` is retried)."""
        cur = self.dbapi.cursor()
        try:
            if many:
                cur.executemany(sql, params)
                return []
            cur.execute(sql, params)
            return list(cur.fetchall()) if fetch else []
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
            return _sqlite_column_text if self.sqlite else None
        if isinstance(column.type, sa.JSON):
            return self.value
        return None

    def marks(self, n: int) -> str:
        return ", ".join([self.mark] * n)

    def in_(self, column: str, values: list[Any]) -> tuple[str, list[Any]]:
        """``column IN (…)`` for :meth:`select`: ``IN (?, …)`` on SQLite, ``= ANY(%s)`` (one array, a short
        statement) on PostgreSQL. At most 500 values on SQLite (callers chunk)."""
        if self.sqlite:
            return f"{column} IN ({self.marks(len(values))})", list(values)
        return f"{column} = ANY({{mark}})", [_Array(values)]

    def value(self, v: Any) -> Any:
        """A Python value as the driver should get it for our columns."""
        if v is None or type(v) is str or type(v) is int:
            return v
        if type(v) is _Array:  # a PostgreSQL array parameter (in_), not a JSON value
            return list(v)
        if isinstance(v, datetime):
            return _sqlite_text(v) if self.sqlite else (v if v.tzinfo else v.replace(tzinfo=UTC))
        if isinstance(v, bool):
            return int(v) if self.sqlite else v
        if isinstance(v, dict | list):
            return json.dumps(v) if v else ("{}" if isinstance(v, dict) else "[]")
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


class _Array(list):  # type: ignore[type-arg]
    """The values of :meth:`Raw.in_` on PostgreSQL: one array parameter."""


def _json_value(v: Any) -> Any:
    """A driver value as JSON text carries it to PostgreSQL (read back with ``->>`` and a cast)."""
    return v.isoformat() if isinstance(v, datetime) else v


def _sqlite_column_text(v: Any) -> Any:
    """A datetime column's value for SQLite (text; ``None`` stays NULL, text is taken as it is)."""
    return _sqlite_text(v) if isinstance(v, datetime) else v


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
