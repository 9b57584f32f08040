"""The lifecycle contract against the database, with the test clock (no sleeps)."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy

from tests.helpers import SF, alerts, notifications, run_worker_once


def post(client, body):
    r = client.post("/v1/events", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def kinds(engine):
    return [(n.kind, n.status) for n in notifications(engine)]


def test_group_wait_delays_the_first_message(make_client, make_settings, clock) -> None:
    client = make_client(make_settings(alerting={"group_wait": "30s"}))
    engine = client.app.state.engine
    post(client, SF)
    assert run_worker_once(client.app) == 0  # not due yet
    clock.advance(seconds=29)
    assert run_worker_once(client.app) == 0
    post(client, SF)
    clock.advance(seconds=1)
    assert run_worker_once(client.app) == 1
    [n] = notifications(engine)
    assert n.status == "sent" and "2 failures" in n.payload["text"]  # rendered at send time: the count is current


def test_resolved_within_group_wait_sends_nothing(make_client, make_settings, clock) -> None:
    client = make_client(make_settings(alerting={"group_wait": "30s"}))
    engine = client.app.state.engine
    post(client, SF)
    post(client, {"integration_id": "sf-prod", "status": "succeeded"})
    clock.advance(minutes=5)
    run_worker_once(client.app)
    assert kinds(engine) == [("firing", "cancelled")]
    assert alerts(engine)[0].state == "resolved"


def test_timed_reminders_every_repeat_interval_until_acknowledged(make_client, make_settings, clock) -> None:
    client = make_client(make_settings(alerting={"repeat_interval": "4h"}))
    engine = client.app.state.engine
    post(client, SF)
    run_worker_once(client.app)
    clock.advance(hours=3, minutes=59)
    for _ in range(20):
        post(client, SF)  # repeats within the interval send nothing
    run_worker_once(client.app)
    assert kinds(engine) == [("firing", "sent")]
    clock.advance(minutes=1)
    run_worker_once(client.app)  # no new event needed: reminders are timed
    assert kinds(engine) == [("firing", "sent"), ("reminder", "sent")]
    clock.advance(hours=4)
    run_worker_once(client.app)
    assert [k for k, _ in kinds(engine)] == ["firing", "reminder", "reminder"]

    alert_id = alerts(engine)[0].id
    r = client.post(f"/v1/alerts/{alert_id}/ack", headers={"X-Alerts-User": "alice"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged" and r.json()["acknowledged_by"] == "alice"
    clock.advance(days=2)
    post(client, SF)
    run_worker_once(client.app)
    assert [k for k, _ in kinds(engine)] == ["firing", "reminder", "reminder"]  # acknowledged: no reminders

    r = client.post(f"/v1/alerts/{alert_id}/resolve")
    assert r.json()["state"] == "resolved"
    run_worker_once(client.app)
    assert kinds(engine)[-1] == ("resolved", "sent")


def test_more_severe_code_sends_updated(client) -> None:
    engine = client.app.state.engine
    post(client, {"integration_id": "hs", "error": "401 Client Error: Unauthorized for url: https://api.hubapi.com/x"})
    run_worker_once(client.app)
    assert alerts(engine)[0].code == "access_token_expired"
    post(client, {"integration_id": "hs", "error": "invalid_grant"})
    [alert] = alerts(engine)
    assert (alert.code, alert.severity, alert.count) == ("invalid_grant", "critical", 2)
    run_worker_once(client.app)
    assert [k for k, _ in kinds(engine)] == ["firing", "updated"]
    post(client, {"integration_id": "hs", "error": "401 Client Error: Unauthorized for url: https://x"})
    assert alerts(engine)[0].code == "invalid_grant"  # never downgraded
    assert [k for k, _ in kinds(engine)] == ["firing", "updated"]


def test_a_worse_error_before_the_first_message_goes_out_is_what_that_message_says(make_client, make_settings, clock,
                                                                                  tmp_path) -> None:
    """Found by a user review: an "updated" went out before the "firing" it updated, then both."""
    client = make_client(make_settings(alerting={"group_wait": "30s"}))
    engine = client.app.state.engine
    post(client, {"integration_id": "hs", "error": "401 Client Error: Unauthorized for url: https://api.hubapi.com/x"})
    post(client, {"integration_id": "hs", "error": "invalid_grant"})  # within group_wait: nothing sent yet
    clock.advance(seconds=31)
    run_worker_once(client.app)
    assert [k for k, _ in kinds(engine)] == ["firing"]
    [sent] = [email.message_from_bytes(p.read_bytes(), policy=policy.default)
              for p in (tmp_path / "outbox").iterdir() if p.suffix == ".eml"]
    assert sent["Subject"].startswith("[FIRING]") and "expired or revoked" in sent["Subject"], sent["Subject"]


def test_event_older_than_resolution_does_not_reopen(client, clock) -> None:
    engine = client.app.state.engine
    post(client, SF)
    run_worker_once(client.app)
    clock.advance(minutes=10)
    post(client, {"integration_id": "sf-prod", "status": "succeeded"})
    late = (clock.now - timedelta(minutes=5)).isoformat()
    post(client, {**SF, "occurred_at": late})
    assert [a.state for a in alerts(engine)] == ["resolved"]
    post(client, SF)  # a fresh failure does open a new incident
    assert [a.state for a in alerts(engine)] == ["resolved", "firing"]


def test_group_by_provider_and_code(make_client, make_settings) -> None:
    client = make_client(make_settings(alerting={"group_by": ["integration_id", "code"]}))
    engine = client.app.state.engine
    post(client, SF)
    post(client, {"integration_id": "sf-prod", "error": "INSUFFICIENT_ACCESS: insufficient_permissions"})
    assert sorted(a.code for a in alerts(engine)) == ["insufficient_permissions", "invalid_grant"]
    post(client, {"integration_id": "sf-prod", "status": "succeeded"})
    assert [a.state for a in alerts(engine)] == ["resolved", "resolved"]  # success resolves the integration


def test_one_open_alert_per_fingerprint_is_enforced_by_the_database(engine) -> None:
    import pytest
    import sqlalchemy as sa
    from sqlmodel import Session

    from alerts.models import utcnow
    from alerts.storage import Alert

    def row(state: str) -> Alert:
        now = utcnow()
        return Alert(fingerprint="fp", integration_id="x", code="invalid_grant", severity="critical", state=state,
                     first_seen=now, last_seen=now, labels={})

    with Session(engine) as s:
        s.add(row("resolved"))
        s.add(row("resolved"))
        s.add(row("firing"))
        s.commit()
    with Session(engine) as s, pytest.raises(sa.exc.IntegrityError):
        s.add(row("acknowledged"))
        s.commit()


def test_a_worse_error_arriving_late_quotes_its_own_error(client, clock) -> None:
    """Found by a user review: the alert became "Authorizing user deactivated" but quoted the session error.
    (Its first_seen stays: an older event may belong to an incident resolved since, so it does not date
    the alert back.)"""
    engine = client.app.state.engine
    post(client, {"integration_id": "sf", "provider": "salesforce", "error": "INVALID_SESSION_ID: Session expired"})
    earlier = (clock.now - timedelta(minutes=10)).isoformat()
    post(client, {"integration_id": "sf", "provider": "salesforce", "occurred_at": earlier,
                  "error": "invalid_grant: inactive user"})
    [alert] = alerts(engine)
    assert alert.code == "user_inactive" and alert.last_error == "invalid_grant: inactive user"
    assert alert.first_seen == clock.now and alert.count == 2


def test_an_escalation_while_the_first_message_is_being_retried_is_announced(make_client, make_settings, clock,
                                                                            tmp_path) -> None:
    """Found by a code review: the first message's text is kept from its first attempt, so once it is due
    an escalation must owe an "updated" even if nothing was sent yet."""
    client = make_client(make_settings(alerting={"group_wait": "30s"}))
    engine = client.app.state.engine
    post(client, {"integration_id": "hs", "error": "401 Client Error: Unauthorized for url: https://api.hubapi.com/x"})
    clock.advance(seconds=31)  # due: the worker may be sending it
    post(client, {"integration_id": "hs", "error": "invalid_grant"})
    assert [k for k, _ in kinds(engine)] == ["firing", "updated"]


def test_a_silence_started_and_ended_within_group_wait_sends_one_firing(make_client, make_settings, clock) -> None:
    """Found by a lifecycle review: the end of the silence owed a second FIRING beside the first, still
    waiting out group_wait."""
    client = make_client(make_settings(alerting={"group_wait": "30s"}))
    engine = client.app.state.engine
    post(client, SF)
    clock.advance(seconds=10)
    r = client.post("/v1/silences", json={"integration": SF["integration_id"], "duration": "1h"})
    assert r.status_code == 201, r.text
    run_worker_once(client.app)
    clock.advance(seconds=10)
    assert client.delete(f"/v1/silences/{r.json()['id']}").status_code in (200, 204)
    run_worker_once(client.app)
    clock.advance(seconds=10)
    run_worker_once(client.app)
    assert [k for k in kinds(engine) if k[1] != "cancelled"] == [("firing", "sent")]


def test_a_group_member_out_of_its_silence_posts_nothing_of_its_own(make_client, make_settings, clock) -> None:
    """Found by a lifecycle review: it posted a top-level FIRING and then reminders beside its lead's."""
    client = make_client(make_settings(alerting={"group_wait": "0s"}, correlation={"window": "2m"}))
    engine = client.app.state.engine
    for iid in ("ga-0", "ga-1"):
        post(client, {"integration_id": iid, "provider": "google", "error": "invalid_grant: Token has been expired",
                      "authorized_by": "alice@example.com"})
    clock.advance(minutes=3)
    run_worker_once(client.app)
    r = client.post("/v1/silences", json={"integration": "ga-1", "duration": "5m"})
    assert r.status_code == 201
    run_worker_once(client.app)
    clock.advance(minutes=6)
    run_worker_once(client.app)
    clock.advance(hours=4, minutes=1)
    run_worker_once(client.app)
    by_alert = {a.id: a.integration_id for a in alerts(engine)}
    sent = [(by_alert[n.alert_id], n.kind) for n in notifications(engine) if n.status == "sent"]
    assert sent == [("ga-0", "firing"), ("ga-0", "reminder")], sent


def test_a_success_older_than_the_latest_failure_resolves_nothing(client, clock) -> None:
    """Found by a lifecycle review: a late-reported success (08:55) resolved a failure seen at 09:10, and
    the next repeat opened a new alert — RESOLVED and FIRING together."""
    start = clock.now
    post(client, SF)
    clock.advance(minutes=10)
    post(client, SF)
    post(client, {"integration_id": SF["integration_id"], "status": "succeeded",
                  "occurred_at": (start - timedelta(minutes=5)).isoformat()})
    [alert] = alerts(client.app.state.engine)
    assert alert.state == "firing" and alert.count == 2
    post(client, {"integration_id": SF["integration_id"], "status": "succeeded"})  # a success reported now
    [alert] = alerts(client.app.state.engine)
    assert alert.state == "resolved"
