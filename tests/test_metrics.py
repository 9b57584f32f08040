"""Scrape /metrics after a scripted scenario and check the values."""

from __future__ import annotations

from datetime import timedelta

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


def test_a_row_waiting_out_its_backoff_still_counts_as_oldest(client, clock) -> None:
    """Found by a fault review: during an SMTP outage the gauge read 0 between retries."""
    from alerts.storage import Notification, session_scope

    client.post("/v1/events", json=SF)
    engine = client.app.state.engine
    with session_scope(engine) as s:
        [row] = s.query(Notification).all()
        row.status, row.attempts, row.next_attempt_at = "failed", 3, clock.now + timedelta(hours=1)
    clock.advance(minutes=20)
    assert scrape(client)[("alerts_outbox_oldest_pending_seconds", ())] == 20 * 60


def test_healthz_and_readyz(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_ingest_transaction_metrics(client) -> None:
    """Each committed ingest transaction is counted with its requests, events and phase timings."""
    before = scrape(client)
    assert client.post("/v1/events", json={**SF, "event_id": "t1"}).status_code == 202
    batch = [{**SF, "event_id": f"t{i}"} for i in range(2, 5)]
    assert client.post("/v1/events", json=batch).status_code == 202
    assert client.post("/v1/events", json={"error": "no integration"}).status_code == 422  # never reaches a commit
    m = scrape(client)

    def grew(name: str, labels: tuple = ()) -> float:
        return m[(name, labels)] - before.get((name, labels), 0.0)

    assert grew("alerts_ingest_transaction_requests_count") == 2  # one transaction per sequential request
    assert grew("alerts_ingest_transaction_requests_sum") == 2
    assert grew("alerts_ingest_transaction_events_sum") == 4
    assert m[("alerts_ingest_transaction_events_bucket", (("le", "1.0"),))] - \
        before.get(("alerts_ingest_transaction_events_bucket", (("le", "1.0"),)), 0.0) == 1
    for phase in ("wait", "work", "commit"):
        assert grew("alerts_ingest_transaction_seconds_count", (("phase", phase),)) == 2
    assert grew("alerts_ingest_transaction_seconds_sum", (("phase", "commit"),)) > 0
    assert grew("alerts_ingest_transaction_seconds_sum", (("phase", "work"),)) > 0
