"""Vendor webhooks end to end: documented payloads in, alerts (integration, provider, code, link) out."""

from __future__ import annotations

import json
import logging

import pytest

from alerts.jsonlog import JsonFormatter
from alerts.storage import Alert, Event
from alerts.web.webhooks import startup_warnings
from tests import webhook_kit as kit
from tests.helpers import alerts, events, rows

FIVETRAN_LINK = "https://fivetran.com/dashboard/connectors/{}/status"
AIRBYTE_WS = "https://cloud.airbyte.com/workspaces/b510e39b-e9e2-4833-9a3a-963e51d35fb4"


@pytest.fixture
def hooked(make_client, make_settings):
    return make_client(make_settings(webhooks=kit.hooks()))


SEND = {"fivetran": kit.fivetran, "airbyte": kit.airbyte, "alertmanager": kit.alertmanager,
        "pagerduty": kit.pagerduty}

# (payload file, sender, [(integration_id, integration_name, provider, code, link)], events stored, ignored)
OPENS = [
    pytest.param("fivetran_sync_end_failure.json", "fivetran",
                 [("mystified_presiding", "salesforce_prod", "salesforce", "invalid_grant",
                   FIVETRAN_LINK.format("mystified_presiding"))], 1, 0, id="fivetran-sync_end-FAILURE_WITH_TASK"),
    pytest.param("fivetran_sync_end_google_ads.json", "fivetran",
                 [("clang_taught", "google_ads_emea", "google", "invalid_grant", FIVETRAN_LINK.format("clang_taught"))],
                 1, 0, id="fivetran-sync_end-FAILURE-google_ads-connector-type"),
    pytest.param("fivetran_sync_end_reconnect_only.json", "fivetran",
                 [("sweeping_nobility", "hubspot_marketing", "hubspot", "invalid_grant",
                   FIVETRAN_LINK.format("sweeping_nobility"))], 1, 0, id="fivetran-reconnect-task-without-known-text"),
    pytest.param("fivetran_connection_failure.json", "fivetran",
                 [("tidal_grateful", "orders_db", "postgres", "invalid_credentials",
                   FIVETRAN_LINK.format("tidal_grateful"))], 1, 0, id="fivetran-connection_failure-postgres_rds"),
    pytest.param("fivetran_sync_end_not_auth.json", "fivetran", [], 1, 0, id="fivetran-failure-that-is-not-auth"),
    pytest.param("fivetran_sync_start.json", "fivetran", [], 0, 1, id="fivetran-sync_start-ignored"),
    pytest.param("airbyte_failed_sync.json", "airbyte",
                 [("c0655b08-1511-4e72-b7da-24c5d54de532", "HubSpot (marketing)", "hubspot", "access_token_expired",
                   f"{AIRBYTE_WS}/source/c0655b08-1511-4e72-b7da-24c5d54de532")], 1, 0, id="airbyte-source-failure"),
    pytest.param("airbyte_failed_sync_destination.json", "airbyte",
                 [("5621c38f-8048-4abb-85ca-b34ff8d9a298", "Snowflake", "snowflake", "invalid_credentials",
                   f"{AIRBYTE_WS}/destination/5621c38f-8048-4abb-85ca-b34ff8d9a298")], 1, 0,
                 id="airbyte-destination-failure"),
    pytest.param("airbyte_failed_sync_docs.json", "airbyte", [], 1, 0, id="airbyte-docs-example-not-auth"),
    pytest.param("alertmanager_firing.json", "alertmanager",
                 [("hubspot-prod", None, "hubspot", "access_token_expired", None)], 1, 1,
                 id="alertmanager-v4-firing-and-an-alert-that-is-not-ours"),
    pytest.param("grafana_firing.json", "alertmanager",
                 [("sf-prod", None, "salesforce", "access_token_expired", None)], 1, 0, id="grafana-contact-point"),
    pytest.param("pagerduty_trigger.json", "pagerduty",
                 [("sf-prod", "Salesforce (prod)", "salesforce", "invalid_grant", None)], 1, 0,
                 id="pagerduty-trigger-with-custom_details"),
    pytest.param("pagerduty_trigger_minimal.json", "pagerduty",
                 [("zendesk-support", None, None, "access_token_expired", None)], 1, 0,
                 id="pagerduty-trigger-minimal"),
]


@pytest.mark.parametrize(("name", "kind", "expected", "stored", "ignored"), OPENS)
def test_documented_payloads_open_the_right_alert(hooked, name, kind, expected, stored, ignored) -> None:
    engine = hooked.app.state.engine
    r = SEND[kind](hooked, kit.load(name))
    assert r.status_code in (200, 202), r.text
    assert len(events(engine)) == stored
    if kind != "pagerduty":
        assert r.json()["ignored"] == ignored
    got = [(a.integration_id, a.integration_name, a.provider, a.code, a.reauthorize_url) for a in alerts(engine)]
    assert got == expected
    assert all(a.state == "firing" for a in alerts(engine))
    assert r.json()["alert_ids"] == [a.id for a in alerts(engine)]


def test_fivetran_test_event_is_acknowledged_and_opens_nothing(hooked) -> None:
    r = kit.fivetran(hooked, kit.load("fivetran_test_event.json"))
    assert r.status_code == 200 and r.json()["test"] is True and r.json()["accepted"] == 0
    assert kit.counts(hooked.app.state.engine) == (0, 0, 0)


RESOLVES = [
    pytest.param("fivetran", ["fivetran_sync_end_failure.json"], "fivetran_sync_end_success.json", id="fivetran-sync_end"),
    pytest.param("fivetran", ["fivetran_connection_failure.json"], "fivetran_connection_successful.json",
                 id="fivetran-connection"),
    pytest.param("airbyte", ["airbyte_failed_sync.json", "airbyte_failed_sync_destination.json"],
                 "airbyte_successful_sync.json", id="airbyte-source-and-destination"),
    pytest.param("alertmanager", ["alertmanager_firing.json"], "alertmanager_resolved.json", id="alertmanager"),
    pytest.param("pagerduty", ["pagerduty_trigger.json"], "pagerduty_resolve.json", id="pagerduty-by-dedup_key"),
]


@pytest.mark.parametrize(("kind", "failures", "success"), RESOLVES)
def test_success_resolves(hooked, kind, failures, success) -> None:
    engine = hooked.app.state.engine
    for name in failures:
        assert SEND[kind](hooked, kit.load(name)).status_code in (200, 202)
    opened = alerts(engine)
    assert len(opened) == len(failures) and all(a.state == "firing" for a in opened)
    r = SEND[kind](hooked, kit.load(success))
    assert r.status_code in (200, 202)
    assert sorted(r.json()["alert_ids"]) == sorted(a.id for a in opened)
    assert all(a.state == "resolved" and a.resolved_by == f"{kind} success event" for a in alerts(engine))


def test_pagerduty_acknowledge_and_replayed_trigger(hooked) -> None:
    engine = hooked.app.state.engine
    r = kit.pagerduty(hooked, kit.load("pagerduty_trigger.json"))
    assert r.status_code == 202
    assert r.json()["status"] == "success" and r.json()["dedup_key"] == "airflow-sf-prod-auth"
    again = kit.pagerduty(hooked, kit.load("pagerduty_trigger.json"))
    assert again.status_code == 202 and again.json()["duplicates"] == 1
    [alert] = alerts(engine)
    assert alert.count == 1 and alert.labels["pagerduty_dedup_key"] == "airflow-sf-prod-auth"
    r = kit.pagerduty(hooked, kit.load("pagerduty_acknowledge.json"))
    assert r.status_code == 202 and r.json()["alert_ids"] == [alert.id]
    [alert] = alerts(engine)
    assert alert.state == "acknowledged" and alert.acknowledged_by == "pagerduty acknowledge"


def test_pagerduty_resolve_finds_an_alert_another_source_opened(hooked) -> None:
    """Found by a README walk-through: the trigger counted into the open alert without leaving its
    dedup_key there, so the acknowledge and resolve naming that key matched nothing."""
    engine = hooked.app.state.engine
    body = b'{"integration_id": "sf-prod", "provider": "salesforce", "error": "invalid_grant: expired"}'
    assert kit.native(hooked, body).status_code == 202
    assert kit.pagerduty(hooked, kit.load("pagerduty_trigger.json")).status_code == 202
    [alert] = alerts(engine)
    assert alert.count == 2 and alert.labels["pagerduty_dedup_key"] == "airflow-sf-prod-auth"
    r = kit.pagerduty(hooked, kit.load("pagerduty_acknowledge.json"))
    assert r.status_code == 202 and r.json()["alert_ids"] == [alert.id]
    r = kit.pagerduty(hooked, kit.load("pagerduty_resolve.json"))
    assert r.status_code == 202 and r.json()["alert_ids"] == [alert.id]
    [alert] = alerts(engine)
    assert alert.state == "resolved" and alert.resolved_by == "pagerduty success event"


def test_alertmanager_resend_is_a_duplicate_and_labels_are_configurable(make_client, make_settings) -> None:
    client = make_client(make_settings(webhooks=kit.hooks(alertmanager={
        "labels": {"integration_id": "connector", "provider": "vendor"}, "error_annotations": ["summary"]})))
    engine = client.app.state.engine
    body = kit.load_json("alertmanager_firing.json")
    alert = body["alerts"][0]
    alert["labels"] = {"alertname": "AuthBroken", "connector": "xero-books", "vendor": "xero"}
    alert["annotations"] = {"summary": "invalid_grant", "description": "ignored: not in error_annotations"}
    for _ in range(3):  # Alertmanager re-sends the group every repeat_interval
        r = kit.alertmanager(client, kit.dumps(body))
        assert r.status_code == 200
    assert r.json()["duplicates"] == 1
    [a] = alerts(engine)
    assert (a.integration_id, a.provider, a.code, a.count) == ("xero-books", "xero", "invalid_grant", 1)
    assert a.labels == {"alertname": "AuthBroken", "connector": "xero-books", "vendor": "xero"}


def test_fivetran_replay_is_acknowledged_once(hooked) -> None:
    engine = hooked.app.state.engine
    body = kit.load("fivetran_sync_end_failure.json")
    first = kit.fivetran(hooked, body)
    replay = kit.fivetran(hooked, body)
    assert first.json()["accepted"] == 1 and replay.status_code == 200
    assert replay.json() == {"accepted": 0, "duplicates": 1, "alert_ids": [], "ignored": 0}
    assert len(events(engine)) == 1 and alerts(engine)[0].count == 1
    # the same sync's event re-serialised (different bytes) is still the same delivery (R1.5)
    reordered = json.dumps(json.loads(body), indent=None, sort_keys=True).encode()
    assert kit.fivetran(hooked, reordered).json()["duplicates"] == 1


def test_configured_links_beat_the_fivetran_page(make_client, make_settings) -> None:
    client = make_client(make_settings(
        webhooks=kit.hooks(),
        integrations=[{"id": "mystified_presiding", "reauthorize_url": "https://etl.example.com/sf/reauth"}],
        links={"allowed_hosts": ["etl.example.com"]},
    ))
    kit.fivetran(client, kit.load("fivetran_sync_end_failure.json"))
    assert alerts(client.app.state.engine)[0].reauthorize_url == "https://etl.example.com/sf/reauth"


def test_airbyte_self_hosted_link_must_be_an_allowed_host(make_client, make_settings) -> None:
    body = kit.load_json("airbyte_failed_sync.json")
    body["data"]["source"]["url"] = "https://airbyte.internal.example.com/workspaces/w/source/s"
    closed = make_client(make_settings(webhooks=kit.hooks()))
    kit.airbyte(closed, kit.dumps(body))
    assert alerts(closed.app.state.engine)[0].reauthorize_url is None  # dropped: host not allowed


def test_airbyte_self_hosted_link_with_allowed_host(make_client, make_settings, tmp_path) -> None:
    body = kit.load_json("airbyte_failed_sync.json")
    body["data"]["source"]["url"] = "https://airbyte.internal.example.com/workspaces/w/source/s"
    client = make_client(make_settings(webhooks=kit.hooks(),
                                       links={"allowed_hosts": ["airbyte.internal.example.com"]}))
    kit.airbyte(client, kit.dumps(body))
    assert alerts(client.app.state.engine)[0].reauthorize_url == body["data"]["source"]["url"]


# -- refusals ---------------------------------------------------------------------------------------


def _unauthenticated(client):
    """One request per way of being unauthenticated, each expected to get the same 401."""
    ft = kit.load("fivetran_sync_end_failure.json")
    am = kit.load("alertmanager_firing.json")
    return {
        "unknown-source": client.post("/v1/webhooks/stripe", content=ft, headers=kit.JSON),
        "unknown-source-with-token": client.post("/v1/webhooks/stitchy/tok", content=ft, headers=kit.JSON),
        "fivetran-bad-signature": kit.fivetran(client, ft, secret="x" * 32),
        "fivetran-no-signature": client.post("/v1/webhooks/fivetran", content=ft, headers=kit.JSON),
        "airbyte-bad-token": kit.airbyte(client, kit.load("airbyte_failed_sync.json"), token="nope-" * 6),
        "airbyte-no-token": client.post("/v1/webhooks/airbyte", content=kit.load("airbyte_failed_sync.json"),
                                        headers=kit.JSON),
        "alertmanager-bad-bearer": kit.alertmanager(client, am, token="wrong-token-" * 3),
        "alertmanager-basic-auth": client.post("/v1/webhooks/alertmanager", content=am,
                                               headers={**kit.JSON, "Authorization": "Basic dXNlcjpwYXNz"}),
        "pagerduty-bad-routing-key": kit.pagerduty(client, kit.load("pagerduty_trigger.json"), key="K" * 32),
        "pagerduty-undecodable": client.post("/v1/webhooks/pagerduty", content=b"{nope", headers=kit.JSON),
        "native-unsigned": client.post("/v1/events", content=kit.dumps({"integration_id": "x", "error": "e"}),
                                       headers=kit.JSON),
    }


def test_every_authentication_failure_gets_the_same_401_and_stores_nothing(hooked) -> None:
    engine = hooked.app.state.engine
    answers = _unauthenticated(hooked)
    bodies = {name: (r.status_code, r.headers["content-type"], r.content) for name, r in answers.items()}
    assert len(set(bodies.values())) == 1, bodies  # byte-identical: unknown source == bad signature (R1.8)
    status, ctype, content = next(iter(bodies.values()))
    assert (status, ctype) == (401, "application/problem+json")
    assert json.loads(content) == {"type": "about:blank", "title": "Unauthorized", "status": 401,
                                   "detail": "missing or invalid credentials"}
    assert kit.counts(engine) == (0, 0, 0)
    guard = hooked.app.state.webhook_guard
    assert guard.refusal_count(reason="unknown_source") == 2
    assert guard.refusal_count(source="fivetran", reason="bad_signature") == 1
    assert guard.refusal_count(source="fivetran", reason="missing_header") == 1
    assert guard.refusal_count(source="airbyte", reason="bad_token") == 1
    assert guard.refusal_count(source="pagerduty", reason="undecodable") == 1
    assert guard.refusal_count() == len(answers)


def test_vendor_endpoints_without_secrets_are_closed_unless_allow_unsigned(make_client, make_settings) -> None:
    closed = make_client(make_settings())
    assert kit.is_problem(kit.fivetran(closed, kit.load("fivetran_sync_end_failure.json")), 401)
    assert kit.is_problem(kit.airbyte(closed, kit.load("airbyte_failed_sync.json")), 401)
    assert kit.is_problem(kit.alertmanager(closed, kit.load("alertmanager_firing.json")), 401)
    assert kit.is_problem(kit.pagerduty(closed, kit.load("pagerduty_trigger.json")), 401)
    assert closed.app.state.webhook_guard.refusal_count(reason="not_configured") == 4
    assert kit.counts(closed.app.state.engine) == (0, 0, 0)

    opened = make_client(make_settings(webhooks={k: {"allow_unsigned": True}
                                                 for k in ("fivetran", "airbyte", "alertmanager", "pagerduty")}))
    ft = kit.load("fivetran_sync_end_failure.json")
    assert opened.post("/v1/webhooks/fivetran", content=ft, headers=kit.JSON).status_code == 200
    assert opened.post("/v1/webhooks/airbyte", content=kit.load("airbyte_failed_sync.json"),
                       headers=kit.JSON).status_code == 200
    assert opened.post("/v1/webhooks/alertmanager", content=kit.load("alertmanager_firing.json"),
                       headers=kit.JSON).status_code == 200
    assert kit.pagerduty(opened, kit.load("pagerduty_trigger.json"), key="anything").status_code == 202
    assert len(alerts(opened.app.state.engine)) == 4


def test_configured_secrets_still_apply_when_allow_unsigned(make_client, make_settings) -> None:
    client = make_client(make_settings(webhooks=kit.hooks(fivetran={"allow_unsigned": True})))
    r = client.post("/v1/webhooks/fivetran", content=kit.load("fivetran_sync_end_failure.json"), headers=kit.JSON)
    assert r.status_code == 401


BAD_INPUT = [
    pytest.param("fivetran", b'{"event": "sync_end"}', "text/plain", 415, "unsupported_media_type", id="content-type"),
    pytest.param("fivetran", b'{"event": "sync_end", "event": "x"}', "application/json", 400, "bad_json",
                 id="duplicate-key"),
    pytest.param("fivetran", b'{"event": "sync_end", "created": NaN}', "application/json", 400, "bad_json", id="nan"),
    pytest.param("fivetran", b"[" * 200 + b"]" * 200, "application/json", 400, "bad_json", id="deep"),
    pytest.param("fivetran", b'{"event": "\xff"}', "application/json", 400, "bad_json", id="bad-utf8"),
    pytest.param("fivetran", b"[1, 2]", "application/json", 422, "invalid_payload", id="not-an-object"),
    pytest.param("fivetran", b'{"event": "sync_end", "created": "yesterday"}', "application/json", 422,
                 "invalid_payload", id="created-not-a-time"),
    pytest.param("airbyte", b'{"text": "Your connection failed"}', "application/json", 422, "invalid_payload",
                 id="airbyte-slack-format"),
    pytest.param("alertmanager", b'{"version": "4", "alerts": {}}', "application/json", 422, "invalid_payload",
                 id="alerts-not-an-array"),
    pytest.param("pagerduty", b'{"event_action": "explode"}', "application/json", 422, "invalid_payload",
                 id="pagerduty-unknown-action"),
]


@pytest.mark.parametrize(("kind", "body", "ctype", "status", "reason"), BAD_INPUT)
def test_bad_bodies_are_refused_and_counted(hooked, kind, body, ctype, status, reason) -> None:
    engine = hooked.app.state.engine
    if kind == "fivetran":
        from alerts.sources.signing import sign_fivetran

        r = hooked.post("/v1/webhooks/fivetran", content=body,
                        headers={"content-type": ctype, "X-Fivetran-Signature-256": sign_fivetran(kit.FIVETRAN, body)})
    elif kind == "pagerduty":
        data = json.loads(body)
        r = kit.pagerduty(hooked, data)
    else:
        r = SEND[kind](hooked, body)
    assert kit.is_problem(r, status), r.text
    assert "instance" not in r.json()
    assert kit.counts(engine) == (0, 0, 0)
    assert hooked.app.state.webhook_guard.refusal_count(source=kind, reason=reason) == 1


def test_body_over_the_cap_is_413_even_streamed(hooked) -> None:
    big = b'{"data": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    r = kit.airbyte(hooked, big)
    assert kit.is_problem(r, 413)

    def chunks():
        for _ in range(30):
            yield b"a" * 100_000

    r = hooked.post(f"/v1/webhooks/airbyte/{kit.AIRBYTE}", content=chunks(), headers=kit.JSON)
    assert kit.is_problem(r, 413)
    assert kit.AIRBYTE not in r.text  # the token is never echoed (no "instance")
    assert hooked.app.state.webhook_guard.refusal_count(source="airbyte", reason="body_too_large") == 2
    assert kit.counts(hooked.app.state.engine) == (0, 0, 0)


def test_401s_are_rate_limited_per_address(make_client, make_settings, clock) -> None:
    client = make_client(make_settings(webhooks=kit.hooks(max_unauthorized_per_minute=5)))
    body = kit.load("fivetran_sync_end_failure.json")
    statuses = [kit.fivetran(client, body, secret="y" * 30).status_code for _ in range(5)]
    assert statuses == [401] * 5
    blocked = kit.fivetran(client, body)  # even a good request: the address is blocked for the minute
    assert kit.is_problem(blocked, 429) and 1 <= int(blocked.headers["retry-after"]) <= 60
    assert client.get("/healthz").status_code == 200  # other paths are not affected
    clock.advance(seconds=61)
    assert kit.fivetran(client, body).status_code == 200
    assert client.app.state.webhook_guard.refusal_count(reason="rate_limited") == 1


def test_path_token_never_reaches_logs_or_answers(hooked, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    answers = [
        kit.airbyte(hooked, kit.load("airbyte_failed_sync.json")),
        kit.airbyte(hooked, b"{broken"),
        kit.airbyte(hooked, b"{}", token=kit.AIRBYTE[:-1] + "X"),
        hooked.post(f"/v1/webhooks/airbyte/{kit.AIRBYTE}", content=b"{}", headers={"content-type": "text/plain"}),
    ]
    assert [r.status_code for r in answers] == [200, 400, 401, 415]
    formatter = JsonFormatter()
    # every server-side record (the "httpx" ones are the test client's own request lines)
    logged = "\n".join(formatter.format(rec) for rec in caplog.records if rec.name != "httpx")
    assert "webhooks/airbyte/{token}" in logged  # the access log names the route template…
    assert kit.AIRBYTE not in logged and kit.AIRBYTE[:-1] not in logged  # …never the token
    assert all(kit.AIRBYTE not in r.text for r in answers)
    engine = hooked.app.state.engine
    stored = json.dumps([e.model_dump(mode="json") for e in rows(engine, Event)] +
                        [a.model_dump(mode="json") for a in rows(engine, Alert)])
    assert kit.AIRBYTE not in stored and kit.PAGERDUTY not in stored


def test_secret_matches_are_counted_by_index(make_client, make_settings) -> None:
    client = make_client(make_settings(webhooks=kit.hooks(fivetran={"secrets": [kit.FIVETRAN, kit.FIVETRAN_OLD]})))
    kit.fivetran(client, kit.load("fivetran_sync_end_failure.json"), secret=kit.FIVETRAN_OLD)
    kit.fivetran(client, kit.load("fivetran_sync_end_success.json"), secret=kit.FIVETRAN)
    registry = client.app.state.webhook_guard.registry
    value = registry.get_sample_value
    assert value("alerts_webhook_secret_matches_total", {"source": "fivetran", "index": "1"}) == 1
    assert value("alerts_webhook_secret_matches_total", {"source": "fivetran", "index": "0"}) == 1


def test_openapi_documents_every_webhook_with_examples(hooked) -> None:
    spec = hooked.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/webhooks/fivetran", "/v1/webhooks/airbyte/{token}", "/v1/webhooks/alertmanager",
                 "/v1/webhooks/pagerduty", "/v1/events"):
        op = paths[path]["post"]
        examples = op["requestBody"]["content"]["application/json"]["examples"]
        assert len(examples) >= 2, path
        assert any("example" in c for r in op["responses"].values() for c in r.get("content", {}).values()) \
            or path == "/v1/events"
    assert {p["name"] for p in paths["/v1/webhooks/fivetran"]["post"]["parameters"]} == {"X-Fivetran-Signature-256"}
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= {
        p["name"] for p in paths["/v1/events"]["post"]["parameters"]}
    assert not any("{kind" in p for p in paths)  # the catch-all is not advertised
    # the published examples are accepted by the endpoints they document
    from alerts.sources import fivetran

    example = fivetran.EXAMPLES["sync_end_failure"]["value"]
    assert kit.fivetran(hooked, kit.dumps(example)).status_code == 200


def test_startup_warns_about_open_endpoints(make_settings) -> None:
    quiet = make_settings(webhooks=kit.hooks())
    assert startup_warnings(quiet) == []
    exposed = make_settings(server={"host": "0.0.0.0"}, webhooks={"fivetran": {"allow_unsigned": True}})
    messages = startup_warnings(exposed)
    assert any("/v1/events accepts UNSIGNED" in m for m in messages)
    assert any("/v1/webhooks/fivetran accepts UNAUTHENTICATED" in m for m in messages)
    assert startup_warnings(make_settings()) == []  # unsigned native events on loopback: fine
    slack = {"signing_secret": "s" * 32}
    assert any("ANY workspace" in m for m in startup_warnings(make_settings(slack=slack)))
    assert startup_warnings(make_settings(slack={**slack, "team_id": "T0TEAM"})) == []


def test_other_methods_get_405_without_echoing_the_path(hooked) -> None:
    for method in ("GET", "PUT", "DELETE"):
        r = hooked.request(method, f"/v1/webhooks/airbyte/{kit.AIRBYTE}")
        assert kit.is_problem(r, 405) and r.headers["allow"] == "POST"
        assert kit.AIRBYTE not in r.text


def test_every_operation_has_an_example_that_matches_the_api(make_client, make_settings) -> None:
    from alerts.web.openapi_examples import EXAMPLES, has_example

    client = make_client(make_settings())
    spec = client.get("/openapi.json").json()
    missing = [f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m, op in ops.items() if not has_example(op)]
    assert missing == [], "give these operations an example (responses=/openapi_extra on the route, " \
                          "or an entry in alerts/web/openapi_examples.py)"
    # the examples have the keys real answers have
    sf = {"integration_id": "sf-prod", "provider": "salesforce", "error": "invalid_grant"}
    assert client.post("/v1/events", json=sf).status_code == 202
    assert client.post("/v1/silences", json={"integration": "x-*", "duration": "1h", "comment": "c",
                                             "author": "a"}).status_code == 201
    real = {
        ("get", "/v1/alerts"): client.get("/v1/alerts").json(),
        ("get", "/v1/alerts/{alert_id}"): client.get("/v1/alerts/1").json(),
        ("get", "/v1/catalog"): client.get("/v1/catalog").json(),
        ("get", "/v1/silences"): client.get("/v1/silences").json(),
        ("get", "/v1/stats"): client.get("/v1/stats").json(),
        ("get", "/healthz"): client.get("/healthz").json(),
        ("get", "/readyz"): client.get("/readyz").json(),
        ("post", "/v1/alerts/{alert_id}/ack"): client.post("/v1/alerts/1/ack").json(),
        ("post", "/v1/alerts/{alert_id}/resolve"): client.post("/v1/alerts/1/resolve").json(),
        ("delete", "/v1/silences/{silence_id}"): client.delete("/v1/silences/1").json(),
    }

    maps = {"labels", "by_provider", "by_code", "remediation"}  # keyed by data, not by the API

    def paths(value, prefix=""):
        """Dotted key paths of a JSON value (a list by its first item, data-keyed maps as leaves)."""
        if isinstance(value, list):
            return paths(value[0], prefix + "[].") if value else set()
        if not isinstance(value, dict):
            return set()
        out = set()
        for k, v in value.items():
            out.add(prefix + k)
            if k not in maps and (prefix + k) != "entries[].remediation":
                out |= paths(v, prefix + k + ".")
        return out

    for key, answer in real.items():
        example = EXAMPLES[key][2]
        got, want = paths(answer), paths(example)
        if key == ("get", "/v1/catalog"):  # patterns carry optional flags
            assert want <= got, f"example for {key} is out of date: {sorted(want - got)}"
            continue
        empty = {k for k in got if k.endswith(("alerts", "silences"))} - {p.split("[]")[0] for p in got if "[]" in p}
        if empty:  # a list that is empty in the real answer: compare the parent keys only
            want = {p for p in want if not any(p.startswith(e + "[]") for e in empty)}
        assert got == want, f"example for {key} is out of date: {sorted(got ^ want)}"
