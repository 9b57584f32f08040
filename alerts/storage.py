"""Tables, engine and sessions. SQLite by default (WAL, synchronous=FULL), PostgreSQL by URL.

Schema changes go through Alembic (``alerts/migrations``); :func:`upgrade` runs them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import JSON, Column, Field, Index, Session, SQLModel, UniqueConstraint, create_engine

from alerts.models import as_utc

_log = logging.getLogger("alerts.storage")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps them naive; we add UTC back)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return as_utc(value) if value is not None else None


def _ts(**kw: Any) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), **kw))


FIVETRAN = sa.text("source = 'fivetran'")  # as a literal: a partial index serves only queries that say so


class Event(SQLModel, table=True):
    """Every accepted event, secrets redacted. ``event_id`` is the idempotency key (unique where given)."""

    __table_args__ = (
        Index("uq_event_event_id", "event_id", unique=True, sqlite_where=sa.text("event_id IS NOT NULL"),
              postgresql_where=sa.text("event_id IS NOT NULL")),
        # Events are read back by alert only to know whether Fivetran reported it (fresh Connect Card links):
        # an index of those alone keeps every other event an append.
        Index("ix_event_fivetran_alert", "alert_id", sqlite_where=FIVETRAN, postgresql_where=FIVETRAN),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str | None = Field(default=None, max_length=200)
    source: str = Field(max_length=40)
    integration_id: str = Field(max_length=200)
    status: str = Field(max_length=16)
    provider: str | None = Field(default=None, max_length=100)
    auth_method: str | None = Field(default=None, max_length=16)
    code: str | None = Field(default=None, max_length=100)
    error: str | None = None
    occurred_at: datetime | None = _ts()
    received_at: datetime | None = _ts(nullable=False)
    alert_id: int | None = None
    body_sha256: str | None = Field(default=None, max_length=64)


class Alert(SQLModel, table=True):
    """One incident. At most one non-resolved alert per fingerprint, enforced by a partial unique index."""

    __table_args__ = (
        Index(
            "uq_alert_open_fingerprint",
            "fingerprint",
            unique=True,
            sqlite_where=sa.text("state != 'resolved'"),
            postgresql_where=sa.text("state != 'resolved'"),
        ),
        Index("ix_alert_state_last_notified", "state", "last_notified_at"),
        # Room on each page for repeats to update rows in place (HOT; migration 0008 says why).
        {"postgresql_with": {"fillfactor": 50}},
    )

    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(max_length=64, index=True)
    integration_id: str = Field(max_length=200, index=True)
    integration_name: str | None = Field(default=None, max_length=200)
    provider: str | None = Field(default=None, max_length=100)
    auth_method: str | None = Field(default=None, max_length=16)
    account_id: str | None = Field(default=None, max_length=200)
    authorized_by: str | None = Field(default=None, max_length=320)
    code: str = Field(max_length=100)
    severity: str = Field(max_length=16)
    state: str = Field(max_length=16)
    count: int = 1
    first_seen: datetime | None = _ts(nullable=False)
    last_seen: datetime | None = _ts(nullable=False)
    last_error: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    reauthorize_url: str | None = None
    silenced: bool = False
    notify_seq: int = 0
    last_notified_at: datetime | None = _ts()
    first_notified_at: datetime | None = _ts()
    acknowledged_at: datetime | None = _ts()
    acknowledged_by: str | None = Field(default=None, max_length=200)
    resolved_at: datetime | None = _ts()
    resolved_by: str | None = Field(default=None, max_length=200)
    # Correlation: alerts failing together for one cause (same authorizing user or account, same code)
    # share a key; the first is the lead, whose message names them all.
    correlation_key: str | None = Field(default=None, max_length=400, index=True)
    correlation_lead_id: int | None = None


class Notification(SQLModel, table=True):
    """The outbox: a message exists if and only if its row exists (R2.1)."""

    __table_args__ = (Index("ix_notification_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int | None = Field(default=None, index=True)
    receiver: str = Field(max_length=200)
    channel: str = Field(max_length=16)
    kind: str = Field(max_length=16)
    seq: int = 0
    idempotency_key: str = Field(max_length=64, unique=True)
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = _ts(nullable=False)
    lease_until: datetime | None = _ts()
    created_at: datetime | None = _ts(nullable=False)
    sent_at: datetime | None = _ts()
    last_error: str | None = None
    external_ref: str | None = Field(default=None, max_length=300)
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    target: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Instance(SQLModel, table=True):
    """This database's random id (migration 0009): what makes its messages' identities its own."""

    id: str = Field(primary_key=True, max_length=32)


class SlackPace(SQLModel, table=True):
    """A token bucket per Slack channel (R2.6), in the database so that every replica draws on the same one."""

    __tablename__ = "slack_pace"

    channel: str = Field(primary_key=True, max_length=200)
    tokens: float = 0.0
    updated_at: datetime | None = _ts(nullable=False)


class Silence(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    integration: str = Field(default="*", max_length=200)
    provider: str | None = Field(default=None, max_length=100)
    code: str | None = Field(default=None, max_length=100)
    starts_at: datetime | None = _ts(nullable=False)
    ends_at: datetime | None = _ts(nullable=False)
    author: str = Field(default="", max_length=200)
    comment: str = Field(default="", max_length=1000)


class LogOffset(SQLModel, table=True):
    __tablename__ = "log_offset"
    __table_args__ = (UniqueConstraint("path", name="uq_log_offset_path"),)

    id: int | None = Field(default=None, primary_key=True)
    path: str = Field(max_length=1000)
    # 64-bit: inode and device numbers and offsets of large files overflow PostgreSQL's integer.
    device: int = Field(default=0, sa_column=Column(sa.BigInteger(), nullable=False))
    inode: int = Field(default=0, sa_column=Column(sa.BigInteger(), nullable=False))
    offset: int = Field(default=0, sa_column=Column(sa.BigInteger(), nullable=False))
    updated_at: datetime | None = _ts()
    # What a restart needs besides the offset (alerts/tail.py): the integration named last before
    # ``offset`` (a traceback after a restart still belongs to it), and a hash of the file's first
    # ``fingerprint_len`` bytes, so a file that reuses the inode of a deleted one is read from 0.
    context: str | None = Field(default=None, max_length=1000)
    fingerprint: str | None = Field(default=None, max_length=64)
    fingerprint_len: int = 0


class DigestRun(SQLModel, table=True):
    __tablename__ = "digest_run"
    __table_args__ = (UniqueConstraint("name", "period_start", name="uq_digest_run_period"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    period_start: datetime | None = _ts(nullable=False)
    period_end: datetime | None = _ts()
    manual: bool = False
    status: str = Field(default="sent", max_length=16)  # baseline | sent | empty | manual
    created_at: datetime | None = _ts()


class Token(SQLModel, table=True):
    """What is known about an integration's refresh token: never the token itself."""

    __table_args__ = (UniqueConstraint("integration_id", name="uq_token_integration"),)

    id: int | None = Field(default=None, primary_key=True)
    integration_id: str = Field(max_length=200)
    integration_name: str | None = Field(default=None, max_length=200)
    provider: str | None = Field(default=None, max_length=100)
    issued_at: datetime | None = _ts()
    expires_at: datetime | None = _ts()
    last_used_at: datetime | None = _ts()
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reauthorize_url: str | None = None
    warned: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # lead times, seconds
    updated_at: datetime | None = _ts()


# --------------------------------------------------------------------------------------------


# Pages (of 4 KiB) after which a commit checkpoints the WAL itself: 64 MiB, a backstop for processes
# without a Checkpointer thread (`alerts serve` runs one; other commands are short-lived).
WAL_AUTOCHECKPOINT = 16384


MAX_ROW_ID = 2**63 - 1  # the largest id either database stores


def get_row(session: Session, model: Any, row_id: int) -> Any:
    """``session.get(model, row_id)`` for an id from a request or the command line: one that no row can
    have (0, negative, past 64 bits) is simply not found, not an overflow in the driver."""
    return session.get(model, row_id) if 0 < row_id <= MAX_ROW_ID else None


def sqlite_path(url: str) -> Path | None:
    u = sa.engine.make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


PG_CONNECT_TIMEOUT_S = 5


def make_engine(url: str, *, synchronous: str = "FULL") -> Engine:
    """An engine with our SQLite pragmas (R5.1) or a PostgreSQL pool; creates the SQLite directory."""
    path = sqlite_path(url)
    if path is not None:
        # A directory we create is ours alone (0700, R4.5); one that exists (the working directory, /tmp)
        # is left as it is — the database file itself is 0600 either way.
        if not path.parent.exists():
            try:
                path.parent.mkdir(parents=True, mode=stat.S_IRWXU)
            except FileExistsError:  # another worker of `serve --workers N` made it a moment ago
                pass
            else:
                os.chmod(path.parent, stat.S_IRWXU)  # mkdir's mode is masked by the umask
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})

        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (BEGIN IMMEDIATE for writers)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
            cur.close()

        @sa_event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            if not conn.get_execution_options().get("alerts_read_only"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        # SQLite has one writer at a time. Writers queue on a lock instead of on SQLite's busy handler,
        # which sleeps in steps of up to 100 ms and would add that to every contended request: threads
        # of this process on a mutex, the processes of `serve --workers N` on an flock of <db>.lock.
        engine.info = {"write_lock": WriteLock(path.with_name(path.name + ".lock"))}  # type: ignore[attr-defined]

        if path.exists():
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        return engine
    # A server that accepts the connection and never answers must not hold every request (and the one
    # group-commit thread) for psycopg's default of minutes: 5 s to connect, 10 s to wait for the pool,
    # TCP keepalives and a user timeout so a connection whose peer vanished fails instead of hanging.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_timeout=10,
                         connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "keepalives": 1, "keepalives_idle": 10,
                                       "keepalives_interval": 5, "keepalives_count": 3, "tcp_user_timeout": 15_000})


class WriteLock:
    """A re-entrant lock held by one thread of one process at a time (a mutex plus ``flock``).

    Waiting on ``flock`` wakes the moment the holder lets go, where SQLite's busy handler polls.
    The lock file holds nothing; it may be deleted while no one writes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mutex = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> WriteLock:
        self._mutex.acquire()
        try:
            if self._depth == 0:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._mutex.release()
            raise
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()


def check_sqlite(engine: Engine) -> dict[str, Any]:
    """Read back the pragmas (R5.1) and the SQLite version (RETURNING needs >= 3.35)."""
    with engine.connect() as conn:
        values = {
            "journal_mode": conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
            "synchronous": conn.exec_driver_sql("PRAGMA synchronous").scalar(),
            "foreign_keys": conn.exec_driver_sql("PRAGMA foreign_keys").scalar(),
            "busy_timeout": conn.exec_driver_sql("PRAGMA busy_timeout").scalar(),
            "version": conn.exec_driver_sql("select sqlite_version()").scalar(),
        }
    return values


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error (SQLite: one writer of this process at a time)."""
    lock = getattr(engine, "info", {}).get("write_lock")
    with lock if lock is not None else nullcontext(), Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


PRUNE_BATCH = 5000


def prune_events(engine: Engine, *, before: datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete up to ``batch`` of the oldest events received before ``before`` (R4.5); return how many.

    Events are appended in the order they arrive, so the old ones are a prefix of the table by id:
    reading the first ``batch`` ids finds them without an index on ``received_at``.
    """
    t = Event.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        last = None
        for row_id, received_at in session.execute(sa.select(t.c.id, t.c.received_at).order_by(t.c.id).limit(batch)):
            if as_utc(received_at) >= before:
                break
            last = row_id
        if last is None:
            return 0
        return session.execute(sa.delete(t).where(t.c.id <= last, t.c.received_at < before)).rowcount or 0


def checkpoint(engine: Engine) -> None:
    """Fold the SQLite WAL back into the database file (PASSIVE: never blocks writers)."""
    from alerts import crashpoints

    if engine.dialect.name != "sqlite":
        return
    path = sqlite_path(str(engine.url))
    with engine.connect() as conn:
        raw = conn.connection.driver_connection  # autocommit: a checkpoint cannot run inside a transaction
        with crashpoints.during("during_checkpoint", writes=path) if path else nullcontext():
            raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class Periodic:
    """Calls ``self.run_once()`` every ``every`` seconds on a daemon thread of its own until :meth:`stop`;
    a failure is logged and the next round tries again."""

    every: float = 60.0
    name = "periodic"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> Any:
        raise NotImplementedError

    def start(self) -> Any:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - retried next round
                _log.warning(f"{self.name} failed", extra={"error": type(exc).__name__})

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


class DatabaseClock(Periodic):
    """"Now" as the database tells it, for every replica alike (R2.2: leases, due times and digest
    periods must not depend on which replica's clock is fast).

    Reading the database on every call would put a round trip on the hot path, so the clock keeps the
    offset between the database's clock (``clock_timestamp()``) and this machine's, measured at
    start and then every ``refresh`` seconds by a thread of its own; a call is the local clock plus
    that offset, never a query. A failed measurement keeps the last offset. SQLite is a file on this
    machine: its clock is the local clock, and nothing is measured.
    """

    name = "db-clock"

    def __init__(self, engine: Engine, *, refresh: float = 60.0, local: Any = None) -> None:
        from alerts.models import utcnow

        super().__init__()
        self.engine = engine
        self.every = refresh
        self.local = local or utcnow
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return self.local() + self.offset

    def sync(self) -> timedelta:
        """Measure the offset now (half the round trip is the error at most)."""
        if self.engine.dialect.name == "sqlite":
            return self.offset
        before = self.local()
        with self.engine.connect() as conn:
            theirs = conn.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
        after = self.local()
        self.offset = as_utc(theirs) - (before + (after - before) / 2)
        return self.offset

    run_once = sync

    def start(self) -> DatabaseClock:
        return self if self.engine.dialect.name == "sqlite" else super().start()


class Checkpointer(Periodic):
    """Runs :func:`checkpoint` every ``every`` seconds from a thread of its own (SQLite only).

    SQLite's own checkpoint runs inside whichever commit pushes the WAL past its threshold, and that
    writer waits for the copy and an fsync of the database file; here no request does. The automatic
    checkpoint stays as a backstop, at a larger threshold (``WAL_AUTOCHECKPOINT``).
    """

    name = "wal-checkpoint"

    def __init__(self, engine: Engine, *, every: float = 1.0) -> None:
        super().__init__()
        self.engine = engine
        self.every = every

    def run_once(self) -> None:
        checkpoint(self.engine)

    def start(self) -> Checkpointer:
        return self if self.engine.dialect.name != "sqlite" else super().start()


def instance_id(engine: Engine) -> str:
    """This database's id (:class:`Instance`), read once per engine."""
    found = getattr(engine, "_alerts_instance_id", None)
    if found is None:
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT id FROM instance ORDER BY id LIMIT 1")).scalar()
        if found is None:
            raise RuntimeError("the database has no instance id: run `alerts db upgrade`")
        engine._alerts_instance_id = found  # type: ignore[attr-defined]
    return found


MIGRATION_LOCK = 0x616C657274730001  # "alerts" + 1: PostgreSQL's advisory lock key for migrations


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # N replicas started together on a new database: one migrates, the others wait and then find
            # the schema current (without the lock the second failed on alembic_version's primary key).
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    path = sqlite_path(str(engine.url))
    if path is not None and path.exists():
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def write_probe(engine: Engine) -> None:
    """A write that changes nothing (``/readyz`` after failed commits): raises while writes fail."""
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return ScriptDirectory.from_config(cfg).get_current_head()
