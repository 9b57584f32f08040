"""A worker whose lease ran out must not undo the work of the worker that claimed the row after it (R2.3)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from alerts import outbox, storage
from alerts.models import utcnow
from alerts.routing import Target
from alerts.storage import Notification, session_scope

LEASE = timedelta(seconds=120)


def _one_due_row(tmp_path):
    eng = storage.make_engine(f"sqlite:///{tmp_path}/a.db")
    storage.upgrade(eng)
    now = utcnow()
    with session_scope(eng) as s:
        outbox.enqueue(s, alert_id=None, kind="digest", seq=1, targets=[Target("r", "file", {})], due=now,
                       now=now, payload={})
    return eng, now


def _row(eng) -> Notification:
    with session_scope(eng) as s:
        return s.get(Notification, 1)


def _claim(eng, now) -> Notification:
    [row] = outbox.claim(eng, now=now, lease=LEASE, limit=10)
    return row


def test_a_late_failure_of_an_expired_claim_is_dropped(tmp_path) -> None:
    eng, t0 = _one_due_row(tmp_path)
    a = _claim(eng, t0)  # worker A claims, then stalls past its lease
    b = _claim(eng, t0 + LEASE + timedelta(seconds=1))  # worker B claims the row again
    assert (a.attempts, b.attempts) == (1, 2)
    outbox.mark_sent(eng, b.id, now=t0 + LEASE * 2, external_ref="b", claimed=b.lease_until)
    status = outbox.mark_failed(eng, a.id, now=t0 + LEASE * 3, error="timeout", retryable=True,
                                policy=outbox.RetryPolicy(), claimed=a.lease_until)
    assert status == "lost"
    row = _row(eng)
    assert (row.status, row.external_ref, row.last_error) == ("sent", "b", None)
    assert outbox.claim(eng, now=t0 + timedelta(days=1), lease=LEASE, limit=10) == []  # not sent a third time


def test_a_late_success_of_an_expired_claim_counts_and_the_holders_failure_does_not_resend(tmp_path) -> None:
    eng, t0 = _one_due_row(tmp_path)
    a = _claim(eng, t0)
    b = _claim(eng, t0 + LEASE + timedelta(seconds=1))
    outbox.mark_sent(eng, a.id, now=t0 + LEASE * 2, external_ref="a", claimed=a.lease_until)  # A's message arrived
    status = outbox.mark_failed(eng, b.id, now=t0 + LEASE * 2, error="500", retryable=True,
                                policy=outbox.RetryPolicy(), claimed=b.lease_until)
    assert status == "lost"
    row = _row(eng)
    assert (row.status, row.external_ref) == ("sent", "a")
    assert outbox.claim(eng, now=t0 + timedelta(days=1), lease=LEASE, limit=10) == []


def test_the_current_holder_decides(tmp_path) -> None:
    eng, t0 = _one_due_row(tmp_path)
    a = _claim(eng, t0)
    b = _claim(eng, t0 + LEASE + timedelta(seconds=1))
    assert outbox.mark_failed(eng, a.id, now=t0 + LEASE * 2, error="timeout", retryable=True,
                              policy=outbox.RetryPolicy(), claimed=a.lease_until) == "lost"
    assert outbox.mark_failed(eng, b.id, now=t0 + LEASE * 2, error="500", retryable=True,
                              policy=outbox.RetryPolicy(), claimed=b.lease_until) == "failed"
    row = _row(eng)
    assert (row.status, row.attempts, row.last_error) == ("failed", 2, "500")
    outbox.defer(eng, a.id, until=t0, claimed=a.lease_until)  # A's pacing deferral: not A's to make either
    assert _row(eng).attempts == 2


def test_a_dead_letter_and_its_admin_copy_commit_together(tmp_path) -> None:
    """R2.5: the row turns dead in the transaction that queues its copy to [email] admin, so no crash
    in between can leave a dead letter nobody was told about."""
    eng, t0 = _one_due_row(tmp_path)
    a = _claim(eng, t0)

    def broken(payload: dict, why: str) -> dict:
        raise RuntimeError("the copy could not be made")

    with pytest.raises(RuntimeError):
        outbox.mark_failed(eng, a.id, now=t0, error="channel_not_found", retryable=False,
                           policy=outbox.RetryPolicy(), claimed=a.lease_until,
                           fallback=outbox.Fallback("admin@example.com", broken))
    assert _row(eng).status == "pending"  # not dead without its copy: it is claimed again later
    b = _claim(eng, t0 + LEASE + timedelta(seconds=1))
    status = outbox.mark_failed(eng, b.id, now=t0 + LEASE * 2, error="channel_not_found", retryable=False,
                                policy=outbox.RetryPolicy(), claimed=b.lease_until,
                                fallback=outbox.Fallback("admin@example.com"))
    assert status == "dead"
    with session_scope(eng) as s:
        [copy] = s.exec(select(Notification).where(Notification.id != 1)).all()
        assert (copy.status, copy.channel, copy.target["to"], copy.target["fallback_for"]) == \
            ("pending", "email", ["admin@example.com"], 1)


def test_a_deferral_by_the_holder_does_not_give_the_old_claim_back(tmp_path) -> None:
    """Attempts are no claim token: the holder's pacing deferral gives its attempt back, and the stale
    worker's attempt count would match again. The lease each claim sets tells them apart."""
    eng, t0 = _one_due_row(tmp_path)
    a = _claim(eng, t0)
    b = _claim(eng, t0 + LEASE + timedelta(seconds=1))
    outbox.defer(eng, b.id, until=t0 + LEASE * 2, claimed=b.lease_until)
    assert _row(eng).attempts == a.attempts  # the count is back where A left it
    assert outbox.mark_failed(eng, a.id, now=t0 + LEASE * 2, error="timeout", retryable=False,
                              policy=outbox.RetryPolicy(), claimed=a.lease_until) == "lost"
    row = _row(eng)
    assert (row.status, as_naive(row.next_attempt_at)) == ("pending", as_naive(t0 + LEASE * 2))


def as_naive(value):
    from alerts.models import as_utc

    return as_utc(value).replace(tzinfo=None)
