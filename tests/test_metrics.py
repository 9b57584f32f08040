"""Scrape /metrics after a scripted scenario and check the values."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import SF, run_worker_once


def scrape(client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_after_a_scenario(client, clock) -> None:
    for i in range(3):
        client.post("/v1/events", json={**SF, "event_id": f"e{i}"})
    client.post("/v1/events", json={**SF, "event_id": "e0"})  # a replay
    client.post("/v1/events", json={**SF, "integration_id": "hs", "error": "invalid api key"})
    client.post("/v1/events", json={"error": "no integration"})  # refused
    client.post("/v1/events", content=b"{", headers={"content-type": "application/json"})  # refused
    clock.advance(seconds=3)
    run_worker_once(client.app)
    client.post("/v1/events", json={"integration_id": "hs", "status": "succeeded"})
    m = scrape(client)
    assert all(name.startswith("alerts_") for name, _ in m if not name.startswith(("python_", "process_")))
    assert m[("alerts_events_received_total", (("outcome", "accepted"), ("source", "native")))] == 5
    assert m[("alerts_events_received_total", (("outcome", "duplicate"), ("source", "native")))] == 1
    assert m[("alerts_events_received_total", (("outcome", "rejected"), ("source", "native")))] == 1
    assert m[("alerts_requests_refused_total", (("route", "/v1/events"), ("status", "422")))] == 1
    assert m[("alerts_requests_refused_total", (("route", "/v1/events"), ("status", "400")))] == 1
    assert m[("alerts_alerts", (("state", "firing"),))] == 1
    assert m[("alerts_alerts", (("state", "resolved"),))] == 1
    assert m[("alerts_notifications", (("channel", "file"), ("status", "sent")))] == 2
    assert m[("alerts_notifications", (("channel", "file"), ("status", "pending")))] == 1  # the resolved message
    assert m[("alerts_outbox_depth", ())] == 1
    assert m[("alerts_notifications_delivered_total", (("channel", "file"), ("kind", "firing")))] == 2
    assert m[("alerts_delivery_latency_seconds_count", (("channel", "file"),))] == 2
    assert m[("alerts_delivery_latency_seconds_sum", (("channel", "file"),))] == 6.0  # 3 s each by the test clock
    clock.advance(seconds=10)
    assert scrape(client)[("alerts_outbox_oldest_pending_seconds", ())] == 10.0


def test_healthz_and_readyz(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
