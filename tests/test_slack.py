"""The Slack channel against a local server speaking Slack's Web API (and an incoming webhook).

Outcome classification (R2.4) is tested as a table over every HTTP status 100–599: once as the pure
decision, and once end to end through slack-sdk and real HTTP for every status a server can send
as a final answer (200–599).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from alerts.channels import DeliveryError, Outgoing
from alerts.channels.slack import METADATA_EVENT, SlackChannel, classify, parse_retry_after
from alerts.config import SlackSettings
from alerts.models import CatalogEntry, Severity
from alerts.render import Renderer, SampleAlert, alert_data
from tests.conftest import Clock
from tests.peers.slack import TOKEN, Canned, SlackPeer

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
ENTRY = CatalogEntry(code="invalid_grant", title="Authorization expired or revoked", cause="Token expired.",
                     solution="Reauthorize.", action="reauthorize", severity=Severity.critical)
RENDERER = Renderer()  # compiling the templates once keeps the 400-status table fast


@pytest.fixture
def peer(clock: Clock) -> Iterator[SlackPeer]:
    p = SlackPeer(clock=clock).start()
    yield p
    p.stop()


def channel_for(peer: SlackPeer, clock: Clock, *, webhook: bool = False) -> SlackChannel:
    kw = {"webhook_url": peer.webhook_url} if webhook else {"bot_token": TOKEN}
    return SlackChannel(SlackSettings(base_url=peer.base_url, allow_loopback_base_url=True, timeout="5s", **kw),
                        clock=clock)


def outgoing(kind: str = "firing", *, channel: str = "#data-alerts", thread_ref: str | None = None,
             attempts: int = 1, key: str = "k" * 64, instance: str = "", **alert) -> Outgoing:
    a = SampleAlert(first_seen=NOW, last_seen=NOW, reauthorize_url="https://etl.example.com/r", **alert)
    rendered = RENDERER.alert(alert_data(kind=kind, alert=a, entry=ENTRY, dashboard_url="https://a.example", now=NOW))
    return Outgoing(notification_id=1, idempotency_key=key, kind=kind, alert_id=7, address={"channel": channel},
                    rendered=rendered, message_id="<m@x>", thread_ref=thread_ref,
                    extra={"attempts": attempts, "created_at": NOW}, instance=instance)


def send(ch: SlackChannel, msg: Outgoing) -> str | None:
    return asyncio.run(ch.send(msg))


def fails(ch: SlackChannel, msg: Outgoing) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        send(ch, msg)
    return info.value


# -- the decision table ---------------------------------------------------------------------


def expected(status: int, ok: bool) -> str:
    if status == 429:
        return "wait"
    if 200 <= status < 300:
        return "delivered" if ok else "dead"
    if 500 <= status < 600:
        return "retry"
    return "dead"  # 1xx, 3xx (redirects are not followed), other 4xx


def outcome(err: DeliveryError | None) -> str:
    if err is None:
        return "delivered"
    if err.retry_after is not None:
        assert err.retryable
        return "wait"
    return "retry" if err.retryable else "dead"


@pytest.mark.parametrize("ok", [True, False], ids=["ok-true", "ok-false"])
def test_classification_table_every_status(ok: bool) -> None:
    body = {"ok": True, "channel": "C1", "ts": "1.1"} if ok else {"ok": False, "error": "channel_not_found"}
    got = {s: outcome(classify(s, body, {"Retry-After": "3"})) for s in range(100, 600)}
    assert got == {s: expected(s, ok) for s in range(100, 600)}


@pytest.mark.parametrize(
    ("data", "want"),
    [
        pytest.param({"ok": False, "error": "invalid_auth"}, "dead", id="invalid_auth"),
        pytest.param({"ok": False, "error": "not_in_channel"}, "dead", id="not_in_channel"),
        pytest.param({"ok": False, "error": "ratelimited"}, "wait", id="ratelimited in the body"),
        pytest.param({"ok": "true"}, "dead", id="ok must be the JSON true"),
        pytest.param(None, "dead", id="no body"),
        pytest.param("ok", "delivered", id="webhook plain ok"),
        pytest.param("invalid_payload", "dead", id="webhook error text"),
    ],
)
def test_classification_of_bodies(data, want) -> None:
    assert outcome(classify(200, data, {})) == want


def test_end_to_end_status_table(peer: SlackPeer, clock: Clock) -> None:
    """Every final status 200–599 through slack-sdk and real HTTP gives the table's outcome."""
    statuses = list(range(200, 600))

    async def run() -> dict[int, str]:
        got = {}
        for s in statuses:
            headers = {"Retry-After": "3"}
            if 300 <= s < 400:
                headers["Location"] = f"{peer.base_url}/redirected"
            peer.script("chat.postMessage", Canned(status=s, body={"ok": True, "channel": "C1", "ts": "1.000001"},
                                                   headers=headers))
            try:
                await channel_for(peer, clock).send(outgoing())
                got[s] = "delivered"
            except DeliveryError as exc:
                got[s] = outcome(exc)
        return got

    got = asyncio.run(run())
    want = {s: expected(s, ok=s != 204) for s in statuses}  # a 204 has no body, so no ok:true
    assert got == want
    assert len(peer.calls("chat.postMessage")) == len(statuses)  # one request each: no SDK retries
    assert not [r for r in peer.requests if r.path.endswith("/redirected")]  # redirects never followed


# -- Retry-After ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        pytest.param("2", 2, 2, id="seconds"),
        pytest.param("0", 1, 1, id="clamped up to 1 s"),
        pytest.param("86400", 900, 900, id="clamped down to 15 min"),
        pytest.param(None, 1, 2, id="missing: 1 s + jitter"),
        pytest.param("soon", 1, 2, id="invalid: 1 s + jitter"),
        pytest.param("-5", 1, 2, id="negative is invalid"),
        pytest.param(format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30, 30, id="an HTTP date"),
    ],
)
def test_parse_retry_after(header, low, high) -> None:
    assert low <= parse_retry_after(header, now=NOW) <= high


def test_429_pauses_the_channel_until_retry_after(peer: SlackPeer, clock: Clock) -> None:
    ch = channel_for(peer, clock)
    peer.script("chat.postMessage", Canned(status=429, body={"ok": False, "error": "ratelimited"},
                                           headers={"Retry-After": "30"}))
    err = fails(ch, outgoing())
    assert err.retryable and err.retry_after == 30
    clock.advance(seconds=10)
    err = fails(ch, outgoing(key="b" * 64))  # another message: not even tried while paused
    assert err.retry_after == 20 and len(peer.calls("chat.postMessage")) == 1
    # Slack limits posts per channel: another channel is not held up
    assert send(ch, outgoing(key="c" * 64, channel="#other")).startswith("C")
    assert len(peer.calls("chat.postMessage")) == 2
    clock.advance(seconds=20)
    assert send(ch, outgoing(key="b" * 64)).startswith("C")


# -- what is sent ---------------------------------------------------------------------------


def test_post_request_is_what_slack_expects(peer: SlackPeer, clock: Clock) -> None:
    ref = send(channel_for(peer, clock), outgoing())
    [req] = peer.calls("chat.postMessage")
    body = json.loads(req.body)
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert body["channel"] == "#data-alerts" and body["blocks"] and body["text"].startswith("FIRING")
    assert "link_names" not in body and "parse" not in body
    assert body["unfurl_links"] is False and body["unfurl_media"] is False
    assert body["metadata"] == {"event_type": METADATA_EVENT,
                                "event_payload": {"idempotency_key": "k" * 64, "instance": "", "alert_id": 7,
                                                  "kind": "firing"}}
    [msg] = peer.messages
    assert ref == f"{msg['channel']}:{msg['ts']}"


def test_threading_reminder_updated_and_resolved(peer: SlackPeer, clock: Clock) -> None:
    ch = channel_for(peer, clock)
    root = send(ch, outgoing())
    cid, ts = root.split(":")
    send(ch, outgoing("reminder", thread_ref=root, key="r" * 64))
    send(ch, outgoing("updated", thread_ref=root, key="u" * 64))
    send(ch, outgoing("resolved", thread_ref=root, key="z" * 64))
    [update] = peer.calls("chat.update")
    assert json.loads(update.body)["ts"] == ts and json.loads(update.body)["channel"] == cid
    [original] = peer.top_level()
    assert original["text"].startswith("RESOLVED") and original["edits"][0]["text"].startswith("FIRING")
    replies = peer.replies(ts)
    assert [r["text"].split(":")[0] for r in replies] == ["STILL FIRING", "UPDATED", "RESOLVED"]
    assert [r.get("reply_broadcast") for r in replies] == [None, True, None]


def test_resolved_still_replies_when_the_original_is_gone(peer: SlackPeer, clock: Clock) -> None:
    ch = channel_for(peer, clock)
    root = send(ch, outgoing())
    peer.script("chat.update", Canned(body={"ok": False, "error": "message_not_found"}))
    send(ch, outgoing("resolved", thread_ref=root, key="z" * 64))
    assert len(peer.replies(root.split(":")[1])) == 1


def test_resolved_update_failure_that_is_transient_retries(peer: SlackPeer, clock: Clock) -> None:
    ch = channel_for(peer, clock)
    root = send(ch, outgoing())
    peer.script("chat.update", Canned(status=503, body={"ok": False}))
    assert fails(ch, outgoing("resolved", thread_ref=root, key="z" * 64)).retryable
    assert peer.replies(root.split(":")[1]) == []  # nothing half-done: the whole row is retried


@pytest.mark.parametrize("error", ["channel_not_found", "invalid_auth", "not_in_channel", "is_archived"])
def test_permanent_errors_are_dead(peer: SlackPeer, clock: Clock, error: str) -> None:
    peer.script("chat.postMessage", Canned(body={"ok": False, "error": error}))
    err = fails(channel_for(peer, clock), outgoing())
    assert not err.retryable and error in err.reason and len(peer.requests) == 1


def test_network_failures_retry_without_sdk_retries(peer: SlackPeer, clock: Clock) -> None:
    peer.script("chat.postMessage", Canned(drop=True))
    err = fails(channel_for(peer, clock), outgoing())
    assert err.retryable and err.retry_after is None and len(peer.requests) == 1
    peer.stop()
    err = fails(channel_for(peer, clock), outgoing())  # connection refused
    assert err.retryable


def test_a_bad_token_never_appears_in_the_error(peer: SlackPeer, clock: Clock) -> None:
    secret = "xoxb-1111111111-SECRETSECRET"
    ch = SlackChannel(SlackSettings(base_url=peer.base_url, allow_loopback_base_url=True, bot_token=secret),
                      clock=clock)
    err = fails(ch, outgoing())
    assert "invalid_auth" in err.reason and "SECRETSECRET" not in str(err)


# -- idempotency ------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [Canned(apply=True, status=500), Canned(apply=True, drop=True)],
                         ids=["posted-then-500", "posted-then-connection-dropped"])
def test_a_retry_after_an_ambiguous_failure_does_not_post_twice(peer: SlackPeer, clock: Clock, failure) -> None:
    peer.script("chat.postMessage", failure)
    ch = channel_for(peer, clock)
    assert fails(ch, outgoing()).retryable
    assert len(peer.messages) == 1  # Slack has it, but we could not know
    clock.advance(seconds=30)
    ref = send(SlackChannel(ch.settings, clock=clock), outgoing(attempts=2))  # a new process: nothing cached
    [msg] = peer.messages
    assert ref == f"{msg['channel']}:{msg['ts']}"
    assert len(peer.calls("chat.postMessage")) == 1 and peer.calls("conversations.history")


def test_a_retried_thread_reply_is_found_in_the_thread(peer: SlackPeer, clock: Clock) -> None:
    ch = channel_for(peer, clock)
    root = send(ch, outgoing())
    peer.script("chat.postMessage", Canned(apply=True, status=502))
    assert fails(ch, outgoing("reminder", thread_ref=root, key="r" * 64)).retryable
    send(ch, outgoing("reminder", thread_ref=root, key="r" * 64, attempts=2))
    assert len(peer.replies(root.split(":")[1])) == 1 and peer.calls("conversations.replies")


def test_another_deployments_post_with_the_same_key_is_not_taken_for_ours(peer: SlackPeer, clock: Clock) -> None:
    """Staging and production post alert 1 to one channel: the same idempotency key, other databases.
    Production's retry must not find staging's post and stop (it would then edit it when resolved)."""
    ch = channel_for(peer, clock)
    staging = send(ch, outgoing(instance="a" * 32))
    peer.script("chat.postMessage", Canned(status=500, body={"ok": False}))
    assert fails(ch, outgoing(instance="b" * 32)).retryable
    prod = send(SlackChannel(ch.settings, clock=clock), outgoing(instance="b" * 32, attempts=2))
    assert prod != staging and len(peer.messages) == 2
    assert [m["metadata"]["event_payload"]["instance"] for m in peer.messages] == ["a" * 32, "b" * 32]


def test_a_retry_that_finds_nothing_posts(peer: SlackPeer, clock: Clock) -> None:
    peer.script("chat.postMessage", Canned(status=500, body={"ok": False}))
    ch = channel_for(peer, clock)
    fails(ch, outgoing())
    send(ch, outgoing(attempts=2))
    assert len(peer.messages) == 1 and len(peer.calls("chat.postMessage")) == 2


# -- incoming webhook -------------------------------------------------------------------------


def test_webhook_posts_every_kind_as_a_new_message(peer: SlackPeer, clock: Clock) -> None:
    ch = channel_for(peer, clock, webhook=True)
    assert send(ch, outgoing()) == "webhook"
    assert send(ch, outgoing("resolved", thread_ref="C1:1.1", key="z" * 64)) == "webhook"
    assert [json.loads(m["raw"])["text"].split(":")[0] for m in peer.messages] == ["FIRING", "RESOLVED"]
    body = json.loads(peer.messages[0]["raw"])
    assert "link_names" not in body and "parse" not in body and body["blocks"]


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        pytest.param(Canned(status=404, body="channel_not_found", content_type="text/html"), "dead", id="404"),
        pytest.param(Canned(status=403, body="action_prohibited", content_type="text/html"), "dead", id="403"),
        pytest.param(Canned(status=429, body="rate_limited", headers={"Retry-After": "5"}), "wait", id="429"),
        pytest.param(Canned(status=500, body="oops", content_type="text/html"), "retry", id="500"),
        pytest.param(Canned(status=302, body="", headers={"Location": "http://127.0.0.1:1/x"}), "dead", id="302"),
    ],
)
def test_webhook_outcomes(peer: SlackPeer, clock: Clock, answer: Canned, want: str) -> None:
    peer.script("webhook", answer)
    err = fails(channel_for(peer, clock, webhook=True), outgoing())
    assert outcome(err) == want and len(peer.requests) == 1


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "ok"),
    [
        pytest.param({"base_url": "http://127.0.0.1:9/api"}, False, id="loopback needs the explicit flag"),
        pytest.param({"base_url": "http://127.0.0.1:9/api", "allow_loopback_base_url": True}, True, id="flagged"),
        pytest.param({"base_url": "http://slack.example.com/api"}, False, id="plain http elsewhere"),
        pytest.param({"base_url": "https://slack.example.com/api"}, False, id="a host not on the allow-list"),
        pytest.param({"base_url": "https://slack.example.com/api", "allowed_hosts": ["Slack.Example.com"]}, True,
                     id="a self-hosted https API, listed"),
        pytest.param({"base_url": "https://user:pw@slack.com/api"}, False, id="userinfo"),
        pytest.param({"base_url": "https://slack.com:8443/api"}, False, id="another port"),
        pytest.param({"base_url": "https://slack.com:443/api"}, True, id="port 443 spelled out"),
        pytest.param({"base_url": "https://93.184.216.34/api", "allowed_hosts": ["93.184.216.34"]}, False,
                     id="an IP literal, even listed"),
        pytest.param({"base_url": "https://slack.com\\@evil.example/api"}, False, id="backslash"),
        pytest.param({"webhook_url": "https://hooks.slack.com.evil.example/services/T0/B0/x"}, False,
                     id="webhook on a look-alike host"),
        pytest.param({"webhook_url": "https://hooks.slack.com/services/T0/B0/x"}, True, id="webhook"),
        pytest.param({"webhook_url": "https://evil.example/services/T0/B0/x"}, False, id="webhook elsewhere"),
        pytest.param({"webhook_url": "http://hooks.slack.com/services/T0/B0/x"}, False, id="webhook over http"),
    ],
)
def test_slack_urls_are_checked_when_loaded(settings: dict, ok: bool) -> None:
    if ok:
        SlackSettings(**settings)
    else:
        with pytest.raises(ValueError):
            SlackSettings(**settings)
