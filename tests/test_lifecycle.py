"""The lifecycle contract as a table over the pure decision function (no database, no sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.lifecycle import Action, AlertView, EventView, Policy, Reason, decide, fingerprint, reminder_due
from alerts.models import AlertState, EventStatus, Kind, Severity

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
POLICY = Policy(group_wait=timedelta(seconds=30), repeat_interval=timedelta(hours=4))


def fail(code: str = "invalid_grant", sev: Severity = Severity.critical, at: datetime = NOW) -> EventView:
    return EventView(EventStatus.failed, code, sev, at)


def ok(at: datetime = NOW) -> EventView:
    return EventView(EventStatus.succeeded, None, None, at)


def firing(sev: Severity = Severity.critical, last: datetime | None = NOW, **kw) -> AlertView:
    return AlertView(state=kw.pop("state", AlertState.firing), severity=sev, code="invalid_grant",
                     last_notified_at=last, **kw)


@pytest.mark.parametrize(
    ("prev", "event", "kwargs", "action", "reason", "notify"),
    [
        pytest.param(None, fail(), {}, Action.open, Reason.first, Kind.firing, id="first failure opens"),
        pytest.param(firing(), fail(), {}, Action.bump, Reason.repeat, None, id="repeat is counted, not sent"),
        pytest.param(firing(last=NOW - timedelta(hours=4)), fail(), {}, Action.bump, Reason.repeat_elapsed,
                     Kind.reminder, id="repeat after repeat_interval reminds"),
        pytest.param(firing(Severity.error), fail(), {}, Action.bump, Reason.escalated, Kind.updated,
                     id="more severe code sends updated"),
        pytest.param(firing(Severity.error, told=False), fail(), {}, Action.bump, Reason.escalated, None,
                     id="more severe code before the first message changes that message"),
        pytest.param(firing(Severity.critical), fail("access_token_expired", Severity.error), {}, Action.bump,
                     Reason.repeat, None, id="less severe code is only counted"),
        pytest.param(firing(), ok(), {}, Action.resolve, Reason.success, Kind.resolved, id="success resolves"),
        pytest.param(None, ok(), {}, Action.ignore, Reason.no_alert, None, id="success with nothing open"),
        pytest.param(None, fail(at=NOW - timedelta(hours=1)), {"last_resolved_at": NOW - timedelta(minutes=5)},
                     Action.ignore, Reason.late, None, id="late event does not reopen"),
        pytest.param(None, fail(at=NOW), {"last_resolved_at": NOW - timedelta(minutes=5)}, Action.open,
                     Reason.first, Kind.firing, id="new failure after resolution reopens"),
        pytest.param(None, EventView(EventStatus.failed, None, None, NOW), {}, Action.ignore, Reason.not_auth, None,
                     id="not an auth failure"),
        pytest.param(firing(state=AlertState.acknowledged, last=NOW - timedelta(days=1)), fail(), {}, Action.bump,
                     Reason.repeat, None, id="acknowledged gets no reminder"),
        pytest.param(firing(last=NOW - timedelta(days=1), silenced=True), fail(), {}, Action.bump, Reason.repeat,
                     None, id="silenced gets no reminder"),
        pytest.param(firing(silenced=True), ok(), {}, Action.resolve, Reason.success, None,
                     id="silenced resolves quietly"),
    ],
)
def test_decide(prev, event, kwargs, action, reason, notify) -> None:
    d = decide(prev, event, now=NOW, policy=POLICY, **kwargs)
    assert (d.action, d.reason, d.notify) == (action, reason, notify)


def test_no_resolved_message_when_send_resolved_is_off() -> None:
    d = decide(firing(), ok(), now=NOW, policy=Policy(send_resolved=False))
    assert d.action == Action.resolve and d.notify is None


@pytest.mark.parametrize(
    ("alert", "elapsed", "due"),
    [
        pytest.param(firing(), timedelta(hours=3, minutes=59), False, id="before interval"),
        pytest.param(firing(), timedelta(hours=4), True, id="at interval"),
        pytest.param(firing(state=AlertState.acknowledged), timedelta(days=2), False, id="acknowledged"),
        pytest.param(firing(silenced=True), timedelta(days=2), False, id="silenced"),
        pytest.param(firing(state=AlertState.resolved), timedelta(days=2), False, id="resolved"),
    ],
)
def test_reminder_due_is_timed(alert, elapsed, due) -> None:
    assert reminder_due(alert, now=NOW + elapsed, policy=POLICY) is due


def test_fingerprint_groups_by_configured_keys() -> None:
    a = fingerprint(["integration_id"], integration_id="sf", code="invalid_grant")
    b = fingerprint(["integration_id"], integration_id="sf", code="invalid_api_key")
    c = fingerprint(["integration_id", "code"], integration_id="sf", code="invalid_api_key")
    d = fingerprint(["integration_id", "labels.env"], integration_id="sf", labels={"env": "prod"})
    e = fingerprint(["integration_id", "labels.env"], integration_id="sf", labels={"env": "dev"})
    assert a == b != c
    assert d != e
