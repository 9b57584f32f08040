"""One cause, many integrations: failures sharing an authorizing user (or account) and a code within the
correlation window produce one Slack message and one email naming them all (test clock, real peers)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.helpers import alerts, notifications, run_worker_once
from tests.peers.slack import TOKEN, SlackPeer
from tests.peers.smtp import SmtpPeer

ALICE = "alice@example.com"


@pytest.fixture
def peers(clock):
    slack, smtp = SlackPeer(clock=clock).start(), SmtpPeer().start()
    yield slack, smtp
    slack.stop()
    smtp.stop()


def correlating(make_client, make_settings, peers, **sections: Any):
    slack, smtp = peers
    return make_client(make_settings(
        slack={"bot_token": TOKEN, "base_url": slack.base_url, "allow_loopback_base_url": True},
        email={"host": "127.0.0.1", "port": smtp.port, "starttls": False, "from_addr": "alerts@example.com"},
        receivers=[{"name": "team", "slack": {"channel": "#data-alerts"}, "email": {"to": ["oncall@example.com"]}}],
        links={"reauthorize": "https://etl.example.com/connections/{integration_id}/reauthorize"},
        alerting={"group_wait": "0s"},
        correlation={"window": "2m"},
        **sections,
    ))


@pytest.fixture
def client(make_client, make_settings, peers):
    return correlating(make_client, make_settings, peers)


def fail(client, iid: str, **kw: Any) -> None:
    body = {"integration_id": iid, "provider": kw.pop("provider", "google"),
            "error": kw.pop("error", "invalid_grant: Token has been expired or revoked."), **kw}
    assert client.post("/v1/events", json=body).status_code == 202


def three_failing_together(client, clock) -> None:
    """ga-0, ga-1, ga-2 authorized by alice fail within the window; the group's message goes out."""
    for i in range(3):
        fail(client, f"ga-{i}", authorized_by=ALICE, integration_name=f"Google Ads {i}")
        clock.advance(seconds=5)
    clock.advance(minutes=3)
    run_worker_once(client.app)


def top_level(slack: SlackPeer) -> list[dict]:
    return [m for m in slack.messages if not m.get("thread_ts")]


def test_burst_sharing_authorized_by_sends_one_message(client, peers, clock) -> None:
    slack, smtp = peers
    engine = client.app.state.engine
    for i in range(5):
        fail(client, f"ga-{i}", authorized_by=ALICE, integration_name=f"Google Ads {i}")
        clock.advance(seconds=10)
    fail(client, "pg-1", provider="postgres", error='FATAL:  password authentication failed for user "etl"')
    run_worker_once(client.app)
    assert [("pg-1" in m["text"]) for m in top_level(slack)] == [True]  # the group waits out its window
    clock.advance(minutes=2)
    run_worker_once(client.app)

    posts = top_level(slack)
    assert len(posts) == 2  # the group, and the unrelated failure on its own
    group = next(m for m in posts if "5 integrations" in m["text"])
    assert "authorized by alice@example.com" in group["text"]
    blob = str(group["blocks"])
    for i in range(5):
        assert f"Google Ads {i}" in blob and f"https://etl.example.com/connections/ga-{i}/reauthorize" in blob
    assert "de-authorized or the user's password changed" in blob
    assert any("pg-1" in m["text"] for m in posts)

    subjects = sorted(m.message["Subject"] for m in smtp.messages)
    assert len(subjects) == 2
    assert any(s.startswith("[FIRING] 5 integrations authorized by alice@example.com") for s in subjects)
    mail = next(m.message for m in smtp.messages if "5 integrations" in m.message["Subject"])
    text = mail.get_body(("plain",)).get_content()
    assert all(f"https://etl.example.com/connections/ga-{i}/reauthorize" in text for i in range(5))

    # every integration keeps its own alert, and resolves on its own
    assert len([a for a in alerts(engine) if a.integration_id.startswith("ga-")]) == 5
    client.post("/v1/events", json={"integration_id": "ga-3", "status": "succeeded"})
    assert {a.integration_id: a.state for a in alerts(engine)}["ga-3"] == "resolved"


def test_late_member_joins_the_thread_not_a_new_post(client, peers, clock) -> None:
    slack, _ = peers
    fail(client, "ga-0", authorized_by=ALICE)
    fail(client, "ga-1", authorized_by=ALICE)
    clock.advance(minutes=3)
    run_worker_once(client.app)
    assert len(top_level(slack)) == 1
    clock.advance(minutes=10)
    fail(client, "ga-2", authorized_by=ALICE)  # after the window
    run_worker_once(client.app)
    assert len(top_level(slack)) == 1
    replies = [m for m in slack.messages if m.get("thread_ts")]
    assert len(replies) == 1 and "3 integrations" in replies[0]["text"]
    kinds = [(n.kind, n.channel) for n in notifications(client.app.state.engine) if n.channel == "slack"]
    assert kinds == [("firing", "slack"), ("updated", "slack")]


def test_a_single_failure_with_a_key_is_a_normal_message(client, peers, clock) -> None:
    slack, _ = peers
    fail(client, "ga-0", authorized_by=ALICE, integration_name="Google Ads")
    clock.advance(minutes=2)
    run_worker_once(client.app)
    [post] = top_level(slack)
    assert "Google Ads" in post["text"] and "integrations" not in post["text"]


def test_a_resolved_or_silenced_lead_does_not_swallow_new_failures(client, peers, clock) -> None:
    slack, _ = peers
    err = "invalid_grant: Token has been expired or revoked."
    batch = [  # one request: the lead opens, recovers, and then another integration fails with the same key
        {"integration_id": "ga-0", "provider": "google", "error": err, "authorized_by": ALICE},
        {"integration_id": "ga-0", "status": "succeeded"},
        {"integration_id": "ga-1", "provider": "google", "error": err, "authorized_by": ALICE},
    ]
    assert client.post("/v1/events", json=batch).status_code == 202
    clock.advance(minutes=2)
    run_worker_once(client.app)
    posts = top_level(slack)
    assert len(posts) == 1 and "ga-1" in posts[0]["text"]
    engine = client.app.state.engine
    [b] = [a for a in alerts(engine) if a.integration_id == "ga-1"]
    assert b.correlation_lead_id is None


def test_members_still_failing_when_their_lead_is_fixed_are_not_forgotten(make_client, make_settings, peers, clock,
                                                                           db_url) -> None:
    """The lead is fixed, two members are not: the earliest of them leads the group from then on (a
    message naming both), and reminders keep coming until they are fixed too."""
    slack, smtp = peers
    client = correlating(make_client, make_settings, peers, database={"url": db_url})
    engine = client.app.state.engine
    three_failing_together(client, clock)
    assert [m["text"] for m in top_level(slack)][0].count("3 integrations") == 1
    assert client.post("/v1/events", json={"integration_id": "ga-0", "status": "succeeded"}).status_code == 202
    run_worker_once(client.app)
    posts = top_level(slack)
    assert len(posts) == 2, [p["text"] for p in posts]
    heir_post = posts[1]
    assert "2 integrations" in heir_post["text"], heir_post["text"]
    blob = str(heir_post["blocks"])
    assert "Google Ads 1" in blob and "Google Ads 2" in blob and "Google Ads 0" not in blob
    by_id = {a.integration_id: a for a in alerts(engine)}
    assert by_id["ga-1"].correlation_lead_id is None and by_id["ga-2"].correlation_lead_id == by_id["ga-1"].id
    assert by_id["ga-0"].state == "resolved"
    assert any(m.message["Subject"].startswith("[FIRING] 2 integrations authorized by alice@example.com")
               for m in smtp.messages)
    # reminders follow the new lead's message
    clock.advance(hours=5)
    run_worker_once(client.app)
    reminders = [n for n in notifications(engine) if n.kind == "reminder" and n.channel == "slack"]
    assert [n.alert_id for n in reminders] == [by_id["ga-1"].id]
    # nothing more changes hands once the group is whole again
    run_worker_once(client.app)
    assert len(top_level(slack)) == 2


def test_the_new_lead_is_one_that_speaks(client, peers, clock) -> None:
    """The earliest member still open is silenced: the next one, firing, leads the group and is heard."""
    slack, _ = peers
    engine = client.app.state.engine
    three_failing_together(client, clock)
    r = client.post("/v1/silences", json={"integration": "ga-1", "duration": "7d", "author": "ops"})
    assert r.status_code == 201
    assert client.post("/v1/events", json={"integration_id": "ga-0", "status": "succeeded"}).status_code == 202
    run_worker_once(client.app)
    by_id = {a.integration_id: a for a in alerts(engine)}
    assert by_id["ga-2"].correlation_lead_id is None and by_id["ga-1"].correlation_lead_id == by_id["ga-2"].id
    assert any("Google Ads 2" in str(m["blocks"]) for m in top_level(slack)[1:])


def test_a_fixed_member_edits_the_group_post_in_place(client, peers, clock) -> None:
    """A member fixed while its lead still fails: the group's post is edited (the member marked fixed, the
    count of those still failing down by one); nothing new is posted and no email is sent."""
    slack, smtp = peers
    three_failing_together(client, clock)
    mails = len(smtp.messages)
    [post] = top_level(slack)
    assert "3 of 3 still failing" in str(post["blocks"])
    assert client.post("/v1/events", json={"integration_id": "ga-2", "status": "succeeded"}).status_code == 202
    run_worker_once(client.app)
    assert len(slack.messages) == 1 and len(post["edits"]) == 1
    blob = str(post["blocks"])
    assert "*Google Ads 2* (Google) — fixed" in blob and "*Google Ads 1* (Google)\\n" in blob
    assert "2 of 3 still failing" in blob and post["text"].startswith("FIRING: 3 integrations")
    assert len(smtp.messages) == mails


def test_the_leads_resolution_names_the_members_still_failing(client, peers, clock) -> None:
    """The group's post turns RESOLVED when its lead is fixed: it must not read as if all were fixed."""
    slack, smtp = peers
    three_failing_together(client, clock)
    [post] = top_level(slack)
    assert client.post("/v1/events", json={"integration_id": "ga-0", "status": "succeeded"}).status_code == 202
    run_worker_once(client.app)
    assert post["text"] == ("RESOLVED: Google Ads 0 — Authorization expired or revoked "
                            "(2 more authorized by alice@example.com still failing)")
    blob = str(post["blocks"])
    assert "Still failing with `invalid_grant`, authorized by alice@example.com" in blob
    for i in (1, 2):
        assert f"<https://etl.example.com/connections/ga-{i}/reauthorize|Reauthorize> · *Google Ads {i}*" in blob
    resolved = next(m.message for m in smtp.messages if m.message["Subject"].startswith("[RESOLVED]"))
    assert resolved["Subject"].endswith("; 2 more still failing")
    text = resolved.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Still failing with invalid_grant, authorized by alice@example.com:\n- Google Ads 1 (Google)" in text
    html = resolved.get_body(("html",)).get_content()
    assert 'href="https://etl.example.com/connections/ga-2/reauthorize"' in html


def test_the_last_fix_of_a_group_says_all_are_working(client, peers, clock) -> None:
    slack, smtp = peers
    three_failing_together(client, clock)
    [post] = top_level(slack)
    for iid in ("ga-1", "ga-2", "ga-0"):
        assert client.post("/v1/events", json={"integration_id": iid, "status": "succeeded"}).status_code == 202
        clock.advance(seconds=30)
        run_worker_once(client.app)
    assert post["text"] == "RESOLVED: Google Ads 0 — Authorization expired or revoked"
    assert "All 3 integrations authorized by alice@example.com that failed together are working again" \
        in str(post["blocks"])
    resolved = next(m.message for m in smtp.messages if m.message["Subject"].startswith("[RESOLVED]"))
    assert "still failing" not in resolved["Subject"]
    assert "All 3 integrations authorized by alice@example.com that failed together are working again." \
        in resolved.get_body(("plain",)).get_content()


def test_a_late_member_that_failed_early_is_announced_too(client, peers, clock) -> None:
    """Found by a lifecycle review: a member arriving after the group's message went out, with an
    occurred_at inside the window, joined silently; once the lead was acknowledged nobody heard of it."""
    slack, _ = peers
    fail(client, "ga-0", authorized_by=ALICE)
    started = clock.now
    clock.advance(minutes=3)
    run_worker_once(client.app)
    clock.advance(minutes=7)
    late = [{"integration_id": f"ga-{i}", "provider": "google", "error": "invalid_grant: Token has been expired or revoked.",
             "authorized_by": ALICE, "occurred_at": (started + timedelta(minutes=1)).isoformat()} for i in (1, 2)]
    assert client.post("/v1/events", json=late).status_code == 202
    run_worker_once(client.app)
    replies = [m for m in slack.messages if m.get("thread_ts")]
    assert len(replies) == 1 and "3 integrations" in replies[0]["text"]  # one update naming both
