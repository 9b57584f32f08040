"""Dedup and lifecycle: pure decisions, time passed in (never read here).

``decide(prev, event, now, policy)`` says what one event does to the alert of its fingerprint;
``reminder_due(alert, now, policy)`` says whether a timed reminder is owed. ``ingest`` and ``worker``
apply the decisions to the database.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from alerts.models import AlertState, EventStatus, Kind, Severity, as_utc


class Action(enum.StrEnum):
    open = "open"  # no open alert: open one, first message after group_wait
    bump = "bump"  # another failure of an open alert: count it
    resolve = "resolve"  # a success: resolve the open alert
    ignore = "ignore"  # nothing to do (success with no open alert, late event, not an auth failure)


class Reason(enum.StrEnum):
    """Why the decision was made; shown in logs and templates."""

    first = "first failure"
    repeat = "repeat within repeat_interval"
    repeat_elapsed = "repeat interval elapsed"
    escalated = "more severe error"
    success = "integration succeeded"
    no_alert = "no open alert"
    late = "event older than the last resolution"
    not_auth = "not an authentication failure"


@dataclass(frozen=True)
class Policy:
    group_wait: timedelta = timedelta(seconds=5)
    repeat_interval: timedelta = timedelta(hours=4)
    send_resolved: bool = True


@dataclass(frozen=True)
class AlertView:
    """What a decision needs to know about the open alert (a snapshot, not the row)."""

    state: AlertState
    severity: Severity
    code: str
    silenced: bool = False
    last_notified_at: datetime | None = None
    told: bool = True  # its first message went out or is due (an escalation before then changes what it says)
    delivered: bool = True  # its first message arrived somewhere: only then can a reminder follow it


@dataclass(frozen=True)
class EventView:
    status: EventStatus
    code: str | None  # catalog code, None when not an auth failure
    severity: Severity | None
    occurred_at: datetime


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: Reason
    notify: Kind | None = None  # message to enqueue now (firing is due at now + group_wait)
    escalate: bool = False  # take the event's code and severity


def decide(
    prev: AlertView | None,
    event: EventView,
    *,
    now: datetime,
    policy: Policy,
    last_resolved_at: datetime | None = None,
) -> Decision:
    """What one event does to its fingerprint's open alert (``prev``; ``None`` when there is none)."""
    if last_resolved_at is not None and as_utc(event.occurred_at) < as_utc(last_resolved_at) and prev is None:
        return Decision(Action.ignore, Reason.late)
    if event.status == EventStatus.succeeded:
        if prev is None:
            return Decision(Action.ignore, Reason.no_alert)
        notify = Kind.resolved if policy.send_resolved and not prev.silenced else None
        return Decision(Action.resolve, Reason.success, notify=notify)
    if event.code is None or event.severity is None:
        return Decision(Action.ignore, Reason.not_auth)
    if prev is None:
        return Decision(Action.open, Reason.first, notify=Kind.firing)
    if event.severity.rank > prev.severity.rank:
        # While the first message waits out group_wait there is nothing to update: that message says what
        # the alert is when it goes (an "updated" would arrive before the "firing" it updates).
        return Decision(
            Action.bump, Reason.escalated, notify=Kind.updated if prev.told and not prev.silenced else None,
            escalate=True,
        )
    if reminder_due(prev, now=now, policy=policy):
        return Decision(Action.bump, Reason.repeat_elapsed, notify=Kind.reminder)
    return Decision(Action.bump, Reason.repeat)


def reminder_due(alert: AlertView, *, now: datetime, policy: Policy) -> bool:
    """A firing alert that is neither acknowledged nor silenced is reminded every ``repeat_interval``."""
    if alert.state != AlertState.firing or alert.silenced or alert.last_notified_at is None or not alert.delivered:
        return False  # a reminder of a first message still being retried would arrive with it, or before it
    return as_utc(now) - as_utc(alert.last_notified_at) >= policy.repeat_interval


def fingerprint(
    group_by: Sequence[str],
    *,
    integration_id: str,
    provider: str | None = None,
    code: str | None = None,
    account_id: str | None = None,
    auth_method: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """A stable hash of the ``group_by`` values (default: one alert per integration)."""
    values = {
        "integration_id": integration_id,
        "provider": provider or "",
        "code": code or "",
        "account_id": account_id or "",
        "auth_method": auth_method or "",
    }
    parts = []
    for key in group_by:
        if key.startswith("labels."):
            parts.append(f"{key}={(labels or {}).get(key[7:], '')}")
        else:
            parts.append(f"{key}={values[key]}")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
