"""Delivery end to end: events in through the API, messages out to a local Slack Web API server and an
in-process SMTP server, driven by the test clock and one worker tick at a time (no sleeps)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alerts.cli import app as cli_app
from tests.conftest import Clock
from tests.helpers import SF, alerts, notifications, run_worker_once
from tests.peers.slack import TOKEN, Canned, SlackPeer
from tests.peers.smtp import DROP, SmtpPeer

ONCALL = "oncall@example.com"
ADMIN = "ops@example.com"
LINK = "https://etl.example.com/connections/sf-prod/reauthorize"


@pytest.fixture
def slack(clock: Clock) -> Iterator[SlackPeer]:
    peer = SlackPeer(clock=clock).start()
    yield peer
    peer.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpPeer]:
    peer = SmtpPeer().start()
    yield peer
    peer.stop()


def config(slack: SlackPeer, smtp: SmtpPeer, *, channel: str = "#data-alerts", to: list[str] | None = None,
           admin: str | None = None) -> dict[str, Any]:
    return {
        "slack": {"bot_token": TOKEN, "base_url": slack.base_url, "allow_loopback_base_url": True},
        "email": {"host": "127.0.0.1", "port": smtp.port, "starttls": False, "from_addr": "alerts@example.com",
                  "timeout": "5s", **({"admin": admin} if admin else {})},
        "receivers": [{"name": "data-team", "slack": {"channel": channel}, "email": {"to": to or [ONCALL]}}],
        "links": {"reauthorize": "https://etl.example.com/connections/{integration_id}/reauthorize"},
        "alerting": {"group_wait": "0s", "repeat_interval": "4h"},
    }


@pytest.fixture
def make(make_client, make_settings, slack, smtp):
    def build(**kw: Any):
        client = make_client(make_settings(**config(slack, smtp, **kw)))
        return client, client.app.state.engine

    return build


def post(client, body) -> dict:
    r = client.post("/v1/events", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def tick(client) -> int:
    return run_worker_once(client.app)


def rows(engine, channel: str | None = None) -> list[tuple[str, str, str]]:
    return [(n.channel, n.kind, n.status) for n in notifications(engine) if channel in (None, n.channel)]


def test_one_message_per_channel_repeats_reminder_and_resolution(make, slack: SlackPeer, smtp: SmtpPeer,
                                                                  clock: Clock) -> None:
    client, engine = make()
    post(client, SF)
    tick(client)

    # firing: exactly one Slack message and one email, both with the reauthorize link
    [root] = slack.messages
    assert root["channel"] == slack.channel_id("data-alerts") and root["thread_ts"] is None
    [button] = [e for b in root["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert button["url"] == LINK and button["text"]["text"] == "Reauthorize"
    [first] = smtp.messages
    assert first.rcpt_tos == [ONCALL]
    mail = first.message
    assert mail["Subject"].startswith("[FIRING] sf-prod (Salesforce): ")
    assert LINK in mail.get_body(("plain",)).get_content() and f'href="{LINK}"' in mail.get_body(("html",)).get_content()
    root_id = mail["Message-ID"]

    # 20 repeats: counted, not sent
    for _ in range(20):
        post(client, SF)
    clock.advance(hours=3, minutes=59)
    tick(client)
    assert len(slack.messages) == 1 and len(smtp.messages) == 1
    assert alerts(engine)[0].count == 21

    # after repeat_interval: one reminder, in the thread / replying to the first email
    clock.advance(minutes=1)
    tick(client)
    tick(client)
    [reminder] = slack.replies(root["ts"])
    assert reminder["text"].startswith("STILL FIRING") and reminder["channel"] == root["channel"]
    assert len(slack.top_level()) == 1
    assert len(smtp.messages) == 2
    assert smtp.messages[1].message["In-Reply-To"] == root_id and smtp.messages[1].message["References"] == root_id

    # success: the original Slack message is updated in place plus a thread reply; a resolved email in the thread
    post(client, {"integration_id": "sf-prod", "status": "succeeded"})
    tick(client)
    [update] = slack.calls("chat.update")
    assert json.loads(update.body)["ts"] == root["ts"]
    assert slack.top_level()[0]["text"].startswith("RESOLVED") and slack.top_level()[0]["edits"]
    assert [m["text"].split(":")[0] for m in slack.replies(root["ts"])] == ["STILL FIRING", "RESOLVED"]
    resolved = smtp.messages[2].message
    assert resolved["Subject"].startswith("[RESOLVED] ") and resolved["In-Reply-To"] == root_id
    assert len({m.message["Message-ID"] for m in smtp.messages}) == 3

    assert rows(engine) == [("slack", "firing", "sent"), ("email", "firing", "sent"),
                            ("slack", "reminder", "sent"), ("email", "reminder", "sent"),
                            ("slack", "resolved", "sent"), ("email", "resolved", "sent")]
    slack_refs = [n.external_ref for n in notifications(engine) if n.channel == "slack"]
    assert slack_refs[0] == f"{root['channel']}:{root['ts']}"
    clock.advance(days=3)
    tick(client)
    assert len(slack.calls("chat.postMessage")) == 3 and len(smtp.messages) == 3  # nothing sent twice


def test_slack_429_is_retried_after_retry_after_by_the_clock(make, slack: SlackPeer, clock: Clock) -> None:
    client, engine = make()
    slack.script("chat.postMessage", Canned(status=429, body={"ok": False, "error": "ratelimited"},
                                            headers={"Retry-After": "2"}))
    post(client, SF)
    start = clock.now
    tick(client)
    [row] = notifications(engine, channel="slack")
    assert (row.status, row.attempts) == ("failed", 0)  # not counted as an attempt
    assert row.next_attempt_at == start + timedelta(seconds=2)
    clock.advance(seconds=1)
    tick(client)
    assert len(slack.calls("chat.postMessage")) == 1  # not before Retry-After
    clock.advance(seconds=1)
    tick(client)
    [row] = notifications(engine, channel="slack")
    assert (row.status, row.attempts) == ("sent", 1)
    assert len(slack.calls("chat.postMessage")) == 2 and len(slack.messages) == 1


def test_a_channel_rate_limited_until_max_age_gives_up_like_any_failure(make_client, make_settings, slack: SlackPeer,
                                                                        smtp: SmtpPeer, clock: Clock) -> None:
    """429s are not attempts, but they do not keep a row alive for ever: at max_age it is dead (R2.5),
    and the admin hears of it."""
    client = make_client(make_settings(**config(slack, smtp, admin=ADMIN), outbox={"max_age": "2m"}))
    engine = client.app.state.engine
    slack.script("chat.postMessage", *[Canned(status=429, body={"ok": False, "error": "ratelimited"},
                                              headers={"Retry-After": "30"}) for _ in range(20)])
    post(client, SF)
    for _ in range(5):
        tick(client)
        clock.advance(seconds=31)
    [row] = notifications(engine, channel="slack")
    assert row.status == "dead" and row.attempts == 1, (row.status, row.last_error)  # the rest were waits
    assert "429" in row.last_error
    tick(client)
    assert any(m.message["Subject"].startswith("[UNDELIVERED]") for m in smtp.messages)
    assert len(slack.calls("chat.postMessage")) == 5


def test_a_slow_mail_server_does_not_hold_up_slack_for_new_events(make, slack: SlackPeer, smtp: SmtpPeer) -> None:
    """While one email takes seconds to be accepted, an event that comes in meanwhile gets its Slack
    message at once: sends are topped up as they finish, not claimed in rounds that wait for the slowest."""
    import threading
    import time

    client, engine = make()
    smtp.delay = 4.0
    post(client, SF)
    worker = threading.Thread(target=tick, args=(client,))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(slack.messages) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        post(client, {**SF, "integration_id": "hs-prod", "provider": "hubspot"})
        while len(slack.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(slack.messages) == 2 and smtp.messages == [], "the second Slack message waited for the first email"
    finally:
        worker.join(30)
    assert len(smtp.messages) == 2
    assert sorted(s for _, _, s in rows(engine)) == ["sent"] * 4


def test_a_slack_row_waits_for_its_alerts_slack_row_in_flight(make, slack: SlackPeer, smtp: SmtpPeer,
                                                            clock: Clock) -> None:
    """The firing post is slow; the alert resolves meanwhile. The resolution is not sent beside it (it
    would have no thread to go to) but after it: as a reply in the firing message's thread."""
    import threading
    import time

    client, engine = make()
    slack.script("chat.postMessage", Canned(apply=True, delay=3.0))
    post(client, SF)
    worker = threading.Thread(target=tick, args=(client,))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not slack.calls("chat.postMessage") and time.monotonic() < deadline:
            time.sleep(0.05)
        post(client, {"integration_id": "sf-prod", "status": "succeeded"})
    finally:
        worker.join(30)
    clock.advance(seconds=2)
    tick(client)
    [root] = slack.top_level()
    assert [m["text"].split(":")[0] for m in slack.replies(root["ts"])] == ["RESOLVED"]
    assert sorted(s for _, _, s in rows(engine)) == ["sent"] * 4


def test_later_emails_reply_to_the_first_one_as_it_was_sent(make, smtp: SmtpPeer, clock: Clock) -> None:
    """The thread's root is the first email's Message-ID as stored when it went out — an alert opened
    before an upgrade that changed how Message-IDs are made keeps its thread."""
    import sqlalchemy as sa

    client, engine = make()
    post(client, SF)
    tick(client)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE notification SET external_ref = '<alert-1.legacy@example.com>' "
                             "WHERE channel = 'email' AND kind = 'firing'"))
    clock.advance(hours=5)
    tick(client)
    reminder = smtp.messages[-1].message
    assert reminder["X-Alerts-Kind"] == "reminder"
    assert reminder["In-Reply-To"] == "<alert-1.legacy@example.com>" == reminder["References"]


def test_channel_not_found_is_dead_at_once_visible_logged_once_and_falls_back_to_admin(
    make, slack: SlackPeer, smtp: SmtpPeer, clock: Clock, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    slack.unknown_channels.add("nowhere")
    client, engine = make(channel="#nowhere", admin=ADMIN)
    caplog.set_level(logging.INFO, logger="alerts.worker")
    post(client, SF)
    tick(client)
    for _ in range(3):
        clock.advance(hours=1)
        tick(client)
    [dead] = [n for n in notifications(engine, channel="slack") if n.kind == "firing"]
    assert (dead.status, dead.attempts) == ("dead", 1) and "channel_not_found" in dead.last_error
    assert len([r for r in slack.calls("chat.postMessage") if json.loads(r.body)["channel"] == "#nowhere"]) == 1

    # logged once, as an error
    dead_logs = [r for r in caplog.records if r.getMessage() == "notification dead"
                 and getattr(r, "notification_id", None) == dead.id]
    assert len(dead_logs) == 1 and dead_logs[0].levelno == logging.ERROR

    # the admin gets it by email, saying why
    [fallback] = [m for m in smtp.messages if m.rcpt_tos == [ADMIN]]
    msg = fallback.message
    assert msg["Subject"].startswith("[UNDELIVERED] [FIRING]")
    assert "channel_not_found" in msg.get_body(("plain",)).get_content()
    assert [m.rcpt_tos for m in smtp.messages].count([ONCALL]) == 1  # the receiver's own email went out normally

    # visible in the API and in `alerts list --json`
    alert_id = alerts(engine)[0].id
    detail = client.get(f"/v1/alerts/{alert_id}").json()
    assert {(n["channel"], n["status"]) for n in detail["notifications"]} >= {("slack", "dead"), ("email", "sent")}
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/alerts.db"\n')
    res = CliRunner().invoke(cli_app, ["list", "--json", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    [line] = [json.loads(x) for x in res.output.splitlines() if x.strip()]
    assert line["delivery"]["dead"] == 1
    assert line["dead_letters"][0]["channel"] == "slack" and "channel_not_found" in line["dead_letters"][0]["last_error"]
    res = CliRunner().invoke(cli_app, ["list", "--config", str(cfg)])
    assert res.exit_code == 0 and "1 dead" in res.output


def test_smtp_451_then_accept_delivers_on_retry(make, smtp: SmtpPeer, clock: Clock) -> None:
    client, engine = make()
    smtp.script_rcpt(ONCALL, "451 4.7.1 greylisted, try again")
    post(client, SF)
    tick(client)
    [row] = notifications(engine, channel="email")
    assert row.status == "failed" and "451" in row.last_error and smtp.messages == []
    clock.now = row.next_attempt_at
    tick(client)
    [row] = notifications(engine, channel="email")
    assert (row.status, row.attempts) == ("sent", 2)
    [got] = smtp.messages
    assert got.rcpt_tos == [ONCALL] and got.message["Message-ID"] == row.external_ref


def test_a_disconnect_after_data_retries_with_the_same_message_id(make, smtp: SmtpPeer, clock: Clock) -> None:
    client, engine = make()
    smtp.data.append(DROP)
    post(client, SF)
    tick(client)
    [row] = notifications(engine, channel="email")
    assert row.status == "failed"
    clock.now = row.next_attempt_at
    tick(client)
    assert smtp.dropped[0].message["Message-ID"] == smtp.messages[0].message["Message-ID"]


def test_refusals_are_handled_per_recipient(make, smtp: SmtpPeer, clock: Clock) -> None:
    client, engine = make(to=["ok@example.com", "later@example.com", "gone@example.com"])
    smtp.script_rcpt("later@example.com", "452 4.2.2 mailbox full")
    smtp.script_rcpt("gone@example.com", "550 5.1.1 no such user")
    post(client, SF)
    tick(client)
    by_status = {n.status: n for n in notifications(engine, channel="email")}
    assert by_status["sent"].target["to"] == ["ok@example.com"]
    assert by_status["failed"].target["to"] == ["later@example.com"]
    assert by_status["dead"].target["to"] == ["gone@example.com"] and "550" in by_status["dead"].last_error
    clock.now = by_status["failed"].next_attempt_at
    tick(client)
    assert sorted(n.status for n in notifications(engine, channel="email")) == ["dead", "sent", "sent"]
    assert [m.rcpt_tos for m in smtp.messages] == [["ok@example.com"], ["later@example.com"]]
    ids = {m.message["Message-ID"] for m in smtp.messages}
    assert len(ids) == 1  # the retry to one recipient is the same message


def test_hostile_input_arrives_harmless_in_both_channels(make, slack: SlackPeer, smtp: SmtpPeer) -> None:
    client, _ = make()
    post(client, {"integration_id": "sf-prod", "integration_name": "<!channel> prod", "provider": "salesforce",
                  "error": "invalid_grant <script>alert(1)</script>\r\nBcc: x@y <@U024BE7LH> <!here>"})
    tick(client)

    [req] = slack.calls("chat.postMessage")
    raw = req.body.decode()
    for bad in ("<!channel>", "<!here>", "<@U024BE7LH>", "<script>"):
        assert bad not in raw
    body = json.loads(req.body)
    texts = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                (texts.append(x) if k == "text" and isinstance(x, str) else walk(x))
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(body)
    for t in texts:  # every text field: only our own dashboard link may use < >
        assert "<" not in t.split("<http://127.0.0.1")[0].replace("&lt;", "")
    assert "&lt;!channel&gt; prod" in body["text"] and "&lt;!channel&gt; prod" in body["blocks"][0]["text"]["text"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw

    [got] = smtp.messages
    assert got.rcpt_tos == [ONCALL]
    head = got.data.split(b"\r\n\r\n", 1)[0].decode()
    names = [line.split(":", 1)[0] for line in head.split("\r\n") if line and not line[0].isspace()]
    assert "Bcc" not in names and len(names) == len(set(names))
    msg = got.message
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html and "&lt;!channel&gt;" in html
    assert "<script>alert(1)</script>" in text and "<!channel> prod" in text
    assert "\nBcc:" not in text


def test_a_restart_resumes_pending_rows(make_client, make_settings, slack: SlackPeer, smtp: SmtpPeer,
                                        clock: Clock) -> None:
    settings = make_settings(**config(slack, smtp))
    first = make_client(settings)
    slack.script("chat.postMessage", Canned(status=503, body={"ok": False}))
    post(first, SF)
    tick(first)
    [row] = notifications(first.app.state.engine, channel="slack")
    assert row.status == "failed"
    second = make_client(settings)  # another process on the same database
    clock.now = row.next_attempt_at
    tick(second)
    assert [n.status for n in notifications(second.app.state.engine, channel="slack")] == ["sent"]
    assert len(slack.messages) == 1


def test_test_notify_sends_a_sample_through_the_real_channels(slack: SlackPeer, smtp: SmtpPeer,
                                                              tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[database]
url = "sqlite:///{tmp_path}/t.db"
[slack]
bot_token = "{TOKEN}"
base_url = "{slack.base_url}"
allow_loopback_base_url = true
[email]
host = "127.0.0.1"
port = {smtp.port}
starttls = false
from_addr = "alerts@example.com"
[[receivers]]
name = "data-team"
slack = {{ channel = "#alerts-test" }}
email = {{ to = ["{ONCALL}"] }}
[[receivers]]
name = "broken"
slack = {{ channel = "#nowhere" }}
""")
    slack.unknown_channels.add("nowhere")
    runner = CliRunner()
    res = runner.invoke(cli_app, ["test-notify", "data-team", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "sent slack #alerts-test" in res.output and f"sent email {ONCALL}" in res.output
    [msg] = slack.messages
    assert msg["text"].startswith("TEST: Salesforce (prod)")
    assert smtp.messages[0].message["Subject"].startswith("[TEST] Salesforce (prod)")

    res = runner.invoke(cli_app, ["test-notify", "broken", "--config", str(cfg)])
    assert res.exit_code == 1 and "channel_not_found" in res.output and "permanent" in res.output
    res = runner.invoke(cli_app, ["test-notify", "nobody", "--config", str(cfg)])
    assert res.exit_code == 2 and "no receiver 'nobody'" in res.output


def test_dead_notification_can_be_requeued(make, slack: SlackPeer, smtp: SmtpPeer, tmp_path) -> None:
    client, engine = make()
    slack.script("chat.postMessage", Canned(body={"ok": False, "error": "channel_not_found"}))
    post(client, SF)
    tick(client)
    dead = [n for n in notifications(engine) if n.channel == "slack"]
    assert [n.status for n in dead] == ["dead"]
    assert client.post("/v1/notifications/999/requeue").status_code == 409
    r = client.post(f"/v1/notifications/{dead[0].id}/requeue")
    assert r.status_code == 200 and r.json()["status"] == "pending"
    tick(client)
    assert [n.status for n in notifications(engine) if n.channel == "slack"][0] == "sent"
    assert len(slack.top_level()) == 1


def test_after_a_long_outage_every_dead_notification_is_requeued_at_once(make, slack: SlackPeer, smtp: SmtpPeer,
                                                                         clock: Clock, tmp_path: Path) -> None:
    clock.now = datetime.now(UTC)  # the CLI reads the real clock
    client, engine = make()
    slack.script("chat.postMessage", *[Canned(body={"ok": False, "error": "channel_not_found"})] * 2)
    post(client, SF)
    post(client, {**SF, "integration_id": "hubspot-main", "provider": "hubspot"})
    tick(client)
    assert sorted(rows(engine)) == [("email", "firing", "sent")] * 2 + [("slack", "firing", "dead")] * 2
    cfg = tmp_path / "cli.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/alerts.db"\n')
    runner = CliRunner()
    res = runner.invoke(cli_app, ["requeue", "--config", str(cfg)])
    assert res.exit_code == 2 and "--all-dead" in res.output
    res = runner.invoke(cli_app, ["requeue", "--all-dead", "--channel", "email", "--config", str(cfg)])
    assert res.exit_code == 0 and "no dead notifications of channel 'email'" in res.output, res.output
    dead = sorted(n.id for n in notifications(engine, channel="slack"))
    res = runner.invoke(cli_app, ["requeue", "--all-dead", "--channel", "slack", "--config", str(cfg)])
    assert res.exit_code == 0 and f"2 notifications requeued: {dead[0]}, {dead[1]}" in res.output, res.output
    assert [n.status for n in notifications(engine, channel="slack")] == ["pending"] * 2
    clock.advance(minutes=1)
    tick(client)
    assert sorted(rows(engine, "slack")) == [("slack", "firing", "sent")] * 2
    assert len(slack.top_level()) == 2 and len(smtp.messages) == 2  # email was not sent again
    res = runner.invoke(cli_app, ["requeue", str(dead[0]), "--config", str(cfg)])
    assert res.exit_code == 1 and f"notification {dead[0]} does not exist or is not dead" in res.output


def test_the_api_requeues_every_dead_notification_of_a_receiver(make, slack: SlackPeer) -> None:
    client, engine = make()
    slack.script("chat.postMessage", Canned(body={"ok": False, "error": "channel_not_found"}))
    post(client, SF)
    tick(client)
    [dead] = [n.id for n in notifications(engine, channel="slack")]
    assert client.post("/v1/notifications/requeue", params={"receiver": "nobody"}).json() == {"requeued": []}
    r = client.post("/v1/notifications/requeue", params={"receiver": "data-team"})
    assert r.status_code == 200 and r.json() == {"requeued": [dead]}
    assert client.post("/v1/notifications/requeue").json() == {"requeued": []}  # nothing is dead any more
    tick(client)
    assert [n.status for n in notifications(engine, channel="slack")] == ["sent"]


# Found by a lifecycle review (model-based, against the real ingest and worker): -----------------------


@pytest.mark.parametrize("posted", [False, True], ids=["the-firing-never-arrived", "slack-posted-then-answered-500"])
def test_a_firing_still_being_retried_goes_before_the_resolution(make, slack: SlackPeer, clock: Clock,
                                                                  posted: bool) -> None:
    """Found by a lifecycle review: a FIRING in retry arrived after its RESOLVED. And by a code review of
    the first fix: cancelling it stranded a FIRING Slack had posted before answering 500."""
    client, engine = make()
    slack.script("chat.postMessage", Canned(status=500, body="oops", content_type="text/plain", apply=posted))
    post(client, SF)
    tick(client)
    assert ("slack", "firing", "failed") in rows(engine)
    post(client, {"integration_id": SF["integration_id"], "status": "succeeded"})
    for _ in range(4):
        clock.advance(minutes=30)
        tick(client)
    [root] = slack.top_level()
    assert root["text"].startswith("RESOLVED: "), root["text"]  # the post says fixed, edited in place
    slack_rows = [n for n in notifications(engine) if n.channel == "slack"]
    assert [(n.kind, n.status) for n in slack_rows] == [("firing", "sent"), ("resolved", "sent")]
    assert slack_rows[0].sent_at <= slack_rows[1].sent_at  # FIRING first


def test_a_reminder_owed_before_an_acknowledgement_is_not_sent_after_it(make, slack: SlackPeer,
                                                                          clock: Clock) -> None:
    client, engine = make()
    post(client, SF)
    tick(client)
    slack.script("chat.postMessage", Canned(status=500, body="oops", content_type="text/plain"))
    clock.advance(hours=4, minutes=1)
    tick(client)
    assert ("slack", "reminder", "failed") in rows(engine, "slack")
    [alert] = alerts(engine)
    assert client.post(f"/v1/alerts/{alert.id}/ack").status_code == 200
    clock.advance(hours=1)
    tick(client)
    assert [m["text"].split(":")[0] for m in slack.top_level()] == ["FIRING"]
    assert ("slack", "reminder", "cancelled") in rows(engine, "slack")


def test_after_a_stall_longer_than_repeat_interval_the_firing_goes_alone(make, slack: SlackPeer,
                                                                         clock: Clock) -> None:
    """Reminders were timed from when the first message was due: FIRING and REMINDER arrived together."""
    client, engine = make()
    post(client, SF)
    clock.advance(hours=5)  # the worker was down
    tick(client)
    assert [k for _, k, _ in rows(engine, "slack")] == ["firing"]
    clock.advance(hours=3, minutes=59)
    tick(client)
    assert [k for _, k, _ in rows(engine, "slack")] == ["firing"]
    clock.advance(minutes=2)  # 4 h after it was delivered
    tick(client)
    assert [k for _, k, _ in rows(engine, "slack")] == ["firing", "reminder"]


def test_an_outcome_the_database_could_not_take_is_recorded_when_it_can(make, slack: SlackPeer, clock: Clock,
                                                                         monkeypatch) -> None:
    """Found by a fault review: the database failed between a send and its mark; the row waited out its
    2-minute lease and a message that had arrived was sent again."""
    import sqlalchemy.exc as sa_exc

    from alerts import outbox

    client, engine = make()
    real = outbox.mark_sent
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        if not str(kwargs.get("external_ref") or "").startswith("<"):  # the Slack row's (an email's is a Message-ID)
            calls["n"] += 1
            if calls["n"] == 1:
                raise sa_exc.OperationalError("UPDATE notification", {}, Exception("database or disk is full"))
        return real(*args, **kwargs)

    monkeypatch.setattr(outbox, "mark_sent", flaky)
    monkeypatch.setattr("alerts.worker.time.monotonic", lambda: 10**9)  # long past the lease: a delivery still counts
    post(client, SF)
    tick(client)  # the send's mark fails; the kept outcome is written before the next claim
    assert len(slack.messages) == 1 and calls["n"] == 2
    assert ("slack", "firing", "sent") in rows(engine, "slack")
    clock.advance(minutes=5)  # well past the lease
    tick(client)
    assert len(slack.messages) == 1 and len(slack.calls("chat.postMessage")) == 1
    [alert] = alerts(engine)
    assert alert.first_notified_at is not None


def test_blocks_slack_refuses_still_send_the_message_as_text(make, slack: SlackPeer) -> None:
    """Found by a security review: a message Slack refused for its blocks (invalid_blocks) was dead at once,
    and only the admin heard of it."""
    client, engine = make()
    slack.script("chat.postMessage", Canned(status=200, body={"ok": False, "error": "invalid_blocks"}))
    post(client, SF)
    tick(client)
    [message] = slack.top_level()
    assert message["blocks"] in (None, [])
    assert message["text"].startswith("FIRING: ") and "(details: <http://127.0.0.1:8080/alerts/1|alert #1>)" \
        in message["text"], message["text"]
    assert ("slack", "firing", "sent") in rows(engine, "slack")
