"""Without [server] api_tokens the API answers anyone who reaches it: a web page must not be one of them
(found by a security review — a cross-site form acknowledged and resolved alerts, and a DNS-rebinding
page read them)."""

from __future__ import annotations

from tests.helpers import SF, alerts
from tests.webhook_kit import PAGERDUTY, pagerduty


def failing(client) -> int:
    r = client.post("/v1/events", json=SF)
    assert r.status_code == 202, r.text
    return r.json()["alert_ids"][0]


def test_a_cross_site_form_cannot_change_anything(client) -> None:
    alert_id = failing(client)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        r = client.post(f"/v1/alerts/{alert_id}/resolve", content="x=1",
                        headers={"Content-Type": "application/x-www-form-urlencoded", **headers})
        assert r.status_code == 403, (headers, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert "other sites" in r.json()["detail"]
    r = client.post("/v1/events", json=SF, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    [alert] = alerts(client.app.state.engine)
    assert alert.state == "firing" and alert.count == 1  # nothing was resolved, nothing counted


def test_a_dns_rebinding_page_is_not_answered(client) -> None:
    failing(client)
    r = client.get("/v1/alerts", headers={"Host": "rebind.evil.example:8080"})
    assert r.status_code == 403 and "does not name this server" in r.json()["detail"]
    r = client.get("/", headers={"Host": "rebind.evil.example:8080"})  # the dashboard, with its forms
    assert r.status_code == 403


def test_curl_the_cli_and_the_same_origin_still_work(client) -> None:
    alert_id = failing(client)
    assert client.get("/v1/alerts", headers={"Host": "localhost:8080"}).status_code == 200
    assert client.get("/v1/alerts", headers={"Host": "[::1]:8080"}).status_code == 200
    r = client.post(f"/v1/alerts/{alert_id}/ack", headers={"Origin": "http://127.0.0.1:8080"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert client.get("/healthz", headers={"Host": "rebind.evil.example"}).status_code == 200


def test_behind_a_proxy_the_public_name_is_answered(make_client, make_settings) -> None:
    client = make_client(make_settings(server={"public_url": "https://alerts.example.com"}))
    assert client.get("/v1/alerts", headers={"Host": "alerts.example.com"}).status_code == 200
    assert client.get("/v1/alerts", headers={"Host": "other.example.com"}).status_code == 403


def test_with_api_tokens_or_signatures_the_checks_are_not_needed(make_client, make_settings) -> None:
    client = make_client(make_settings(server={"api_tokens": ["t0ken-for-tests-0123456789"]},
                                       webhooks={"pagerduty": {"secrets": [PAGERDUTY]}}))
    r = client.get("/v1/alerts", headers={"Host": "alerts.internal", "Authorization": "Bearer t0ken-for-tests-0123456789"})
    assert r.status_code == 200
    r = pagerduty(client, {"event_action": "resolve", "dedup_key": "sf-prod"})
    assert r.status_code == 202  # a signed webhook from anywhere


def test_behind_a_proxy_the_public_origin_is_this_server(make_client, make_settings) -> None:
    """Found by a code review: a proxy that sends Host 127.0.0.1 made the dashboard's own Origin foreign."""
    client = make_client(make_settings(server={"public_url": "https://alerts.example.com"}))
    alert_id = failing(client)
    r = client.post(f"/v1/alerts/{alert_id}/ack", headers={"Origin": "https://alerts.example.com",
                                                           "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200, r.text
    r = client.post(f"/v1/alerts/{alert_id}/resolve", headers={"Origin": "https://alerts.example.com.evil.io"})
    assert r.status_code == 403
