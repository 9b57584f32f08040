from __future__ import annotations

import pytest

from alerts.stats import percentile
from tests.helpers import SF


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        pytest.param([], 50, None, id="empty"),
        pytest.param([7], 90, 7.0, id="one"),
        pytest.param([1, 2, 3, 4], 50, 2.5, id="even-median"),
        pytest.param([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 90, 91.0, id="p90"),
    ],
)
def test_percentile(values, q, expected) -> None:
    assert percentile(values, q) == expected


def test_stats_time_to_fix_per_provider_and_code(client, clock) -> None:
    def fail(iid, provider, error):
        assert client.post("/v1/events", json={"integration_id": iid, "provider": provider, "error": error}).status_code == 202

    def ok(iid):
        client.post("/v1/events", json={"integration_id": iid, "status": "succeeded"})


    fail("sf-1", "salesforce", "invalid_grant")
    fail("sf-2", "salesforce", "invalid_grant")
    fail("hs-1", "hubspot", "invalid api key")
    clock.advance(hours=1)
    ok("sf-1")
    clock.advance(hours=2)
    ok("sf-2")
    ok("hs-1")
    fail("sf-3", **{k: v for k, v in SF.items() if k != "integration_id"})
    stats = client.get("/v1/stats").json()
    assert stats["alerts"] == {"firing": 1, "acknowledged": 0, "resolved": 3}
    sf = stats["time_to_fix"]["by_provider"]["salesforce"]
    assert sf == {"count": 2, "median_seconds": 7200.0, "p90_seconds": 10080.0}
    assert stats["time_to_fix"]["by_code"]["invalid_api_key"]["median_seconds"] == 10800.0
    assert stats["time_to_fix"]["overall"]["count"] == 3


def test_dashboard_shows_time_to_fix(client, clock) -> None:
    for iid in ("a", "b"):
        client.post("/v1/events", json={"integration_id": iid, "provider": "xero", "error": "invalid_grant"})
    clock.advance(hours=1)
    client.post("/v1/events", json={"integration_id": "a", "status": "succeeded"})
    clock.advance(hours=2)
    client.post("/v1/events", json={"integration_id": "b", "status": "succeeded"})
    page = client.get("/").text
    row = page.split('id="time-to-fix-table"')[1].split("</table>")[0]
    assert "provider <code>xero</code></td><td>2</td><td>2h</td><td>2h 48m</td>" in row
