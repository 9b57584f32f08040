"""Slack pacing (R2.6): at most ``[slack] rate`` posts a second per channel, in bursts of ``burst``.

Slack allows about one message a second per channel and answers a burst with 429s; a storm of
separate posts also buries the channel. So every post first takes a token from its channel's bucket,
a row in the database (``slack_pace``) that every replica shares, refilled by the database clock. A
post without a token waits for one (its row is due again when the bucket will have refilled; the wait
is not an attempt). A backlog of more than ``backlog_summary`` posts waiting for one channel becomes a
single summary message listing them: the merged rows are recorded as sent, and the summary is an
outbox row of its own (kind ``summary``), delivered, paced and retried like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from alerts.fastsql import Raw
from alerts.models import DeliveryStatus, Kind
from alerts.outbox import notification_row
from alerts.routing import Target
from alerts.storage import Alert, Notification, SlackPace, session_scope

UNPACED = {Kind.action.value}  # edits of a message already posted (chat.update), not new posts
NOT_MERGED = {Kind.action.value, Kind.summary.value}
HORIZON = timedelta(minutes=1)  # rows due within this long count as waiting for the channel
MAX_MERGED = 500  # rows per summary (a longer backlog becomes several summaries, a second apart)
_ALERT_COLUMNS = ["id", "integration_id", "integration_name", "provider", "code", "reauthorize_url"]


def key_of(target: dict[str, Any] | None) -> str:
    """The bucket of a Slack row: its channel (an incoming webhook posts to one channel of its own)."""
    return str((target or {}).get("channel") or "(webhook)")[:200]


def paced(row: Notification) -> bool:
    return row.channel == "slack" and row.kind not in UNPACED


def take(engine: Engine, key: str, *, now: datetime, rate: float, burst: int) -> float:
    """Take a token from ``key``'s bucket: 0.0 if one was there, else the seconds until there is one."""
    with session_scope(engine) as session:
        raw = Raw.of(session)  # SQLite: BEGIN IMMEDIATE; PostgreSQL: the row is locked FOR UPDATE below
        tokens, updated = _bucket(raw, key, now=now, rate=rate, burst=burst, new=float(burst))
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rate
        _store(raw, key, tokens, max(now, updated))
    return wait


def hold(engine: Engine, key: str, *, now: datetime, seconds: float, rate: float, burst: int) -> None:
    """Slack said "wait ``seconds``" (429) for channel ``key``: empty its bucket until then, so that no
    replica posts there before (each would only collect 429s of its own). Never shortens a longer hold."""
    tokens = 1.0 - seconds * rate  # take() finds its next token ``seconds`` from now
    with session_scope(engine) as session:
        raw = Raw.of(session)
        current, updated = _bucket(raw, key, now=now, rate=rate, burst=burst, new=tokens)
        if current > tokens:
            _store(raw, key, tokens, max(now, updated))


def _bucket(raw: Raw, key: str, *, now: datetime, rate: float, burst: int, new: float) -> tuple[float, datetime]:
    """``key``'s bucket, locked (created with ``new`` tokens if it is not there), refilled up to ``now``:
    (tokens, when it was last written)."""
    raw.insert(SlackPace.__table__, ["channel", "tokens", "updated_at"], [(key, new, now)],
               conflict="ON CONFLICT (channel) DO NOTHING")
    [(tokens, updated)] = raw.select(
        "SELECT tokens, updated_at FROM slack_pace WHERE channel = {mark}" + ("" if raw.sqlite else " FOR UPDATE"), [key])
    updated = raw.datetime_of(updated)
    assert updated is not None
    return min(float(burst), float(tokens) + max(0.0, (now - updated).total_seconds()) * rate), updated


def _store(raw: Raw, key: str, tokens: float, at: datetime) -> None:
    raw.executemany("UPDATE slack_pace SET tokens = {mark}, updated_at = {mark} WHERE channel = {mark}",
                    [(tokens, at, key)])


def merge_backlog(engine: Engine, key: str, held: Sequence[Notification], **kw: Any) -> set[int]:
    """If more than ``threshold`` posts wait for channel ``key`` (``held``: rows this worker has claimed
    for it), replace them by one summary row; return the ids merged (empty: no backlog).

    ``render`` turns the merged rows' alerts (dicts of their columns, in row order, each with the row's
    ``kind``) into the summary's payload.
    One transaction: the rows are merged and the summary is enqueued, or neither.
    """
    try:
        return _merge(engine, key, held, **kw)
    except _Raced:
        return set()


def _merge(
    engine: Engine,
    key: str,
    held: Sequence[Notification],
    *,
    now: datetime,
    threshold: int,
    render: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> set[int]:
    held_ids = {r.id for r in held if r.id is not None}
    with session_scope(engine) as session:
        raw = Raw.of(session)
        t = Notification.__tablename__
        waiting = raw.select(
            f"SELECT id, target FROM {t} WHERE channel = 'slack' AND status IN ({{mark}}, {{mark}}) "
            f"AND kind NOT IN ({{mark}}, {{mark}}) AND next_attempt_at <= {{mark}} "
            f"AND (lease_until IS NULL OR lease_until < {{mark}}) ORDER BY id",
            [DeliveryStatus.pending.value, DeliveryStatus.failed.value, *sorted(NOT_MERGED), now + HORIZON, now])
        ids = sorted(held_ids | {i for i, target in waiting if key_of(raw.json_of(target)) == key})[:MAX_MERGED]
        if len(ids) <= threshold:
            return set()
        cond, values = raw.in_("id", ids)
        mine, held_values = raw.in_("id", sorted(held_ids)[:MAX_MERGED] or [0])
        # Only rows still waiting — ours, or leased by nobody (another replica may have claimed some since
        # the read; PostgreSQL re-checks this once its lock is released): those are merged.
        merged = raw.select(
            f"UPDATE {t} SET status = {{mark}}, sent_at = {{mark}}, lease_until = NULL, last_error = NULL, "
            f"external_ref = NULL WHERE {cond} AND status IN ({{mark}}, {{mark}}) "
            f"AND (lease_until IS NULL OR lease_until < {{mark}} OR {mine}) "
            f"RETURNING id, alert_id, kind, receiver, target",
            [DeliveryStatus.sent.value, now, *values, DeliveryStatus.pending.value, DeliveryStatus.failed.value,
             now, *held_values])
        if len(merged) <= threshold:
            raise _Raced  # rolled back: the rows go out one by one, paced
        merged.sort()
        alert_ids = sorted({a for _, a, _, _, _ in merged if a is not None})
        alerts: dict[int, dict[str, Any]] = {}
        for chunk in (alert_ids[i:i + 500] for i in range(0, len(alert_ids), 500)):
            cond, values = raw.in_("id", chunk)
            for row in raw.select(f"SELECT {', '.join(_ALERT_COLUMNS)} FROM {Alert.__tablename__} WHERE {cond}",
                                  values):
                alerts[row[0]] = dict(zip(_ALERT_COLUMNS, row, strict=True))
        items = [{**alerts[alert_id], "kind": kind} for _, alert_id, kind, _, _ in merged if alert_id in alerts]
        # The summary is these alerts' first message (time to first message, silences ending).
        firing = sorted({a for _, a, kind, _, _ in merged if kind == Kind.firing.value and a is not None})
        for chunk in (firing[i:i + 500] for i in range(0, len(firing), 500)):
            cond, values = raw.in_("id", chunk)
            raw.select(f"UPDATE {Alert.__tablename__} SET first_notified_at = {{mark}} WHERE {cond} "
                       "AND first_notified_at IS NULL RETURNING id", [now, *values])
        _, _, _, receiver, target = merged[0]
        summary = notification_row(
            alert_id=None, kind=Kind.summary, seq=",".join(str(m[0]) for m in merged),
            target=Target(receiver, "slack", dict(raw.json_of(target) or {})), due=now, now=now,
            payload=render(items))
        summary["target"] = {**summary["target"], "merged": [m[0] for m in merged]}
        raw.insert(Notification.__table__, list(summary), [tuple(summary.values())],
                   conflict="ON CONFLICT (idempotency_key) DO NOTHING")
        return {m[0] for m in merged}


class _Raced(Exception):
    """Fewer rows than the threshold were still waiting when merged: nothing is merged after all."""
