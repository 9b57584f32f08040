"""Silences: API, CLI, and what they do to messages (test clock, no sleeps)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import SF, alerts, notifications, run_worker_once


def post(client, body):
    r = client.post("/v1/events", json=body)
    assert r.status_code == 202, r.text


def test_silenced_alert_counts_but_sends_nothing_then_one_message_when_it_ends(client, clock) -> None:
    engine = client.app.state.engine
    r = client.post("/v1/silences", json={"integration": "sf-*", "duration": "2h", "author": "alice",
                                          "comment": "maintenance"})
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["state"] == "active" and silence["integration"] == "sf-*"
    for _ in range(5):
        post(client, SF)
    post(client, {**SF, "integration_id": "hubspot-1"})  # not covered by the silence
    run_worker_once(client.app)
    sf, hs = alerts(engine)
    assert (sf.silenced, sf.count) == (True, 5) and hs.silenced is False
    assert [(n.alert_id, n.status) for n in notifications(engine)] == [(hs.id, "sent")]
    clock.advance(hours=5)  # far past repeat_interval: still nothing while silenced
    assert client.get("/v1/silences").json()["silences"] == []  # expired
    run_worker_once(client.app)
    sent = [(n.alert_id, n.kind) for n in notifications(engine) if n.status == "sent"]
    assert sent.count((sf.id, "firing")) == 1  # the silence ended, still firing: exactly one message
    run_worker_once(client.app)
    assert [(n.alert_id, n.kind) for n in notifications(engine) if n.status == "sent"].count((sf.id, "firing")) == 1


def test_silence_created_during_group_wait_cancels_the_pending_message(make_client, make_settings, clock) -> None:
    client = make_client(make_settings(alerting={"group_wait": "30s"}))
    engine = client.app.state.engine
    post(client, SF)
    r = client.post("/v1/silences", json={"integration": "sf-prod", "provider": "salesforce", "duration": "1h"})
    assert r.status_code == 201
    clock.advance(minutes=1)
    run_worker_once(client.app)
    assert [n.status for n in notifications(engine)] == ["cancelled"]
    sid = r.json()["id"]
    r = client.delete(f"/v1/silences/{sid}")
    assert r.status_code == 200 and r.json()["state"] == "expired"
    run_worker_once(client.app)
    assert [(n.kind, n.status) for n in notifications(engine)] == [("firing", "cancelled"), ("firing", "sent")]


def test_silence_validation(client) -> None:
    for body, detail in [
        ({"integration": "x"}, "ends_at or duration"),
        ({"integration": "x", "duration": "4 hourz"}, "duration"),
        ({"integration": "x", "duration": "1h", "bogus": 1}, "bogus"),
        ({"integration": "x", "ends_at": "2020-01-01T00:00:00Z"}, "future"),
        ({"duration": "1h"}, "at least one of integration, provider, code"),  # no matcher: not "mute everything"
        ({"integration": "\u0000", "duration": "1h"}, "visible character"),  # cleans to nothing: not "*"
        ({"integration": "\u202e\u001b", "duration": "1h"}, "visible character"),
        ({"integration": "x", "duration": "9999999999d"}, "too long"),
        ({"code": "invalid_grnt", "duration": "1h"}, "did you mean invalid_grant?"),  # a typo silences nothing
        ({"integration": "x", "ends_at": "9999-12-31T23:59:59-14:00"}, "out of range"),
        ({"integration": "x", "starts_at": "9999-12-31T20:00:00Z", "duration": "1d"}, "out of range"),
    ]:
        r = client.post("/v1/silences", json=body)
        assert r.status_code == 422 and detail in r.json()["detail"], (body, r.text)
    assert client.delete("/v1/silences/999").status_code == 404
    assert client.delete("/v1/silences/99999999999999999999").status_code == 404  # past 64 bits: no such row
    assert client.get("/v1/silences?state=all").json() == {"silences": []}


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "alerts", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_silence_cli(tmp_path) -> None:
    r = cli("silence", "add", "--integration", "sf-*", "--provider", "Salesforce", "--for", "24h",
            "--comment", "known", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert (made["integration"], made["provider"], made["comment"]) == ("sf-*", "salesforce", "known")
    listed = [json.loads(x) for x in cli("silence", "list", "--json", cwd=tmp_path).stdout.splitlines()]
    assert [s["id"] for s in listed] == [made["id"]]
    assert cli("silence", "expire", str(made["id"]), cwd=tmp_path).returncode == 0
    assert cli("silence", "list", "--json", cwd=tmp_path).stdout.strip() == ""
    r = cli("silence", "add", "--integration", "x", "--for", "4 hourz", cwd=tmp_path)
    assert r.returncode == 2 and "--for" in r.stderr
    r = cli("silence", "add", cwd=tmp_path)
    assert r.returncode == 2 and "at least one" in r.stderr
    for blank in ("", "\u202e"):  # an unset $ID, or one that cleans to nothing: not "everything"
        r = cli("silence", "add", "--integration", blank, "--for", "1h", cwd=tmp_path)
        assert r.returncode == 2 and "--integration needs a visible character" in r.stderr, r.stderr
    r = cli("silence", "add", "--integration", "x", "--for", "99999999999d", cwd=tmp_path)
    assert r.returncode == 2 and "too long" in r.stderr and "Traceback" not in r.stderr, r.stderr
    for args in (("silence", "expire"), ("ack",), ("resolve",), ("requeue",)):  # past 64 bits: no such row
        r = cli(*args, "99999999999999999999", cwd=tmp_path)
        assert r.returncode == 1 and "Traceback" not in r.stderr and "99999999999999999999" in r.stderr, (args, r.stderr)
    r = cli("silence", "add", "--integration", "x", "--for", "0s", cwd=tmp_path)
    assert r.returncode == 2 and "--for must be longer than 0s" in r.stderr, r.stderr
    r = cli("silence", "add", "--integration", "*", "--for", "1h", "--json", cwd=tmp_path)  # said so: every one
    assert r.returncode == 0 and json.loads(r.stdout)["integration"] == "*", r.stderr
