"""Slack pacing (R2.6): one post a second per channel in bursts of three, the bucket in the database
(shared by replicas), and a backlog of more than twenty posts for one channel sent as one summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from alerts import pacing, storage
from tests.test_delivery import make, post, slack, smtp, tick  # noqa: F401 - fixtures of the delivery tests

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def _engine(url: str) -> sa.Engine:
    engine = storage.make_engine(url)
    storage.upgrade(engine)
    return engine


def test_bucket_takes_a_burst_then_one_a_second_and_replicas_share_it(db_url: str) -> None:
    a, b = _engine(db_url), _engine(db_url)  # two replicas' engines on one database
    try:
        take = lambda engine, key, now: pacing.take(engine, key, now=now, rate=1.0, burst=3)  # noqa: E731
        assert [take(a, "#data", T0), take(b, "#data", T0), take(a, "#data", T0)] == [0.0, 0.0, 0.0]
        assert take(b, "#data", T0) == 1.0  # the burst is spent, whichever replica asks
        assert take(a, "#other", T0) == 0.0  # every channel has a bucket of its own
        assert abs(take(a, "#data", T0 + timedelta(seconds=0.5)) - 0.5) < 1e-6  # half a token refilled
        assert take(b, "#data", T0 + timedelta(seconds=1)) == 0.0
        assert take(a, "#data", T0 + timedelta(seconds=1)) == 1.0
        # a long quiet spell refills to the burst, no more
        later = T0 + timedelta(hours=1)
        assert [take(b, "#data", later) for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
        with a.connect() as conn:
            assert conn.exec_driver_sql("select channel from slack_pace order by channel").all() == \
                [("#data",), ("#other",)]
    finally:
        a.dispose()
        b.dispose()


def test_a_hold_empties_the_bucket_until_retry_after_and_never_shortens_a_longer_one(db_url: str) -> None:
    a, b = _engine(db_url), _engine(db_url)
    try:
        take = lambda engine, now: pacing.take(engine, "#data", now=now, rate=1.0, burst=3)  # noqa: E731
        hold = lambda engine, now, s: pacing.hold(engine, "#data", now=now, seconds=s, rate=1.0, burst=3)  # noqa: E731
        hold(a, T0, 30)  # a channel nobody posted to yet gets its bucket, held
        assert take(b, T0 + timedelta(seconds=10)) == 20.0
        hold(b, T0 + timedelta(seconds=10), 5)  # a shorter hold after a longer one changes nothing
        assert take(a, T0 + timedelta(seconds=20)) == 10.0
        assert take(a, T0 + timedelta(seconds=30)) == 0.0
        assert take(b, T0 + timedelta(seconds=30)) == 1.0  # then one a second, the burst refills slowly
    finally:
        a.dispose()
        b.dispose()


def _failures(n: int, *, name: str | None = None) -> list[dict]:
    return [{"integration_id": f"int-{i:02d}", "provider": "salesforce", "integration_name": name,
             "error": "invalid_grant: expired access/refresh token"} for i in range(n)]


def _slack_rows(engine) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "select kind, status, attempts from notification where channel = 'slack' order by id").all()]


def test_a_burst_goes_out_at_one_post_a_second(make, slack, smtp, clock) -> None:  # noqa: F811
    client, engine = make()
    post(client, _failures(5))
    tick(client)
    assert len(slack.messages) == 3  # the burst
    assert len(smtp.messages) == 5  # email is not paced
    deferred = [r for r in _slack_rows(engine) if r[1] != "sent"]
    assert [(k, s, n) for k, s, n in deferred] == [("firing", "pending", 0)] * 2  # waiting is not an attempt
    tick(client)
    assert len(slack.messages) == 3  # no token yet at the same instant
    clock.advance(seconds=1)
    tick(client)
    assert len(slack.messages) == 4
    clock.advance(seconds=1)
    tick(client)
    assert len(slack.messages) == 5
    assert len({m["channel"] for m in slack.messages}) == 1
    assert [r[1:] for r in _slack_rows(engine)] == [("sent", 1)] * 5


def test_a_backlog_over_twenty_is_one_summary_message(make, slack, smtp, clock) -> None:  # noqa: F811
    client, engine = make()
    post(client, _failures(30, name="<!channel> ledger *bold*"))
    tick(client)
    assert len(slack.messages) == 1, [m.get("text") for m in slack.messages]
    summary = slack.messages[0]
    assert summary["text"] == "30 alert messages for this channel, in one summary"
    body = "\n".join(b["text"]["text"] for b in summary["blocks"] if b.get("type") == "section")
    assert body.count("• ") == 25 and "… and 5 more on the dashboard" in body
    assert "30 firing" in body
    assert "<!channel>" not in str(summary) and "&lt;!channel&gt;" in body  # event text stays text
    assert "<https://etl.example.com/connections/int-00/reauthorize|Reauthorize>" in body
    assert len(smtp.messages) == 30  # every email as usual
    kinds = _slack_rows(engine)
    assert [k for k, s, _ in kinds if s == "sent"].count("firing") == 30
    assert [(k, s) for k, s, _ in kinds if k == "summary"] == [("summary", "sent")]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from alert where first_notified_at is null").scalar() == 0
    # Later messages of one alert go out on their own again, paced as usual.
    clock.advance(seconds=5)
    post(client, {"integration_id": "int-07", "status": "succeeded"})
    tick(client)
    assert len(slack.messages) == 2
    assert slack.messages[1]["text"].startswith("RESOLVED")


def test_merge_takes_waiting_rows_once_and_leaves_other_workers_rows(db_url: str) -> None:
    from alerts import outbox
    from alerts.routing import Target

    engine = _engine(db_url)
    try:
        with storage.session_scope(engine) as session:
            for i in range(25):
                outbox.enqueue(session, alert_id=None, kind="firing", seq=i,
                               targets=[Target("team", "slack", {"channel": "#data"})], due=T0, now=T0)
            outbox.enqueue(session, alert_id=None, kind="firing", seq=99,
                           targets=[Target("team", "slack", {"channel": "#elsewhere"})], due=T0, now=T0)
        with engine.begin() as conn:  # another worker holds one of them
            conn.exec_driver_sql("update notification set lease_until = '2026-11-28 10:00:00' where seq = 0")
        seen: list[list[dict]] = []
        render = lambda items: seen.append(items) or {"kind": "summary", "slack": {"text": "x"}}  # noqa: E731
        merged = pacing.merge_backlog(engine, "#data", [], now=T0, threshold=20, render=render)
        assert len(merged) == 24 and seen == [[]]
        again = pacing.merge_backlog(engine, "#data", [], now=T0, threshold=20, render=render)
        assert again == set()  # nothing waits any more
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("select kind, status, seq from notification order by id").all()
        assert [r for r in rows if r[1] != "sent"] == [("firing", "pending", 0), ("firing", "pending", 99),
                                                       ("summary", "pending", 0)]
        assert sum(1 for r in rows if r[0] == "firing" and r[1] == "sent") == 24
    finally:
        engine.dispose()


def test_a_backlog_for_a_slack_only_receiver_is_summarised_in_the_same_tick(make_client, make_settings, slack,  # noqa: F811
                                                                             clock) -> None:
    """Every claimed row merged into the summary leaves nothing in flight: the summary is still sent at
    once, not at the next poll."""
    from tests.peers.slack import TOKEN

    client = make_client(make_settings(
        slack={"bot_token": TOKEN, "base_url": slack.base_url, "allow_loopback_base_url": True},
        receivers=[{"name": "data-team", "slack": {"channel": "#data-alerts"}}],
        alerting={"group_wait": "0s"},
    ))
    post(client, _failures(30))
    tick(client)
    assert [m["text"] for m in slack.messages] == ["30 alert messages for this channel, in one summary"]


def test_a_rate_limit_pauses_the_channel_for_every_replica(make_client, make_settings, slack, smtp,  # noqa: F811
                                                           clock) -> None:
    """A 429 (Retry-After 30) that one replica got holds the channel's shared bucket: another replica does
    not post to that channel before then (it would only collect 429s of its own), other channels go on."""
    from tests.peers.slack import Canned
    from tests.test_delivery import config

    settings = make_settings(**config(slack, smtp))
    a, b = make_client(settings), make_client(settings)
    slack.script("chat.postMessage", Canned(status=429, body={"ok": False, "error": "ratelimited"},
                                            headers={"Retry-After": "30"}))
    post(a, _failures(1))
    tick(a)
    assert len(slack.calls("chat.postMessage")) == 1 and not slack.messages
    clock.advance(seconds=2)  # the bucket would have a token again by now
    post(b, [{**_failures(1)[0], "integration_id": "int-77"}])
    tick(b)
    assert len(slack.calls("chat.postMessage")) == 1  # b waited: no post into the rate limit
    assert _slack_rows(b.app.state.engine) == [("firing", "failed", 0), ("firing", "pending", 0)]
    clock.advance(seconds=28)
    tick(b)
    assert len(slack.messages) == 1  # after the hold, one a second: no burst into a channel that just said 429
    clock.advance(seconds=1)
    tick(b)
    assert len(slack.messages) == 2 and len(slack.calls("chat.postMessage")) == 3
    assert [r[1] for r in _slack_rows(b.app.state.engine)] == ["sent", "sent"]
