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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alerts.models import DeliveryStatus, as_utc
from alerts.redact import redact
from alerts.routing import Target
from alerts.storage import Notification, session_scope


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
) -> list[Notification]:
    """Add one outbox row per target in the caller's transaction; a key that exists is skipped."""
    rows = []
    for t in targets:
        key = idempotency_key(alert_id, t.receiver, t.channel, kind, seq)
        exists = session.exec(select(Notification.id).where(Notification.idempotency_key == key)).first()
        if exists is not None:
            continue
        row = Notification(
            alert_id=alert_id,
            receiver=t.receiver,
            channel=t.channel,
            kind=kind,
            seq=int(seq) if str(seq).isdigit() else 0,
            idempotency_key=key,
            status=DeliveryStatus.pending,
            next_attempt_at=due,
            created_at=now,
            target=dict(t.address),
            payload=payload,
        )
        session.add(row)
        rows.append(row)
    return rows


def claim(engine: Engine, *, now: datetime, lease: timedelta, limit: int) -> list[Notification]:
    """Lease up to ``limit`` due rows to this worker and return them (one statement, R2.2)."""
    t = Notification.__table__
    due = (
        sa.select(t.c.id)
        .where(
            t.c.status.in_([DeliveryStatus.pending.value, DeliveryStatus.failed.value]),
            t.c.next_attempt_at <= now,
            sa.or_(t.c.lease_until.is_(None), t.c.lease_until < now),
        )
        .order_by(t.c.next_attempt_at)
        .limit(limit)
    )
    if engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    stmt = (
        sa.update(t)
        .where(t.c.id.in_(due.scalar_subquery()))
        .values(lease_until=now + lease, attempts=t.c.attempts + 1)
        .returning(t.c.id)
    )
    with session_scope(engine) as session:
        ids = [row[0] for row in session.execute(stmt)]
        if not ids:
            return []
        rows = list(session.exec(select(Notification).where(Notification.id.in_(ids))).all())
    rows.sort(key=lambda r: (as_utc(r.next_attempt_at), r.id))
    return rows


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


def mark_sent(engine: Engine, row_id: int, *, now: datetime, external_ref: str | None) -> None:
    with session_scope(engine) as session:
        row = session.get(Notification, row_id)
        if row is None:
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
) -> str:
    """Record a failed attempt; return the new status (``failed`` to retry, ``dead`` to give up)."""
    with session_scope(engine) as session:
        row = session.get(Notification, row_id)
        if row is None:
            return "missing"
        row.last_error = redact(error)[:2000]
        row.lease_until = None
        too_old = now - as_utc(row.created_at) >= policy.max_age
        if retry_after is not None and retryable:
            # The peer asked us to wait (Slack 429): not counted as an attempt (R2.4).
            row.attempts = max(0, row.attempts - 1)
            row.status = DeliveryStatus.failed
            row.next_attempt_at = now + timedelta(seconds=min(max(retry_after, 1.0), 900.0))
        elif not retryable or row.attempts >= policy.max_attempts or too_old:
            row.status = DeliveryStatus.dead
        else:
            row.status = DeliveryStatus.failed
            row.next_attempt_at = now + backoff(row.attempts, base=policy.base, cap=policy.cap)
        return str(row.status)


def save_payload(engine: Engine, row_id: int, payload: dict) -> None:
    with session_scope(engine) as session:
        row = session.get(Notification, row_id)
        if row is not None:
            row.payload = payload


def requeue(engine: Engine, row_id: int, *, now: datetime) -> bool:
    """Give a dead row another chance (operators' command)."""
    with session_scope(engine) as session:
        row = session.get(Notification, row_id)
        if row is None or row.status != DeliveryStatus.dead:
            return False
        row.status = DeliveryStatus.pending
        row.attempts = 0
        row.next_attempt_at = now
        row.created_at = now
        row.lease_until = None
        return True
