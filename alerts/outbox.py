"""The outbox: enqueue in the caller's transaction, claim due rows with a lease, record outcomes.

Claiming is one atomic statement (R2.2)::

    UPDATE notification SET lease_until = :now + lease, attempts = attempts + 1
     WHERE id IN (SELECT id FROM notification
                   WHERE status IN ('pending','failed') AND next_attempt_at <= :now
                     AND (lease_until IS NULL OR lease_until < :now)
                   ORDER BY next_attempt_at LIMIT :n
                   FOR UPDATE SKIP LOCKED)          -- PostgreSQL; SQLite runs it under BEGIN IMMEDIATE
    RETURNING id

Backoff is "full jitter": ``delay = uniform(0, min(cap, base * 2 ** (attempts - 1)))``, at least 1 s.
After ``max_attempts`` attempts or ``max_age`` since the row was created, a failing row becomes ``dead``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alerts import crashpoints
from alerts.fastsql import Raw
from alerts.models import DeliveryStatus, as_utc, utcnow
from alerts.redact import redact
from alerts.routing import Target
from alerts.storage import Notification, get_row, session_scope


def idempotency_key(alert_id: int | None, receiver: str, channel: str, kind: str, seq: int | str) -> str:
    """sha256(alert_id|receiver|channel|kind|seq) (R2.1)."""
    return hashlib.sha256(f"{alert_id}|{receiver}|{channel}|{kind}|{seq}".encode()).hexdigest()


def enqueue(
    session: Session,
    *,
    alert_id: int | None,
    kind: str,
    seq: int | str,
    targets: Sequence[Target],
    due: datetime,
    now: datetime,
    payload: dict | None = None,
) -> list[int]:
    """Add one outbox row per target in the caller's transaction; a key that exists is skipped.

    Returns the ids of the rows added.
    """
    return insert_rows(session, [
        notification_row(alert_id=alert_id, kind=kind, seq=seq, target=t, due=due, now=now, payload=payload)
        for t in targets
    ])


def notification_row(*, alert_id: int | None, kind: str, seq: int | str, target: Target, due: datetime,
                     now: datetime, payload: dict | None = None) -> dict:
    return {
        "alert_id": alert_id,
        "receiver": target.receiver,
        "channel": target.channel,
        "kind": str(kind),
        "seq": int(seq) if str(seq).isdigit() else 0,
        "idempotency_key": idempotency_key(alert_id, target.receiver, target.channel, str(kind), seq),
        "status": DeliveryStatus.pending.value,
        "attempts": 0,
        "next_attempt_at": due,
        "created_at": now,
        "target": dict(target.address),
        "payload": payload,
    }


def insert_rows(session: Session, rows: list[dict]) -> list[int]:
    """One multi-row ``INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING id``."""
    if not rows:
        return []
    table = Notification.__table__
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(table.c.id)
    return [r[0] for r in session.execute(stmt, rows)]

def insert_many(raw: Raw, rows: list[dict]) -> None:
    """:func:`insert_rows` for the ingest hot path: the same rows, no ids returned, no per-row ORM work."""
    if rows:
        columns = list(rows[0])
        raw.insert(Notification.__table__, columns, [tuple([r[c] for c in columns]) for r in rows],
                   conflict="ON CONFLICT (idempotency_key) DO NOTHING")


def claim(engine: Engine, *, now: datetime | None, lease: timedelta, limit: int,
          db_now: Callable[[datetime], None] | None = None) -> list[Notification]:
    """Lease up to ``limit`` due rows to this worker and return them (one statement, R2.2).

    ``now=None``: the database's clock, read by the statement itself — on PostgreSQL ``now()``, so which
    rows are due and when their leases end never depend on this replica's clock (the service's worker
    claims so). SQLite is a file on this machine: its clock is the local one. A ``now`` given (tests,
    a fake clock) is used as it is. The lease each row got is its ``lease_until`` (the claim's token).
    ``db_now`` is told the database's ``now()`` of a claim that took rows (PostgreSQL, ``now=None``): the
    caller's own times (backoff, deferrals) must agree with it."""
    t = Notification.__table__
    postgres = engine.dialect.name == "postgresql"
    if now is None and not postgres:
        now = utcnow()
    at: Any = sa.func.now() if now is None else now
    due = (
        sa.select(t.c.id)
        .where(
            t.c.status.in_([DeliveryStatus.pending.value, DeliveryStatus.failed.value]),
            t.c.next_attempt_at <= at,
            sa.or_(t.c.lease_until.is_(None), t.c.lease_until < at),
        )
        .order_by(t.c.next_attempt_at)
        .limit(limit)
    )
    if postgres:
        due = due.with_for_update(skip_locked=True)
    elif not _anything_due(engine, now):
        return []  # SQLite: a plain read (no write lock) when, as usual, nothing is due
    until: Any = now + lease if now is not None else sa.func.now() + sa.literal(lease, sa.Interval())
    stmt = (
        sa.update(t)
        .where(t.c.id.in_(due.scalar_subquery()))
        .values(lease_until=until, attempts=t.c.attempts + 1)
        .returning(t.c.id, sa.func.now() if now is None else sa.null())
    )
    with session_scope(engine) as session:
        got = session.execute(stmt).all()
        ids = [row[0] for row in got]
        if not ids:
            return []
        rows = list(session.exec(select(Notification).where(Notification.id.in_(ids))).all())
    if db_now is not None and now is None:  # once committed: the caller may query the database itself
        db_now(as_utc(got[0][1]))
    rows.sort(key=lambda r: (as_utc(r.next_attempt_at), r.id))
    crashpoints.hit("after_claim_commit")
    return rows


def _anything_due(engine: Engine, now: datetime) -> bool:
    t = Notification.__table__
    probe = sa.select(t.c.id).where(
        t.c.status.in_([DeliveryStatus.pending.value, DeliveryStatus.failed.value]),
        t.c.next_attempt_at <= now,
        sa.or_(t.c.lease_until.is_(None), t.c.lease_until < now),
    ).limit(1)
    # A plain read outside any transaction: in WAL mode it never waits for, nor blocks, the writer.
    with engine.connect().execution_options(alerts_read_only=True) as conn:
        return conn.execute(probe).first() is not None


def backoff(attempts: int, *, base: timedelta, cap: timedelta, rng: random.Random | None = None) -> timedelta:
    """Full jitter: uniform(0, min(cap, base * 2 ** (attempts - 1))), at least one second."""
    ceiling = min(cap.total_seconds(), base.total_seconds() * (2 ** max(0, attempts - 1)))
    delay = (rng or random).uniform(0, ceiling)
    return timedelta(seconds=max(1.0, delay))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 12
    max_age: timedelta = timedelta(hours=24)
    base: timedelta = timedelta(seconds=5)
    cap: timedelta = timedelta(hours=1)


def _lost(row: Notification, claimed: datetime | None) -> bool:
    """Whether this worker's claim on ``row`` is gone: the row is finished, put back (deferred, marked),
    or its lease ran out and another worker claimed it. ``claimed`` is the ``lease_until`` our claim set
    (each claim sets its own; attempts are no token: deferrals and 429s give one back); ``None`` trusts
    the caller (operators' commands, tests)."""
    if claimed is None:
        return False
    return (row.lease_until is None or as_utc(row.lease_until) != as_utc(claimed)
            or row.status not in (DeliveryStatus.pending, DeliveryStatus.failed))


def mark_sent(engine: Engine, row_id: int, *, now: datetime, external_ref: str | None,
              claimed: datetime | None = None) -> None:
    """Record a delivery. It counts even if our lease ran out meanwhile and another worker holds the row
    now, or gave it up as dead: the message did arrive, and a later failure of theirs must not send it
    a third time."""
    with session_scope(engine) as session:
        row = session.get(Notification, row_id)
        if row is None or (claimed is not None and row.status not in (DeliveryStatus.pending, DeliveryStatus.failed,
                                                                      DeliveryStatus.dead)):
            return
        row.status = DeliveryStatus.sent
        row.sent_at = now
        row.lease_until = None
        row.external_ref = external_ref
        row.last_error = None


def mark_failed(
    engine: Engine,
    row_id: int,
    *,
    now: datetime,
    error: str,
    retryable: bool,
    retry_after: float | None = None,
    policy: RetryPolicy,
    claimed: datetime | None = None,
    fallback: Fallback | None = None,
) -> str:
    """Record a failed attempt; return the new status (``failed`` to retry, ``dead`` to give up), or
    ``lost`` when the row is no longer ours to decide (:func:`_lost`: its current holder decides)."""
    with session_scope(engine) as session:
        row = session.get(Notification, row_id)
        if row is None:
            return "missing"
        if _lost(row, claimed):
            return "lost"
        row.last_error = redact(error)[:2000]
        row.lease_until = None
        too_old = now - as_utc(row.created_at) >= policy.max_age
        if retry_after is not None and retryable and not too_old:
            # The peer asked us to wait (Slack 429): not counted as an attempt (R2.4) — but a row still
            # rate limited when it reaches max_age dies like any other (a channel limited for ever).
            row.attempts = max(0, row.attempts - 1)
            row.status = DeliveryStatus.failed
            row.next_attempt_at = now + timedelta(seconds=min(max(retry_after, 1.0), 900.0))
        elif not retryable or row.attempts >= policy.max_attempts or too_old:
            row.status = DeliveryStatus.dead
            if fallback is not None:  # in the same transaction: a crash cannot leave a dead letter unreported
                session.flush()
                _fallback_in(session, row, fallback, now=now)
        else:
            row.status = DeliveryStatus.failed
            row.next_attempt_at = now + backoff(row.attempts, base=policy.base, cap=policy.cap)
        return str(row.status)


def defer(engine: Engine, row_id: int, *, until: datetime, claimed: datetime | None = None) -> None:
    """Put a claimed row back, due at ``until``, without counting the attempt (Slack pacing, R2.6)."""
    with session_scope(engine) as session:
        row = session.get(Notification, row_id)
        if row is None or row.status not in (DeliveryStatus.pending, DeliveryStatus.failed) or _lost(row, claimed):
            return
        row.attempts = max(0, row.attempts - 1)
        row.lease_until = None
        row.next_attempt_at = until


def save_payload(engine: Engine, row_id: int, payload: dict) -> None:
    with session_scope(engine) as session:
        row = session.get(Notification, row_id)
        if row is not None:
            row.payload = payload


def requeue(engine: Engine, row_id: int, *, now: datetime) -> bool:
    """Give a dead row another chance (operators' command)."""
    with session_scope(engine) as session:
        row = get_row(session, Notification, row_id)
        if row is None or row.status != DeliveryStatus.dead:
            return False
        _revive(row, now)
        return True


def requeue_dead(engine: Engine, *, now: datetime, receiver: str | None = None,
                 channel: str | None = None) -> list[int]:
    """Every dead row (of ``receiver``, on ``channel``) gets another round, oldest first; their ids.

    After an outage longer than the retry budget (12 attempts of full jitter, 1–2.5 h) a channel leaves
    a dead row per message it missed; this sends them all again once it is back."""
    with session_scope(engine) as session:
        query = select(Notification).where(Notification.status == DeliveryStatus.dead)
        if receiver is not None:
            query = query.where(Notification.receiver == receiver)
        if channel is not None:
            query = query.where(Notification.channel == channel)
        rows = list(session.exec(query.order_by(Notification.id)))
        for row in rows:
            _revive(row, now)
        return [row.id for row in rows if row.id is not None]


def _revive(row: Notification, now: datetime) -> None:
    row.status = DeliveryStatus.pending
    row.attempts = 0
    row.next_attempt_at = now
    row.created_at = now  # its 24 h budget starts again
    row.lease_until = None


def mark_partial(
    engine: Engine,
    row_id: int,
    *,
    now: datetime,
    message_id: str,
    delivered: Sequence[str],
    retry: dict[str, str],
    dead: dict[str, str],
    policy: RetryPolicy,
    claimed: datetime | None = None,
    fallback: Fallback | None = None,
) -> list[int]:
    """An email some recipients took and others refused: one row per outcome (R2.4, per recipient).

    The row itself keeps the recipients who have the message (``sent``) or, if nobody does, those
    to retry. Each other group gets a new row (same alert, kind, payload, attempts and age, and the
    same ``Message-ID``, kept in its target): refused-for-good recipients a ``dead`` row, temporarily
    refused ones a ``failed`` row that is retried with backoff. Returns the ids of the ``dead`` rows.
    """
    dead_ids: list[int] = []
    with session_scope(engine) as session:
        row = session.get(Notification, row_id)
        if row is None or _lost(row, claimed):  # its current holder sends it (to everyone) and decides
            return []
        groups: list[tuple[str, list[str], str | None]] = []
        if delivered:
            groups.append((DeliveryStatus.sent, list(delivered), None))
        if retry:
            groups.append((DeliveryStatus.failed, list(retry), "; ".join(f"{a}: {e}" for a, e in retry.items())))
        if dead:
            groups.append((DeliveryStatus.dead, list(dead), "; ".join(f"{a}: {e}" for a, e in dead.items())))
        too_old = now - as_utc(row.created_at) >= policy.max_age
        for index, (status, addrs, error) in enumerate(groups):
            if status == DeliveryStatus.failed and (row.attempts >= policy.max_attempts or too_old):
                status = DeliveryStatus.dead
            target = {**dict(row.target or {}), "to": addrs, "message_id": message_id}
            if index == 0:
                item = row
            else:
                item = Notification(
                    alert_id=row.alert_id, receiver=row.receiver, channel=row.channel, kind=row.kind, seq=row.seq,
                    idempotency_key=hashlib.sha256(f"{row.idempotency_key}|{status}|{','.join(addrs)}".encode())
                    .hexdigest(),
                    attempts=row.attempts, created_at=row.created_at, payload=row.payload,
                )
            item.target = target
            item.status = status
            item.lease_until = None
            item.last_error = redact(error)[:2000] if error else None
            if status == DeliveryStatus.sent:
                item.sent_at = now
                item.external_ref = message_id
            item.next_attempt_at = (now + backoff(row.attempts, base=policy.base, cap=policy.cap)
                                    if status == DeliveryStatus.failed else (item.next_attempt_at or now))
            session.add(item)
            session.flush()
            if status == DeliveryStatus.dead:
                dead_ids.append(item.id)  # type: ignore[arg-type]
                if fallback is not None:
                    _fallback_in(session, item, fallback, now=now)
    return dead_ids


FALLBACK_RECEIVER = "admin (fallback)"


@dataclass(frozen=True)
class Fallback:
    """Where dead letters go (R2.5): ``[email] admin``, each with ``note`` saying why it is there."""

    admin: str
    note: Callable[[dict, str], dict] | None = None


def enqueue_fallback(
    engine: Engine,
    row_id: int,
    *,
    admin: str,
    now: datetime,
    note: Callable[[dict, str], dict] | None = None,
) -> int | None:
    """A dead row's message, by email to the admin address (R2.5); ``None`` if not applicable.

    Not for rows that were themselves a fallback, or an email the admin was among the recipients of.
    The copy keeps the rendered payload (``note`` may add why it is there) and is sent like any row.
    """
    with session_scope(engine) as session:
        row = session.get(Notification, row_id)
        return None if row is None else _fallback_in(session, row, Fallback(admin, note), now=now)


def _fallback_in(session: Session, row: Notification, fallback: Fallback, *, now: datetime) -> int | None:
    """:func:`enqueue_fallback` inside the caller's transaction: the one that made ``row`` dead."""
    admin, note = fallback.admin, fallback.note
    if row.status != DeliveryStatus.dead or row.receiver == FALLBACK_RECEIVER:
        return None
    if row.channel == "email" and admin.lower() in {str(a).lower() for a in (row.target or {}).get("to", [])}:
        return None
    where = f"{row.channel} {row.receiver}" + (
        f" ({row.target.get('channel')})" if row.channel == "slack" and row.target else "")
    payload = row.payload
    if payload is not None and note is not None:
        payload = note(payload, f"Could not deliver this to {where}: {row.last_error or 'unknown error'}")
    key = idempotency_key(row.alert_id, FALLBACK_RECEIVER, "email", row.kind, f"{row.seq}:{row.id}")
    if session.exec(select(Notification.id).where(Notification.idempotency_key == key)).first() is not None:
        return None
    copy = Notification(
        alert_id=row.alert_id, receiver=FALLBACK_RECEIVER, channel="email", kind=row.kind, seq=row.seq,
        idempotency_key=key, status=DeliveryStatus.pending, next_attempt_at=now, created_at=now,
        target={"to": [admin], "fallback_for": row.id}, payload=payload,
    )
    session.add(copy)
    session.flush()
    return copy.id


def delivery_summary(engine: Engine, alert_ids: Sequence[int]) -> dict[int, dict]:
    """Per alert: notification counts by status and its dead letters (for ``alerts list --json``)."""
    out: dict[int, dict] = {a: {"delivery": {}, "dead_letters": []} for a in alert_ids}
    if not alert_ids:
        return out
    with session_scope(engine) as session:
        rows = session.exec(
            select(Notification).where(Notification.alert_id.in_(list(alert_ids))).order_by(Notification.id)
        ).all()
        for n in rows:
            item = out[n.alert_id]  # type: ignore[index]
            item["delivery"][n.status] = item["delivery"].get(n.status, 0) + 1
            if n.status == DeliveryStatus.dead:
                item["dead_letters"].append({"id": n.id, "receiver": n.receiver, "channel": n.channel,
                                             "kind": n.kind, "attempts": n.attempts, "last_error": n.last_error})
    return out
