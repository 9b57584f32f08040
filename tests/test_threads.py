"""Threads of an alert's messages, per channel, when its first FIRING was cancelled (a silence), died, or is
still being retried; and reminders owed while a channel is down. End to end: events in through the API,
messages out to the local Slack Web API server and aiosmtpd, driven by the test clock, one tick at a time."""

# ruff: noqa: F811 - the slack and smtp fixtures come from tests.test_delivery, tests name them as arguments
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from alerts import outbox
from tests.conftest import Clock
from tests.helpers import SF, alerts, notifications, run_worker_once
from tests.peers.slack import TOKEN, Canned, SlackPeer
from tests.peers.smtp import SmtpPeer
from tests.test_delivery import slack, smtp  # noqa: F401 - the delivery tests' peers

ONCALL = "oncall@example.com"
HS_401 = {"integration_id": "hs", "provider": "hubspot",
          "error": "401 Client Error: Unauthorized for url: https://api.hubapi.com/x"}  # access_token_expired
HS_GRANT = {"integration_id": "hs", "provider": "hubspot", "error": "invalid_grant"}  # more severe: "updated"


@pytest.fixture
def make(make_client, make_settings, slack: SlackPeer, smtp: SmtpPeer):
    def build(*, repeat_interval: str = "4h", **sections: Any):
        client = make_client(make_settings(
            slack={"bot_token": TOKEN, "base_url": slack.base_url, "allow_loopback_base_url": True},
            email={"host": "127.0.0.1", "port": smtp.port, "starttls": False, "from_addr": "alerts@example.com",
                   "timeout": "5s"},
            receivers=[{"name": "data-team", "slack": {"channel": "#data-alerts"}, "email": {"to": [ONCALL]}}],
            alerting={"group_wait": "0s", "repeat_interval": repeat_interval},
            **sections,
        ))
        return client, client.app.state.engine

    return build


def post(client, body) -> None:
    r = client.post("/v1/events", json=body)
    assert r.status_code == 202, r.text


def tick(client) -> int:
    return run_worker_once(client.app)


def label(message: dict[str, Any]) -> str:
    return message["text"].split(":")[0]


def slack_down(slack: SlackPeer) -> None:
    slack.script("chat.postMessage", *[Canned(status=503, body={"ok": False}) for _ in range(500)])


def slack_up(slack: SlackPeer) -> None:
    slack.unscript("chat.postMessage")


def slack_rows(engine) -> list[tuple[str, str]]:
    return [(n.kind, n.status) for n in notifications(engine, channel="slack")]


# -- 1. the thread's root is the first message that was actually sent --------------------------------------


def test_after_a_silence_cancelled_the_first_firing_replies_thread_onto_the_firing_that_was_sent(
        make, slack: SlackPeer, smtp: SmtpPeer, clock: Clock) -> None:
    client, engine = make()
    post(client, SF)
    r = client.post("/v1/silences", json={"integration": SF["integration_id"], "duration": "1h"})
    assert r.status_code == 201, r.text
    tick(client)  # the FIRING was due, but the alert is silenced: cancelled, never sent
    assert slack_rows(engine) == [("firing", "cancelled")] and slack.messages == [] and smtp.messages == []

    clock.advance(hours=1, minutes=1)  # the silence ended, still firing: its first message now
    tick(client)
    [root] = slack.top_level()
    assert label(root) == "FIRING"

    clock.advance(hours=4, minutes=1)
    tick(client)
    post(client, {"integration_id": SF["integration_id"], "status": "succeeded"})
    tick(client)

    assert slack.top_level() == [root], [label(m) for m in slack.messages]  # nothing became a top-level post
    assert [label(m) for m in slack.replies(root["ts"])] == ["STILL FIRING", "RESOLVED"]
    [update] = slack.calls("chat.update")  # the original message says RESOLVED
    assert json.loads(update.body)["ts"] == root["ts"] and label(root) == "RESOLVED"
    first = smtp.messages[0].message
    assert [m.message["In-Reply-To"] for m in smtp.messages[1:]] == [first["Message-ID"]] * 2


def test_an_alert_whose_firing_was_never_sent_speaks_first_with_a_firing_style_post(
        make, slack: SlackPeer, smtp: SmtpPeer, clock: Clock) -> None:
    """A silence cancelled its FIRING; it was acknowledged meanwhile, so its silence ending sends nothing. A more
    severe error then sends the first message anyone sees: it must not be a reply (or an UPDATED) to nothing."""
    client, engine = make()
    post(client, HS_401)
    r = client.post("/v1/silences", json={"integration": "hs", "duration": "1h"})
    assert r.status_code == 201, r.text
    tick(client)
    [alert] = alerts(engine)
    assert client.post(f"/v1/alerts/{alert.id}/ack").status_code == 200
    clock.advance(hours=1, minutes=1)
    tick(client)
    assert slack.messages == [] and smtp.messages == []

    post(client, HS_GRANT)
    tick(client)
    [root] = slack.top_level()
    assert label(root) == "FIRING" and root["thread_ts"] is None, label(root)
    [mail] = smtp.messages
    assert mail.message["Subject"].startswith("[FIRING]") and mail.message["In-Reply-To"] is None

    r = client.post(f"/v1/alerts/{alert.id}/resolve")
    assert r.status_code == 200, r.text
    tick(client)  # whoever saw the alert hears that it is fixed, in the thread of what they saw
    assert slack.top_level() == [root] and label(root) == "RESOLVED"
    assert [label(m) for m in slack.replies(root["ts"])] == ["RESOLVED"]
    assert smtp.messages[-1].message["In-Reply-To"] == mail.message["Message-ID"]


def test_a_channel_whose_firing_died_gets_a_firing_style_post_that_later_messages_reply_to(
        make, slack: SlackPeer, smtp: SmtpPeer, clock: Clock) -> None:
    client, engine = make()
    slack.script("chat.postMessage", Canned(body={"ok": False, "error": "channel_not_found"}))  # fixed since
    post(client, SF)
    tick(client)
    assert slack_rows(engine) == [("firing", "dead")] and len(smtp.messages) == 1

    clock.advance(hours=4, minutes=1)
    tick(client)
    [root] = slack.top_level()
    assert label(root) == "FIRING", label(root)  # not a STILL FIRING about a message nobody saw
    clock.advance(hours=4, minutes=1)
    tick(client)
    post(client, {"integration_id": SF["integration_id"], "status": "succeeded"})
    tick(client)
    assert slack.top_level() == [root] and label(root) == "RESOLVED"
    assert [label(m) for m in slack.replies(root["ts"])] == ["STILL FIRING", "RESOLVED"]


# -- 2. per channel, nothing follows before that channel's FIRING was delivered ------------------------------


def test_an_updated_does_not_go_out_before_its_channels_firing_still_in_retry(make, slack: SlackPeer,
                                                                              smtp: SmtpPeer, clock: Clock) -> None:
    client, engine = make()
    slack.script("chat.postMessage", Canned(status=500, body={"ok": False}))
    post(client, HS_401)
    tick(client)
    assert slack_rows(engine) == [("firing", "failed")] and len(smtp.messages) == 1  # email delivered
    post(client, HS_GRANT)
    tick(client)  # the UPDATED is due now; Slack's FIRING only after its backoff
    for _ in range(3):
        clock.advance(minutes=1)
        tick(client)
    [root] = slack.top_level()
    assert label(root) == "FIRING", [label(m) for m in slack.messages]
    assert [label(m) for m in slack.replies(root["ts"])] == ["UPDATED"]
    assert [m.message["X-Alerts-Kind"] for m in smtp.messages] == ["firing", "updated"]


def test_a_reminder_does_not_go_out_before_its_channels_firing_still_in_retry(make, slack: SlackPeer,
                                                                               smtp: SmtpPeer, clock: Clock,
                                                                               monkeypatch) -> None:
    """Slack is down for hours while email delivered the FIRING: reminders are owed (once any channel
    delivered). Slack's reminder must not arrive on its own, before Slack's FIRING."""
    monkeypatch.setattr(outbox, "backoff", lambda attempts, **kw: timedelta(minutes=45))  # no jitter: repeatable
    client, engine = make()
    slack.script("chat.postMessage", *[Canned(status=503, body={"ok": False}) for _ in range(5)])
    post(client, SF)
    tick(client)
    for _ in range(4):  # 1h .. 4h: Slack's FIRING fails five times in all; the reminders are owed at 4h
        clock.advance(hours=1)
        tick(client)
    clock.advance(minutes=1)  # Slack answers again; its FIRING waits out its backoff (45 min)
    tick(client)
    clock.advance(hours=1)
    tick(client)
    assert [m.message["X-Alerts-Kind"] for m in smtp.messages] == ["firing", "reminder"]
    top = slack.top_level()
    assert top and label(top[0]) == "FIRING", [label(m) for m in slack.messages]
    assert len(top) == 1 and all(m["thread_ts"] == top[0]["ts"] for m in slack.messages[1:])
    assert ("firing", "sent") in slack_rows(engine)


# -- 3. at most one reminder owed per alert and channel ----------------------------------------------------


def test_reminders_owed_during_an_outage_arrive_as_one(make, slack: SlackPeer, smtp: SmtpPeer,
                                                       clock: Clock) -> None:
    client, engine = make(repeat_interval="1h")
    post(client, SF)
    tick(client)
    [root] = slack.top_level()
    slack_down(slack)
    for _ in range(10):  # 3 h 20 min down: reminders owed at 1h, 2h and 3h; email delivers each
        clock.advance(minutes=20)
        tick(client)
    assert [m.message["X-Alerts-Kind"] for m in smtp.messages] == ["firing", "reminder", "reminder", "reminder"]
    assert slack.replies(root["ts"]) == []
    slack_up(slack)
    clock.advance(minutes=61)  # every retry is due (backoff is capped at 1 h)
    tick(client)
    assert [label(m) for m in slack.replies(root["ts"])] == ["STILL FIRING"]
    reminders = [s for k, s in slack_rows(engine) if k == "reminder"]
    assert reminders.count("sent") == 1 and set(reminders) <= {"sent", "cancelled"}, reminders
