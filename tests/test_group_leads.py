"""Correlated groups whose lead stops speaking, and members whose failure gets worse (found by a lifecycle
review): a failing integration must be announced somewhere (test clock, real Slack and SMTP peers)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import alerts, notifications, run_worker_once
from tests.peers.slack import TOKEN, SlackPeer
from tests.peers.smtp import SmtpPeer

ALICE = "alice@example.com"
EXPIRED = "401 Unauthorized: expired access token"  # access_token_expired (severity error)
REVOKED = "invalid_grant: Token has been expired or revoked."  # invalid_grant (critical)


@pytest.fixture
def peers(clock):
    slack, smtp = SlackPeer(clock=clock).start(), SmtpPeer().start()
    yield slack, smtp
    slack.stop()
    smtp.stop()


@pytest.fixture
def client(make_client, make_settings, peers, db_url):
    slack, smtp = peers
    return make_client(make_settings(
        database={"url": db_url},
        slack={"bot_token": TOKEN, "base_url": slack.base_url, "allow_loopback_base_url": True},
        email={"host": "127.0.0.1", "port": smtp.port, "starttls": False, "from_addr": "alerts@example.com"},
        receivers=[{"name": "team", "slack": {"channel": "#data-alerts"}, "email": {"to": ["oncall@example.com"]}}],
        links={"reauthorize": "https://etl.example.com/connections/{integration_id}/reauthorize"},
        alerting={"group_wait": "0s"},
        correlation={"window": "2m"},
    ))


def fail(client, iid: str, error: str = REVOKED, **kw: Any) -> None:
    body = {"integration_id": iid, "provider": "google", "error": error, "authorized_by": ALICE,
            "integration_name": f"Google Ads {iid[-1]}", **kw}
    assert client.post("/v1/events", json=body).status_code == 202


def by_id(client) -> dict[str, Any]:
    return {a.integration_id: a for a in alerts(client.app.state.engine)}


def top_level(slack: SlackPeer) -> list[dict]:
    return [m for m in slack.messages if not m.get("thread_ts")]


def mentions(slack: SlackPeer, smtp: SmtpPeer, name: str) -> tuple[int, int]:
    """(Slack messages, emails) that name an integration."""
    posts = [m for m in slack.messages if name in m["text"] or name in str(m.get("blocks"))]
    mails = [m for m in smtp.messages if name in m.message.get_body(("plain",)).get_content()]
    return len(posts), len(mails)


# -- 1. the lead stops speaking before its first message went out -------------------------------------


def test_a_member_is_announced_when_its_lead_is_silenced_before_the_groups_message(client, peers, clock) -> None:
    slack, smtp = peers
    fail(client, "ga-0")
    clock.advance(seconds=5)
    fail(client, "ga-1")
    assert by_id(client)["ga-1"].correlation_lead_id == by_id(client)["ga-0"].id
    r = client.post("/v1/silences", json={"integration": "ga-0", "duration": "7d", "author": "ops"})
    assert r.status_code == 201
    clock.advance(minutes=3)  # the group's window is over
    run_worker_once(client.app)
    assert mentions(slack, smtp, "Google Ads 0") == (0, 0)  # silenced: no messages at all
    assert mentions(slack, smtp, "Google Ads 1") == (1, 1), [m["text"] for m in slack.messages]
    # ga-1 speaks for itself now; the silenced one, no longer the lead of anyone, waits out its silence
    assert by_id(client)["ga-1"].correlation_lead_id is None
    run_worker_once(client.app)
    assert len(slack.messages) == 1  # handed over once, not at every tick


def test_a_member_is_announced_when_its_lead_is_acknowledged_before_the_groups_message(client, peers, clock) -> None:
    """Not a bug: an acknowledged alert still sends its first message (only reminders stop), and that
    message names the group's members."""
    slack, smtp = peers
    fail(client, "ga-0")
    clock.advance(seconds=5)
    fail(client, "ga-1")
    lead = by_id(client)["ga-0"].id
    assert client.post(f"/v1/alerts/{lead}/ack", headers={"X-Alerts-User": "alice"}).status_code == 200
    clock.advance(minutes=3)
    run_worker_once(client.app)
    assert mentions(slack, smtp, "Google Ads 1") == (1, 1), [m["text"] for m in slack.messages]
    [post] = top_level(slack)
    assert post["text"].startswith("FIRING: 2 integrations authorized by alice@example.com")


# -- 2. the oldest alert of a cause is acknowledged or silenced ---------------------------------------


@pytest.mark.parametrize("quiet", ["ack", "silence"])
def test_later_failures_group_under_a_lead_that_still_speaks(client, peers, clock, quiet) -> None:
    slack, _ = peers
    fail(client, "ga-0")
    clock.advance(minutes=3)
    run_worker_once(client.app)
    assert len(top_level(slack)) == 1
    if quiet == "ack":
        assert client.post(f"/v1/alerts/{by_id(client)['ga-0'].id}/ack").status_code == 200
    else:
        assert client.post("/v1/silences", json={"integration": "ga-0", "duration": "7d"}).status_code == 201
    clock.advance(minutes=10)
    for i in (1, 2, 3):  # one cause, three more integrations, each in its own request
        fail(client, f"ga-{i}")
        clock.advance(seconds=5)
    clock.advance(minutes=3)
    run_worker_once(client.app)
    posts = top_level(slack)
    assert len(posts) == 2, [p["text"] for p in posts]  # ga-0's, then one for the three
    assert posts[1]["text"].startswith("FIRING: 3 integrations authorized by alice@example.com")
    a = by_id(client)
    assert a["ga-1"].correlation_lead_id is None
    assert a["ga-2"].correlation_lead_id == a["ga-3"].correlation_lead_id == a["ga-1"].id


# -- 3. a member's failure gets worse ---------------------------------------------------------------


def test_a_members_escalation_updates_the_groups_thread(client, peers, clock) -> None:
    """The contract: a more severe code sends an ``updated`` message. A member's messages are its lead's
    (it has no thread of its own), so its escalation updates the group's thread and says which member."""
    slack, smtp = peers
    engine = client.app.state.engine
    fail(client, "ga-0", EXPIRED)
    fail(client, "ga-1", EXPIRED)
    clock.advance(minutes=3)
    run_worker_once(client.app)
    [post] = top_level(slack)
    assert post["text"].startswith("FIRING: 2 integrations") and "access_token_expired" in post["text"]
    mails = len(smtp.messages)
    clock.advance(minutes=10)
    fail(client, "ga-1", REVOKED)  # now the refresh token is revoked too: more severe
    a = by_id(client)
    assert a["ga-1"].code == "invalid_grant" and a["ga-1"].severity == "critical"
    run_worker_once(client.app)
    updates = [n for n in notifications(engine) if n.kind == "updated"]
    assert {(n.alert_id, n.channel, n.status) for n in updates} == {(a["ga-0"].id, "slack", "sent"),
                                                                    (a["ga-0"].id, "email", "sent")}
    [reply] = slack.replies(post["ts"])
    assert "Google Ads 1" in str(reply["blocks"]) and "invalid_grant" in str(reply["blocks"])
    assert len(smtp.messages) == mails + 1
    assert "invalid_grant" in smtp.messages[-1].message.get_body(("plain",)).get_content()
    # a repeat of the same error is no escalation: nothing more
    fail(client, "ga-1", REVOKED)
    run_worker_once(client.app)
    assert len([n for n in notifications(engine) if n.kind == "updated"]) == 2


# -- a lead written back by another replica's batch ----------------------------------------------------


@pytest.mark.postgres
def test_a_late_member_does_not_undo_another_replicas_count_of_its_lead(make_client, make_settings, peers,
                                                                      clock) -> None:
    """The batch that adds a member to a told group owes the lead an update and writes the lead's row
    back: it must hold the lead's lock from its read, or a count another replica committed meanwhile
    is overwritten with the one it read (PostgreSQL, READ COMMITTED)."""
    import threading
    import time

    import sqlalchemy as sa

    from tests.peers.postgres import fresh_schema

    slack, smtp = peers
    with fresh_schema() as url:
        client = make_client(make_settings(
            database={"url": url},
            slack={"bot_token": TOKEN, "base_url": slack.base_url, "allow_loopback_base_url": True},
            email={"host": "127.0.0.1", "port": smtp.port, "starttls": False, "from_addr": "alerts@example.com"},
            receivers=[{"name": "team", "slack": {"channel": "#data-alerts"}, "email": {"to": ["oncall@example.com"]}}],
            alerting={"group_wait": "0s"}, correlation={"window": "2m"}))
        fail(client, "ga-0")
        clock.advance(minutes=2, seconds=1)  # the group's window
        run_worker_once(client.app)  # the group's message is out: a late member owes the lead an update
        lead = by_id(client)["ga-0"]
        other = sa.create_engine(url)
        try:
            with other.connect() as conn:
                conn.exec_driver_sql("UPDATE alert SET count = count + 100 WHERE id = %s", (lead.id,))  # holds the lock
                done: list[int] = []
                worker = threading.Thread(target=lambda: (fail(client, "ga-1"), done.append(1)))
                worker.start()
                time.sleep(1.0)  # the member's batch is waiting for the lead now
                conn.commit()
            worker.join(30)
            assert done
        finally:
            other.dispose()
        after = by_id(client)
        assert after["ga-1"].correlation_lead_id == lead.id
        assert after["ga-0"].count == lead.count + 100  # the other writer's count survived
        owed = [(n.channel, n.kind) for n in notifications(client.app.state.engine) if n.alert_id == lead.id]
    assert sorted(owed) == [("email", "firing"), ("email", "updated"), ("slack", "firing"), ("slack", "updated")]
