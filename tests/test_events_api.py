"""POST /v1/events end to end through the app: storage, dedup, lifecycle, outbox, file sink."""

from __future__ import annotations

import email
import json
import re
from datetime import timedelta
from email import policy

import pytest

from alerts.storage import Alert, Event, Notification
from tests.helpers import SF, alerts, events, notifications, rows, run_worker_once


def post(client, body, **kw):
    return client.post("/v1/events", json=body, **kw)


def test_fifty_failures_make_one_alert_and_one_notification(client, tmp_path) -> None:
    engine = client.app.state.engine
    for _ in range(50):
        r = post(client, SF)
        assert r.status_code == 202
    assert r.json()["accepted"] == 1 and r.json()["duplicates"] == 0
    [alert] = alerts(engine)
    assert (alert.state, alert.count, alert.code, alert.provider) == ("firing", 50, "invalid_grant", "salesforce")
    assert len(events(engine)) == 50
    [note] = notifications(engine)
    assert (note.kind, note.channel, note.status) == ("firing", "file", "pending")

    assert run_worker_once(client.app) == 1
    out = tmp_path / "outbox"
    assert sorted(p.name for p in out.iterdir()) == [f"{note.id}.eml", f"{note.id}.json"]
    slack = json.loads((out / f"{note.id}.json").read_text())
    assert "sf-prod" in slack["text"] and "Authorization expired or revoked" in slack["text"]
    msg = email.message_from_bytes((out / f"{note.id}.eml").read_bytes(), policy=policy.default)
    assert msg["Subject"].startswith("[FIRING] sf-prod (Salesforce)")
    assert "invalid_grant: expired access/refresh token" in msg.get_body(("plain",)).get_content()

    r = post(client, {"integration_id": "sf-prod", "status": "succeeded"})
    assert r.status_code == 202 and r.json()["alert_ids"] == [alert.id]
    [alert] = alerts(engine)
    assert alert.state == "resolved" and alert.resolved_at is not None
    run_worker_once(client.app)
    resolved = notifications(engine, kind="resolved")
    assert [n.status for n in resolved] == ["sent"]
    resolved_mail = email.message_from_bytes((out / f"{resolved[0].id}.eml").read_bytes(), policy=policy.default)
    assert resolved_mail["Subject"].startswith("[RESOLVED] sf-prod")
    assert resolved_mail["In-Reply-To"] == msg["Message-ID"]


def test_batch_and_replayed_event_id_are_counted_once(client) -> None:
    engine = client.app.state.engine
    batch = [{**SF, "event_id": f"run-{i}"} for i in range(3)]
    r = post(client, batch)
    assert r.json() == {"accepted": 3, "duplicates": 0, "alert_ids": [1]}
    r = post(client, batch[:2] + [{**SF, "event_id": "run-9"}])
    assert r.json() == {"accepted": 1, "duplicates": 2, "alert_ids": [1]}
    assert alerts(engine)[0].count == 4
    assert len(events(engine)) == 4


def test_non_auth_error_is_stored_but_opens_nothing(client) -> None:
    engine = client.app.state.engine
    r = post(client, {"integration_id": "hs", "error": "429 Too Many Requests"})
    assert r.status_code == 202 and r.json()["alert_ids"] == []
    [ev] = events(engine)
    assert ev.code is None and ev.alert_id is None
    assert alerts(engine) == [] and notifications(engine) == []


def test_secrets_are_redacted_before_storage(client) -> None:
    engine = client.app.state.engine
    err = "401 Client Error: Unauthorized for url: https://api.x.com/v1?access_token=CANARYTOKEN123 Bearer CANARYBEARER99"
    post(client, {"integration_id": "x", "error": err})
    [ev] = events(engine)
    [alert] = alerts(engine)
    for text in (ev.error, alert.last_error):
        assert "CANARYTOKEN123" not in text and "CANARYBEARER99" not in text and "[REDACTED]" in text
    assert alert.code == "access_token_expired"  # classified before redaction removed anything



# Canaries in every free-text field an event has; none may be stored or sent as given (R4.1).
CANARIES = {
    "integration_id": "sf-prod-xoxb-1234567890-CanaryPassId1",  # ids lose token shapes only
    "integration_name": "Salesforce client_secret=CanarySecretName2",
    "account_id": "acct api_key=sk_live_CanaryStripeAcct3",
    "authorized_by": "ops Bearer CanaryBearerWho4",
    "error": "invalid_grant: Token has been expired or revoked. refresh_token=1//CanaryRefreshErr5abcdefghij",
    "labels": {"team": "data token=CanaryLabelValue6", "password=CanaryLabelKey7": "x"},
    "reauthorize_url": "https://app.stitchdata.com/client/1/x?access_token=CanaryLinkToken8",
}


def test_secrets_in_every_free_text_field_stay_out_of_the_database_and_the_messages(client, tmp_path, clock) -> None:
    engine = client.app.state.engine
    assert post(client, {**CANARIES, "provider": "google"}).status_code == 202
    r = client.post("/v1/silences", json={"integration": "nothing-*", "duration": "1h",
                                           "author": "eve password=CanaryAuthor9", "comment": "secret: CanaryComment10"})
    assert r.status_code == 201, r.text
    clock.advance(minutes=2)  # past the correlation window an authorized_by opens
    assert run_worker_once(client.app) == 1
    [alert] = alerts(engine)
    assert alert.integration_id == "sf-prod-xoxb-[REDACTED]"
    assert alert.integration_name == "Salesforce client_secret=[REDACTED]"
    assert alert.labels == {"team": "data token=[REDACTED]", "password=[REDACTED]": "x"}
    assert alert.reauthorize_url is None  # a link carrying a token is dropped, not stored or posted
    engine.dispose()  # the WAL is read below as it is: nothing is folded in or hidden
    db = tmp_path / "alerts.db"
    stored = b"".join(p.read_bytes() for p in (db, db.with_name("alerts.db-wal")) if p.exists())
    sent = b"".join(p.read_bytes() for p in (tmp_path / "outbox").iterdir())
    assert b"sf-prod-xoxb-[REDACTED]" in sent  # the message names the integration, redacted
    canaries = [f"Canary{name}".encode() for name in ("PassId1", "SecretName2", "StripeAcct3", "BearerWho4",
                                                       "RefreshErr5", "LabelValue6", "LabelKey7", "LinkToken8",
                                                       "Author9", "Comment10")]
    assert [c for c in canaries if c in stored] == []
    assert [c for c in canaries if c in sent] == []


LEAK_FORMS = [  # found by a review that posted each to a server and grepped what it kept and sent
    "invalid_grant: login with user=bob password=correct CanaryHorse11 CanaryStaple12 failed",
    'Response 401 for "Authorization": "OAuth 00DCanaryOAuth13!AQ4AQ" invalid_grant',
    "invalid_grant for Driver={ODBC};Password=My CanaryOdbc14 PW;Encrypt=True",
    r'invalid_grant {\\"client_secret\\":\\"CanaryDouble15\\"}',
    "invalid_grant at postgresql://etl:CanarySlash16/Yz+9q==@db.internal:5432/app",
    "invalid_grant DefaultEndpointsProtocol=https;AccountKey=CanaryAzure17==;EndpointSuffix=x",
]


def test_secrets_in_forms_found_by_review_stay_out_of_the_database_and_the_messages(client, tmp_path, clock) -> None:
    engine = client.app.state.engine
    for i, error in enumerate(LEAK_FORMS):
        r = post(client, {"integration_id": f"leak-{i}", "provider": "google", "error": error,
                          "labels": {"client_secret": "CanaryLabel18", "team": "data"}})
        assert r.status_code == 202, r.text
    r = client.post("/v1/tokens", json={"integration_id": "leak-token", "provider": "xoxb-1234567890-CanaryProv19",
                                        "scopes": ["read", "password=CanaryScope20"],
                                        "expires_at": (clock.now + timedelta(hours=1)).isoformat()})
    assert r.status_code == 202, r.text
    run_worker_once(client.app)
    run_worker_once(client.app)
    found = alerts(engine)
    assert len(found) == len(LEAK_FORMS) + 1  # every one still an alert: classified before redaction
    assert {a.labels["client_secret"] for a in found if a.labels} == {"[REDACTED]"}
    engine.dispose()
    db = tmp_path / "alerts.db"
    stored = b"".join(p.read_bytes() for p in (db, db.with_name("alerts.db-wal")) if p.exists())
    sent = b"".join(p.read_bytes() for p in (tmp_path / "outbox").iterdir())
    assert b"leak-token" in sent and b"leak-3" in sent  # the messages went out
    assert sorted(set(re.findall(rb"Canary[A-Za-z]+\d+", stored + sent))) == []


def test_ids_keep_their_words_so_two_integrations_stay_two(client) -> None:
    """Only token shapes leave an id: "vault-token:prod" and "vault-token:stage" are two alerts."""
    for iid in ("vault-token:prod", "vault-token:stage"):
        assert post(client, {**SF, "integration_id": iid}).status_code == 202
    assert sorted(a.integration_id for a in alerts(client.app.state.engine)) == ["vault-token:prod",
                                                                                 "vault-token:stage"]


def test_an_occurrence_in_the_future_counts_as_now(client, clock) -> None:
    """A sender's clock far ahead (or a typo of a year) must not date a resolution in the future:
    the integration's next failure would look older than it and never alert again."""
    engine = client.app.state.engine
    assert post(client, SF).status_code == 202
    r = post(client, {"integration_id": "sf-prod", "status": "succeeded", "occurred_at": "9999-01-01T00:00:00Z"})
    assert r.status_code == 202
    [resolved] = alerts(engine)
    assert resolved.state == "resolved" and resolved.resolved_at.year == clock.now.year
    clock.advance(minutes=5)
    r = post(client, {**SF, "occurred_at": "2100-01-01T00:00:00Z"})
    assert r.status_code == 202 and len(r.json()["alert_ids"]) == 1
    reopened = alerts(engine)[-1]
    assert reopened.id != resolved.id and reopened.state == "firing"
    assert reopened.first_seen.year == clock.now.year
    assert {e.occurred_at.year for e in events(engine)} == {clock.now.year}


BAD = [
    pytest.param(b"{not json", "application/json", 400, "malformed JSON", id="malformed"),
    pytest.param(b'{"error": "invalid_grant"}', "application/json", 422, "integration_id", id="missing-id"),
    pytest.param(b'{"integration_id": "x", "status": "paused", "error": "e"}', "application/json", 422, "status",
                 id="unknown-status"),
    pytest.param(b'{"integration_id": "x"}', "application/json", 422, "error", id="failure-without-error"),
    pytest.param(b'{"integration_id": "x", "error": "e", "bogus": 1}', "application/json", 422, "bogus",
                 id="unknown-field"),
    pytest.param(b'{"integration_id": "x", "integration_id": "y", "error": "e"}', "application/json", 400,
                 "duplicate key", id="duplicate-key"),
    pytest.param(b'{"integration_id": "x", "error": NaN}', "application/json", 400, "NaN", id="nan"),
    pytest.param(b'{"integration_id": "\xff\xfe", "error": "e"}', "application/json", 400, "UTF-8", id="bad-utf8"),
    pytest.param(b"[" * 100 + b"]" * 100, "application/json", 400, "nested", id="deep"),
    pytest.param(b'{"integration_id": "x", "error": "e", "occurred_at": "2026-11-28T09:00:00"}',
                 "application/json", 422, "timezone", id="naive-time"),
    pytest.param(b'{"integration_id": "x", "error": "e", "event_id": "a.b"}', "application/json", 422, "event_id",
                 id="dotted-event-id"),
    pytest.param(b'{"integration_id": "x", "error": "e"}', "text/plain", 415, "application/json", id="content-type"),
    pytest.param(b"[]", "application/json", 422, "empty", id="empty-array"),
    pytest.param(b'{"integration_id": 1, "error": 99999999999999999999999}', "application/json", 400, "range",
                 id="huge-int"),
    pytest.param(b'{"integration_id": "   ", "error": "e"}', "application/json", 422, "visible character",
                 id="blank-id"),
    pytest.param(b'{"integration_id": "\\u0000\\u001b", "error": "e"}', "application/json", 422, "visible character",
                 id="control-id"),    # found by a hostile-input review: each was a 500, or stored what it should not have
    pytest.param(b'{"integration_id": "\\u200b\\ufeff", "error": "e"}', "application/json", 422, "visible character",
                 id="zero-width-id"),
    pytest.param(b'{"integration_id": "x", "error": "e", "occurred_at": "9999-12-31T23:59:59-14:00"}',
                 "application/json", 422, "out of range", id="time-past-utc"),
    pytest.param(b'{"integration_id": "x", "error": "e", "occurred_at": "0001-01-01T00:00:00+14:00"}',
                 "application/json", 422, "out of range", id="time-before-utc"),
    pytest.param(b'{"integration_id": "x", "error": "e", "occurred_at": "1969-12-31T00:00:00Z"}',
                 "application/json", 422, "out of range", id="time-before-1970"),
    pytest.param(b'{"integration_id": "x", "error": "e", "event_id": "fivetran-abc"}', "application/json", 422,
                 "fivetran-", id="reserved-event-id"),
]


@pytest.mark.parametrize(("body", "ctype", "status", "detail"), BAD)
def test_bad_input_is_refused_with_problem_json_and_stores_nothing(client, body, ctype, status, detail) -> None:
    engine = client.app.state.engine
    r = client.post("/v1/events", content=body, headers={"content-type": ctype})
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == status and detail in problem["detail"]
    assert rows(engine, Event) == [] and rows(engine, Alert) == [] and rows(engine, Notification) == []
    assert post(client, SF).status_code == 202  # and the server keeps serving


def test_lone_surrogates_are_cleaned_whichever_path_reads_the_event(client) -> None:
    """The fast path and the model agree: a lone surrogate becomes U+FFFD, never a 422 (R3.3)."""
    engine = client.app.state.engine
    for body in (b'{"integration_id": "a", "error": "invalid_grant \\ud800"}',
                 b'{"integration_id": "b\\tc", "error": "invalid_grant \\ud800"}',
                 b'[{"integration_id": "d", "error": "invalid_grant"}, {"integration_id": "\\u00e9", '
                 b'"error": "invalid_grant \\udfff", "labels": {"k\\ud800": "v"}}]'):
        r = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 202, r.text
    stored = sorted(e.error for e in events(engine))
    assert stored == ["invalid_grant", "invalid_grant \ufffd", "invalid_grant \ufffd", "invalid_grant \ufffd"]


def test_a_long_error_is_cut_not_refused(client) -> None:
    r = post(client, {"integration_id": "x", "error": "invalid_grant " + "x" * 70_000})
    assert r.status_code == 202
    [event] = events(client.app.state.engine)
    assert event.error.startswith("invalid_grant") and event.error.endswith("…[truncated]") and len(event.error) == 4096


def test_ten_megabyte_body_is_refused_before_reading(client) -> None:
    engine = client.app.state.engine
    big = b'{"integration_id": "x", "error": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    r = client.post("/v1/events", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert rows(engine, Event) == []

    def chunks():
        for _ in range(20):
            yield b"a" * 100_000

    r = client.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413  # streamed without Content-Length: cut off while reading
    assert rows(engine, Event) == []
    assert post(client, SF).status_code == 202


def test_batch_limit(make_client, make_settings) -> None:
    client = make_client(make_settings(server={"max_batch": 2}))
    r = post(client, [SF, SF, SF])
    assert r.status_code == 422 and "at most 2" in json.dumps(r.json())


def test_api_tokens_protect_the_admin_api(make_client, make_settings) -> None:
    client = make_client(make_settings(server={"api_tokens": ["t0k3n-for-tests-only-000000"]}))
    assert client.get("/v1/alerts").status_code == 401
    assert client.get("/v1/alerts", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/v1/alerts", headers={"Authorization": "Bearer t0k3n-for-tests-only-000000"})
    assert ok.status_code == 200 and ok.json() == {"alerts": [], "next": None}
    assert client.get("/healthz").status_code == 200


def test_a_database_that_cannot_be_written_is_a_503_to_retry(client, tmp_path) -> None:
    """Another process holds SQLite's write lock past busy_timeout (5 s): the event is refused with 503
    and Retry-After — nothing stored, nothing acknowledged — and accepted once the lock is gone."""
    import sqlite3

    holder = sqlite3.connect(tmp_path / "alerts.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = post(client, SF)
        ready = client.get("/readyz")  # reads still work: what the last commit met says it is not ready
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ready.status_code == 503 and "ingest failing since" in ready.json()["detail"], ready.text
    assert "database is locked" in ready.json()["detail"]
    assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "nothing was stored" in r.json()["detail"]
    assert events(client.app.state.engine) == []
    assert client.get("/readyz").status_code == 200  # ready again without waiting for traffic (its own probe)
    assert post(client, SF).status_code == 202 and len(events(client.app.state.engine)) == 1


def test_a_broken_schema_is_a_500_not_a_503_to_retry_for_ever(client, tmp_path) -> None:
    """SQLite raises a missing column as OperationalError too: that is a bug to look at, not an outage."""
    import sqlite3

    con = sqlite3.connect(tmp_path / "alerts.db")
    con.execute("ALTER TABLE event RENAME COLUMN body_sha256 TO body_hash")
    con.commit()
    con.close()
    r = post(client, SF)
    assert r.status_code == 500 and "retry-after" not in r.headers, r.text


def test_ids_past_64_bits_are_not_found_not_a_crash(client) -> None:
    big = "99999999999999999999"
    assert post(client, SF).status_code == 202
    for method, path, status in [("GET", f"/v1/alerts/{big}", 404), ("POST", f"/v1/alerts/{big}/ack", 404),
                                 ("POST", f"/v1/alerts/{big}/resolve", 404),
                                 ("POST", f"/v1/notifications/{big}/requeue", 409),  # as for any id not dead
                                 ("GET", "/v1/alerts/9223372036854775808", 404)]:
        r = client.request(method, path)
        assert r.status_code == status and r.headers["content-type"] == "application/problem+json", (path, r.text)
    import base64
    cursor = base64.urlsafe_b64encode(b"id:99999999999999999999999").decode().rstrip("=")
    r = client.get(f"/v1/alerts?cursor={cursor}")
    assert r.status_code == 400 and "cursor" in r.json()["detail"]
    assert len(client.get("/v1/alerts").json()["alerts"]) == 1
