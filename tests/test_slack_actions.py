"""Slack interactivity end to end: the app (TestClient) with a local Slack Web API server.

An event comes in through the API, the worker posts the alert to the Slack peer with its buttons,
and a click arrives at ``POST /v1/slack/actions`` the way Slack sends it: form-encoded
``payload=<json>``, signed with ``v0=HMAC-SHA256(signing_secret, "v0:{ts}:{body}")``. The tests
assert on the alert and silence rows and on what the peer recorded (``chat.update`` of the original
message), and that refused requests (401/403/400/415) change nothing at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.storage import Event, Silence
from alerts.web.slack_actions import FORM, sign
from tests.conftest import Clock
from tests.helpers import SF, alerts, notifications, rows, run_worker_once
from tests.peers.postgres import fresh_schema
from tests.peers.slack import TOKEN, SlackPeer

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's are 32 hex characters; any ≥ 24 bytes will do
TEAM = "T0123ACME"
LINK = "https://etl.example.com/connections/sf-prod/reauthorize"
ALICE = {"id": "U0ALICE", "username": "alice", "name": "alice", "team_id": TEAM}
BOB = {"id": "U0BOB", "username": "bob", "name": "Bob B", "team_id": TEAM}


@pytest.fixture
def slack(clock: Clock) -> Iterator[SlackPeer]:
    peer = SlackPeer(clock=clock).start()
    yield peer
    peer.stop()


def config(slack: SlackPeer, **slack_extra: Any) -> dict[str, Any]:
    return {
        "slack": {"bot_token": TOKEN, "base_url": slack.base_url, "allow_loopback_base_url": True,
                  "signing_secret": SECRET, "team_id": TEAM, **slack_extra},
        "receivers": [{"name": "data-team", "slack": {"channel": "#data-alerts"}}],
        "links": {"reauthorize": "https://etl.example.com/connections/{integration_id}/reauthorize"},
        "alerting": {"group_wait": "0s", "repeat_interval": "4h"},
    }


@pytest.fixture
def make(make_client, make_settings, slack):
    def build(**slack_extra: Any):
        client = make_client(make_settings(**config(slack, **slack_extra)))
        return client, client.app.state.engine

    return build


def firing(client, slack: SlackPeer) -> tuple[int, dict[str, Any]]:
    """Post a failure, deliver it; the alert id and the message as the peer has it."""
    r = client.post("/v1/events", json=SF)
    assert r.status_code == 202, r.text
    run_worker_once(client.app)
    [message] = slack.top_level()
    return r.json()["alert_ids"][0], message


def payload(alert_id: int | str, action_id: str = "alerts_ack", *, user: dict | None = None, team: str | None = TEAM,
            message: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A block_actions payload shaped like Slack's (docs.slack.dev, interaction-payloads/block_actions)."""
    channel, ts = (message["channel"], message["ts"]) if message else ("C0FFEE00", "1764320400.000100")
    return {  # a fresh object every time: tests change it
        "type": "block_actions",
        "user": dict(user or ALICE),
        "api_app_id": "A0APP",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": "12466734323.1395872398",
        "team": {"id": team, "domain": "acme"} if team else None,
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "data-alerts"},
        "message": {"type": "message", "ts": ts, "text": "FIRING"},
        "state": {"values": {}},
        "response_url": "https://hooks.slack.com/actions/T0123ACME/1/abcdef",
        "actions": [{"type": "button", "block_id": f"alert-{alert_id}", "action_id": action_id,
                     "text": {"type": "plain_text", "text": "Acknowledge"}, "value": str(alert_id),
                     "action_ts": "1764320401.000200"}],
        **extra,
    }


def form(data: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(data)}).encode()


def click(client, body: bytes, clock: Clock, *, ts: int | None = None, secret: str = SECRET,
          headers: dict[str, str] | None = None) -> Any:
    stamp = str(int(clock.now.timestamp()) if ts is None else ts)
    sent = {"content-type": FORM, "x-slack-request-timestamp": stamp, "x-slack-signature": sign(secret, stamp, body)}
    if headers is not None:
        sent = headers
    return client.post("/v1/slack/actions", content=body, headers=sent)


def buttons(message: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [(e["action_id"], e.get("style"), e.get("value")) for b in message["blocks"] if b["type"] == "actions"
            for e in b["elements"]]


def notes(message: dict[str, Any]) -> list[str]:
    return [e["text"] for b in message["blocks"] if b.get("block_id", "").endswith("-notes") for e in b["elements"]]


def slack_events(engine) -> list[Event]:
    return rows(engine, Event, Event.source == "slack")


# -- the buttons and what a click does --------------------------------------------------------


def test_acknowledge_click_acks_the_alert_and_updates_the_message_in_place(make, slack: SlackPeer,
                                                                           clock: Clock) -> None:
    client, engine = make()
    alert_id, message = firing(client, slack)
    assert buttons(message) == [("reauthorize", "primary", None), ("alerts_ack", None, str(alert_id)),
                                ("alerts_silence_24h", None, str(alert_id))]

    r = click(client, form(payload(alert_id, message=message)), clock)
    assert r.status_code == 200 and r.content == b""
    [alert] = alerts(engine)
    assert alert.state == "acknowledged" and alert.acknowledged_by == "@alice"
    [update_row] = notifications(engine, kind="action")
    assert update_row.status == "pending" and update_row.target["update_ref"] == f"{message['channel']}:{message['ts']}"

    run_worker_once(client.app)
    [update] = slack.calls("chat.update")
    sent = json.loads(update.body)
    assert (sent["channel"], sent["ts"]) == (message["channel"], message["ts"])
    [same] = slack.top_level()  # edited, not a new message
    assert len(slack.calls("chat.postMessage")) == 1 and same["edits"]
    assert notes(same) == [":white_check_mark: Acknowledged by @alice"]
    assert buttons(same) == [("reauthorize", "primary", None), ("alerts_silence_24h", None, str(alert_id))]
    assert notifications(engine, kind="action")[0].status == "sent"


def test_an_acknowledgement_made_elsewhere_edits_the_slack_messages_too(make, slack: SlackPeer, clock: Clock) -> None:
    """Found by a user review: acknowledged from the dashboard, the API or the CLI, the Slack post kept
    its Acknowledge button and said nothing."""
    client, engine = make()
    alert_id, message = firing(client, slack)
    r = client.post(f"/v1/alerts/{alert_id}/ack", headers={"X-Alerts-User": "bob"})
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "bob"
    run_worker_once(client.app)
    [update] = slack.calls("chat.update")
    assert (json.loads(update.body)["channel"], json.loads(update.body)["ts"]) == (message["channel"], message["ts"])
    [same] = slack.top_level()
    assert notes(same) == [":white_check_mark: Acknowledged by bob"]
    assert ("alerts_ack", None, str(alert_id)) not in buttons(same)
    assert client.post(f"/v1/alerts/{alert_id}/ack").status_code == 200  # again: nothing more to edit
    run_worker_once(client.app)
    assert len(slack.calls("chat.update")) == 1


def test_silence_click_silences_the_integration_for_24h_and_updates_the_message(make, slack: SlackPeer,
                                                                                clock: Clock) -> None:
    client, engine = make()
    alert_id, message = firing(client, slack)

    r = click(client, form(payload(alert_id, "alerts_silence_24h", user=BOB, message=message)), clock)
    assert r.status_code == 200
    [silence] = rows(engine, Silence)
    assert (silence.integration, silence.provider, silence.code, silence.author) == ("sf-prod", None, None, "@bob")
    assert silence.ends_at - silence.starts_at == silence.ends_at - clock.now  # starts now
    assert (silence.ends_at - clock.now).total_seconds() == 24 * 3600
    [alert] = alerts(engine)
    assert alert.silenced and alert.state == "firing"
    listed = client.get("/v1/silences").json()["silences"]
    assert [s["author"] for s in listed] == ["@bob"]

    run_worker_once(client.app)
    [update] = slack.calls("chat.update")
    assert json.loads(update.body)["ts"] == message["ts"]
    [same] = slack.top_level()
    assert notes(same) == [":no_bell: Silenced for 24 h by @bob"]
    assert buttons(same) == [("reauthorize", "primary", None), ("alerts_ack", None, str(alert_id))]
    # silenced: repeats send nothing, and the update itself was not swallowed by the silence
    client.post("/v1/events", json=SF)
    clock.advance(hours=5)
    run_worker_once(client.app)
    assert len(slack.calls("chat.postMessage")) == 1 and len(slack.calls("chat.update")) == 1


def test_a_click_on_a_reminder_updates_the_reminder_and_the_first_message(make, slack: SlackPeer,
                                                                          clock: Clock) -> None:
    client, engine = make()
    alert_id, root = firing(client, slack)
    clock.advance(hours=4)
    run_worker_once(client.app)
    [reminder] = slack.replies(root["ts"])
    assert [a for a, _, _ in buttons(reminder)] == ["reauthorize", "alerts_ack", "alerts_silence_24h"]

    assert click(client, form(payload(alert_id, message=reminder)), clock).status_code == 200
    run_worker_once(client.app)
    assert sorted(json.loads(u.body)["ts"] for u in slack.calls("chat.update")) == sorted([root["ts"], reminder["ts"]])
    for m in slack.messages:
        assert notes(m) == [":white_check_mark: Acknowledged by @alice"]
        assert "alerts_ack" not in [a for a, _, _ in buttons(m)]
    assert slack.replies(root["ts"])[0]["text"].startswith("STILL FIRING")  # each keeps its own kind


def test_a_repeated_click_changes_state_once(make, slack: SlackPeer, clock: Clock) -> None:
    client, engine = make()
    alert_id, message = firing(client, slack)
    body = form(payload(alert_id, "alerts_silence_24h", message=message))
    for _ in range(3):
        assert click(client, body, clock).status_code == 200
        clock.advance(seconds=1)
    # the same user with a different request (new trigger id), and another user: still one silence
    assert click(client, form(payload(alert_id, "alerts_silence_24h", message=message, trigger_id="2.3")),
                 clock).status_code == 200
    assert click(client, form(payload(alert_id, "alerts_silence_24h", user=BOB, message=message)),
                 clock).status_code == 200
    assert len(rows(engine, Silence)) == 1
    assert [(e.status, e.alert_id) for e in slack_events(engine)] == [("silence", alert_id), ("silence", alert_id)]

    for _ in range(2):
        assert click(client, form(payload(alert_id, message=message)), clock).status_code == 200
    [alert] = alerts(engine)
    assert alert.state == "acknowledged" and alert.acknowledged_by == "@alice" and alert.acknowledged_at is not None
    run_worker_once(client.app)
    # one update per state change that was not superseded before it was sent; the last shows both
    assert len(slack.calls("chat.update")) == 1
    assert notes(slack.top_level()[0]) == [":white_check_mark: Acknowledged by @alice",
                                           ":no_bell: Silenced for 24 h by @alice"]
    metrics = client.get("/metrics").text
    assert 'alerts_events_received_total{outcome="duplicate",source="slack"} 4.0' in metrics


def test_a_hostile_user_name_arrives_as_harmless_text(make, slack: SlackPeer, clock: Clock) -> None:
    client, engine = make()
    alert_id, message = firing(client, slack)
    mallory = {"id": "U0MAL", "username": "\u202e<!channel> & <@U0BOSS>\x1b[31m", "team_id": TEAM}
    assert click(client, form(payload(alert_id, user=mallory, message=message)), clock).status_code == 200
    assert alerts(engine)[0].acknowledged_by == "@<!channel> & <@U0BOSS>"
    run_worker_once(client.app)
    assert notes(slack.top_level()[0]) == [":white_check_mark: Acknowledged by @&lt;!channel&gt; &amp; &lt;@U0BOSS&gt;"]
    raw = slack.calls("chat.update")[0].body.decode()
    assert "<!channel>" not in raw and "<@U0BOSS>" not in raw and "link_names" not in raw


def test_a_click_on_a_resolved_alert_changes_nothing(make, slack: SlackPeer, clock: Clock) -> None:
    client, engine = make()
    alert_id, message = firing(client, slack)
    client.post("/v1/events", json={"integration_id": "sf-prod", "status": "succeeded"})
    run_worker_once(client.app)
    assert click(client, form(payload(alert_id, message=message)), clock).status_code == 200
    run_worker_once(client.app)
    assert alerts(engine)[0].state == "resolved" and alerts(engine)[0].acknowledged_by is None
    assert notifications(engine, kind="action") == []
    assert slack.top_level()[0]["text"].startswith("RESOLVED")


def test_reauthorize_link_clicks_are_answered_and_change_nothing(make, slack: SlackPeer, clock: Clock) -> None:
    client, engine = make()
    alert_id, message = firing(client, slack)
    data = payload(alert_id, "reauthorize", message=message)
    del data["actions"][0]["value"]
    assert click(client, form(data), clock).status_code == 200
    assert alerts(engine)[0].state == "firing" and slack_events(engine) == []


def test_response_url_is_never_called(make, slack: SlackPeer, clock: Clock) -> None:
    """Updates go through chat.update with the bot token; a response_url in the payload (even one
    pointing at a server we can see) is never requested (R1.7)."""
    client, engine = make()
    alert_id, message = firing(client, slack)
    trap = f"http://127.0.0.1:{slack.port}/actions/T0123ACME/1/trap"
    assert click(client, form(payload(alert_id, message=message, response_url=trap)), clock).status_code == 200
    run_worker_once(client.app)
    assert [r.path for r in slack.requests if "/actions/" in r.path] == []
    assert len(slack.calls("chat.update")) == 1


def test_no_signing_secret_means_no_buttons_and_every_click_refused(make_client, make_settings, slack: SlackPeer,
                                                                    clock: Clock) -> None:
    cfg = config(slack)
    del cfg["slack"]["signing_secret"]
    client = make_client(make_settings(**cfg))
    alert_id, message = firing(client, slack)
    assert buttons(message) == [("reauthorize", "primary", None)]
    r = click(client, form(payload(alert_id, message=message)), clock)
    assert r.status_code == 401
    assert alerts(client.app.state.engine)[0].state == "firing"


@pytest.mark.postgres
def test_concurrent_clicks_on_postgres_change_state_once(make_client, make_settings, slack: SlackPeer,
                                                         clock: Clock) -> None:
    """Eight people click Silence at once (and one of them twice): the alert row is locked while a
    click is applied, so exactly one silence exists and every click is answered 200."""
    with fresh_schema() as url:
        client = make_client(make_settings(**config(slack), database={"url": url}))
        engine = client.app.state.engine
        alert_id, message = firing(client, slack)
        people = [{"id": f"U0P{i}", "username": f"person{i}"} for i in range(8)]
        bodies = [form(payload(alert_id, "alerts_silence_24h", user=p, message=message)) for p in [*people, people[0]]]
        with ThreadPoolExecutor(len(bodies)) as pool:
            codes = list(pool.map(lambda b: click(client, b, clock).status_code, bodies))
        assert codes == [200] * len(bodies)
        assert len(rows(engine, Silence)) == 1 and alerts(engine)[0].silenced
        assert len(slack_events(engine)) == 8
        assert click(client, form(payload(alert_id, user=people[3], message=message)), clock).status_code == 200
        run_worker_once(client.app)
        assert alerts(engine)[0].acknowledged_by == "@person3"
        assert notes(slack.top_level()[0])[0] == ":white_check_mark: Acknowledged by @person3"
        engine.dispose()


# -- refusals: nothing changes ----------------------------------------------------------------


def _stale(client, alert_id, message, clock):
    return click(client, form(payload(alert_id, message=message)), clock, ts=int(clock.now.timestamp()) - 301)


def _future(client, alert_id, message, clock):
    return click(client, form(payload(alert_id, message=message)), clock, ts=int(clock.now.timestamp()) + 301)


def _wrong_secret(client, alert_id, message, clock):
    return click(client, form(payload(alert_id, message=message)), clock, secret="x" * 32)


def _tampered(client, alert_id, message, clock):
    body = form(payload(alert_id, message=message))
    stamp = str(int(clock.now.timestamp()))
    return client.post("/v1/slack/actions", content=body.replace(b"alice", b"mallo"), headers={
        "content-type": FORM, "x-slack-request-timestamp": stamp, "x-slack-signature": sign(SECRET, stamp, body)})


def _headers(**h):
    def send(client, alert_id, message, clock):
        body = form(payload(alert_id, message=message))
        stamp = str(int(clock.now.timestamp()))
        base = {"content-type": FORM, "x-slack-request-timestamp": stamp, "x-slack-signature": sign(SECRET, stamp, body)}
        for k, v in h.items():
            k = k.replace("_", "-")
            if v is None:
                base.pop(k)
            else:
                base[k] = v.format(stamp=stamp)
        return client.post("/v1/slack/actions", content=body, headers=base)
    return send


def _payload(**change):
    def send(client, alert_id, message, clock):
        return click(client, form(payload(alert_id, message=message, **change)), clock)
    return send


def _action(action_id, value=None):
    def send(client, alert_id, message, clock):
        data = payload(alert_id, action_id, message=message)
        if value is not None:
            data["actions"][0]["value"] = value
            data["actions"][0]["block_id"] = f"alert-{value}"
        return click(client, form(data), clock)
    return send


def _raw(body: bytes):
    def send(client, alert_id, message, clock):
        return click(client, body, clock)
    return send


REFUSALS = [
    pytest.param(_stale, 401, id="timestamp 301 s old"),
    pytest.param(_future, 401, id="timestamp 301 s ahead"),
    pytest.param(_wrong_secret, 401, id="signed with another secret"),
    pytest.param(_tampered, 401, id="body changed after signing"),
    pytest.param(_headers(x_slack_signature=None), 401, id="no signature header"),
    pytest.param(_headers(x_slack_request_timestamp=None), 401, id="no timestamp header"),
    pytest.param(_headers(x_slack_signature=None, x_slack_request_timestamp=None), 401, id="unsigned"),
    pytest.param(_headers(x_slack_request_timestamp="{stamp}.5"), 401, id="timestamp not digits"),
    pytest.param(_headers(x_slack_request_timestamp="17643204000"), 401, id="timestamp 11 digits"),
    pytest.param(_headers(x_slack_signature="v1=" + "0" * 64), 401, id="unknown signature version"),
    pytest.param(_headers(x_slack_signature="v0=zz"), 401, id="signature not hex"),
    pytest.param(_headers(content_type="application/json"), 415, id="not form-encoded"),
    pytest.param(_payload(team="T0OTHER"), 403, id="another workspace"),
    pytest.param(_payload(team=None), 403, id="no workspace"),
    pytest.param(_action("alerts_resolve"), 403, id="action_id not allow-listed"),
    pytest.param(_action("alerts_ack", value="1 OR 1=1"), 400, id="value not an alert id"),
    pytest.param(_action("alerts_ack", value="999999"), 404, id="no such alert"),
    pytest.param(_payload(type="view_submission"), 400, id="not block_actions"),
    pytest.param(_payload(user={"name": "no id"}), 400, id="no user id"),
    pytest.param(_raw(b"payload=%7Bnot%20json"), 400, id="payload not JSON"),
    pytest.param(_raw(b"payload=%5B%5D"), 400, id="payload not an object"),
    pytest.param(_raw(b"payload=%FF%FE"), 400, id="payload not UTF-8"),
    pytest.param(_raw(b"payload=a&payload=b"), 400, id="two payloads"),
    pytest.param(_raw(b"token=x"), 400, id="no payload"),
    pytest.param(_raw(b""), 400, id="empty body"),
]


@pytest.mark.parametrize(("send", "status"), REFUSALS)
def test_refused_requests_change_nothing(make, slack: SlackPeer, clock: Clock, send, status: int) -> None:
    client, engine = make()
    alert_id, message = firing(client, slack)
    r = send(client, alert_id, message, clock)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    if send in (_stale, _future):
        assert r.json()["code"] == "timestamp_out_of_tolerance"
    elif status == 401:
        assert r.json()["detail"] == "missing or invalid credentials" and "code" not in r.json()
    run_worker_once(client.app)
    [alert] = alerts(engine)
    assert (alert.state, alert.silenced, alert.acknowledged_by) == ("firing", False, None)
    assert rows(engine, Silence) == [] and slack_events(engine) == [] and notifications(engine, kind="action") == []
    assert slack.calls("chat.update") == []


def test_a_workspace_check_is_off_without_team_id(make, slack: SlackPeer, clock: Clock) -> None:
    client, engine = make(team_id=None)
    alert_id, message = firing(client, slack)
    assert click(client, form(payload(alert_id, message=message, team="T0OTHER")), clock).status_code == 200
    assert alerts(engine)[0].state == "acknowledged"


def test_unauthorized_clicks_are_rate_limited_per_address(make_client, make_settings, slack: SlackPeer,
                                                          clock: Clock) -> None:
    client = make_client(make_settings(**config(slack), webhooks={"max_unauthorized_per_minute": 3}))
    alert_id, message = firing(client, slack)
    body = form(payload(alert_id, message=message))
    codes = [click(client, body, clock, secret="y" * 32).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    assert click(client, body, clock).status_code == 429  # even a good one, until the minute is over
    clock.advance(seconds=61)
    assert click(client, body, clock).status_code == 200


# -- hostile input: never a 5xx ---------------------------------------------------------------


FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
                | st.sampled_from(["1", "01", "-1", "9" * 30, "alerts_ack", "alerts_silence_24h", "reauthorize",
                                   "block_actions", TEAM, "\ud800", "\u202e@admin", "<!channel>", "C0FFEE00"]))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c,
                                                                                            max_size=3), max_leaves=15)


GRAFT_PATHS = [("type",), ("user",), ("user", "id"), ("user", "username"), ("user", "name"), ("team",), ("team", "id"),
               ("actions",), ("actions", 0, "action_id"), ("actions", 0, "value"), ("actions", 0, None),
               ("container",), ("container", "channel_id"), ("container", "message_ts"), ("channel",),
               ("channel", "id"), ("message",), ("message", "ts"), ("response_url",), (None,)]


@st.composite
def bodies(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["bytes", "form", "valid", "grafted", "grafted", "grafted"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind == "form":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    data: Any = payload(draw(st.sampled_from(["1", "2", "x"])), draw(st.sampled_from(["alerts_ack",
                                                                                     "alerts_silence_24h"])))
    for _ in range(0 if kind == "valid" else draw(st.integers(1, 3))):
        *path, last = draw(st.sampled_from(GRAFT_PATHS))
        target = data
        for step in path:
            ok = isinstance(target, dict) and step in target or isinstance(target, list) and len(target) > step
            target = target[step] if ok else None
        if isinstance(target, dict):
            target[last if last is not None else draw(st.text(max_size=6))] = draw(json_values)
    text = json.dumps(data, allow_nan=True, ensure_ascii=False)
    return b"payload=" + quote(text.encode("utf-8", "surrogatepass"), safe="").encode()


header_values = st.none() | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


def test_hostile_requests_never_give_a_5xx(make_client, make_settings, slack: SlackPeer, clock: Clock) -> None:
    client = make_client(make_settings(**config(slack), webhooks={"max_unauthorized_per_minute": 1_000_000}))
    alert_id, _ = firing(client, slack)
    engine = client.app.state.engine
    seen: set[int] = set()

    @FUZZ
    @given(body=bodies(), signed=st.sampled_from([True, True, False]), skew=st.integers(-400, 400),
           stamp=header_values, signature=header_values,
           ctype=st.sampled_from([FORM, FORM, FORM + "; charset=utf-8", "application/json", "text/plain", ""]))
    def run(body: bytes, signed: bool, skew: int, stamp: str | None, signature: str | None, ctype: str) -> None:
        headers = {"content-type": ctype}
        if signed:
            stamp = str(int(clock.now.timestamp()) + skew)
            signature = sign(SECRET, stamp, body)
        if stamp is not None:
            headers["x-slack-request-timestamp"] = stamp
        if signature is not None:
            headers["x-slack-signature"] = signature
        r = client.post("/v1/slack/actions", content=body, headers=headers)
        assert r.status_code < 500, r.text
        seen.add(r.status_code)
        if r.status_code != 200:
            assert r.headers["content-type"] == "application/problem+json"
        if not signed or abs(skew) > 300:
            assert r.status_code in (401, 415)

    run()
    assert {200, 400, 401} <= seen
    # only signed, well-formed clicks on the one alert can have changed it; the server still works
    assert {e.alert_id for e in slack_events(engine)} <= {alert_id}
    assert client.get("/healthz").status_code == 200


def test_a_pagerduty_acknowledge_edits_the_slack_messages_too(make_client, make_settings, slack: SlackPeer) -> None:
    """Acknowledged through the PagerDuty-style webhook: the Slack post loses its button and says so."""
    from tests import webhook_kit as kit

    client = make_client(make_settings(**config(slack), webhooks={"pagerduty": {"secrets": [kit.PAGERDUTY]}}))
    alert_id, message = firing(client, slack)
    r = kit.pagerduty(client, {"event_action": "acknowledge", "dedup_key": SF["integration_id"]})
    assert r.status_code == 202, r.text
    run_worker_once(client.app)
    [update] = slack.calls("chat.update")
    assert (json.loads(update.body)["channel"], json.loads(update.body)["ts"]) == (message["channel"], message["ts"])
    [same] = slack.top_level()
    assert notes(same) == [":white_check_mark: Acknowledged by pagerduty acknowledge"]
    assert ("alerts_ack", None, str(alert_id)) not in buttons(same)


def test_a_click_whose_value_is_not_its_blocks_alert_is_refused(make, slack: SlackPeer, clock: Clock) -> None:
    """Found by a security review: a signed click naming alert 7 from another alert's block acknowledged 7."""
    client, engine = make()
    alert_id, message = firing(client, slack)
    body = payload(alert_id, message=message)
    body["actions"][0]["block_id"] = f"alert-{alert_id + 1}"
    r = click(client, form(body), clock)
    assert r.status_code == 400, r.text
    [alert] = alerts(engine)
    assert alert.state == "firing"
