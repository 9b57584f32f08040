"""``POST /v1/webhooks/stitch/{token}``: Stitch's post-load webhook resolves the integration's alert."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.ingest import ingest
from alerts.models import AuthErrorEvent
from alerts.sources.stitch import parse_post_load
from alerts.sources.vendor import AdapterError
from tests.helpers import alerts, events

DATA = Path(__file__).parent / "data" / "stitch"
TOKEN = "stitch-post-load-CANARY-token-000001"
HEADERS = {"content-type": "application/json", "user-agent": "StitchLoadingWebhook"}


def post_load(clock: Any, *, name: str = "shopify", extracted: timedelta = timedelta(0)) -> bytes:
    body = json.loads((DATA / "post_load.json").read_text())
    body["integration_name"] = name
    body["tables"][0]["max_time_extracted"] = (clock() + extracted).isoformat().replace("+00:00", "Z")
    return json.dumps(body).encode()


@pytest.fixture
def app(make_client, make_settings, clock, catalog):
    settings = make_settings(webhooks={"stitch": {"secrets": [TOKEN]}})
    client = make_client(settings)
    engine = client.app.state.engine
    # An alert as the poller opens it: the source id, the Stitch source name as a label.
    ingest([AuthErrorEvent(integration_id="228068", integration_name="Shopify (store)", provider="shopify",
                           error="[API] Invalid API key or access token (unrecognized login or wrong password)",
                           source="stitch", labels={"pipeline": "stitch", "stitch_source": "shopify"},
                           occurred_at=clock() - timedelta(hours=1), event_id="stitch-116078.228068.sync.a")],
           engine=engine, settings=settings, catalog=catalog, now=clock())
    return client


def test_documented_body_parses() -> None:
    load = parse_post_load(json.loads((DATA / "post_load.json").read_text()))
    assert load.integration_name == "shopify" and load.tables == ("orders",)
    assert load.extracted_at is not None and load.extracted_at.isoformat() == "2019-07-15T14:43:09.030000+00:00"
    with pytest.raises(AdapterError, match="integration_name"):
        parse_post_load({"tables": []})
    with pytest.raises(AdapterError, match="tables"):
        parse_post_load({"integration_name": "shopify"})


def test_a_load_with_the_right_token_resolves(app, clock, caplog) -> None:
    engine = app.app.state.engine
    with caplog.at_level(logging.INFO):
        r = app.post(f"/v1/webhooks/stitch/{TOKEN}", content=post_load(clock), headers=HEADERS)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1 and r.json()["ignored"] == 0
    [alert] = alerts(engine)
    assert alert.state == "resolved" and alert.resolved_by == "stitch success event"
    ours = [r for r in caplog.records if r.name.startswith("alerts")]  # (httpx here is the test's client)
    assert ours and not any(TOKEN in repr(r.__dict__) for r in ours)  # the access log names the route template

    again = app.post(f"/v1/webhooks/stitch/{TOKEN}", content=post_load(clock), headers=HEADERS)
    assert again.status_code == 200 and again.json()["accepted"] == 0  # nothing open any more
    assert len(events(engine)) == 2


def test_a_load_matches_by_display_name_and_integration_id_too(app, clock) -> None:
    r = app.post(f"/v1/webhooks/stitch/{TOKEN}", content=post_load(clock, name="Shopify (store)"), headers=HEADERS)
    assert r.json()["accepted"] == 1 and alerts(app.app.state.engine)[0].state == "resolved"


def test_a_load_of_data_extracted_before_the_failure_resolves_nothing(app, clock) -> None:
    r = app.post(f"/v1/webhooks/stitch/{TOKEN}", content=post_load(clock, extracted=-timedelta(hours=2)),
                 headers=HEADERS)
    assert r.status_code == 200 and r.json() == {"accepted": 0, "duplicates": 0, "alert_ids": [], "ignored": 1}
    assert alerts(app.app.state.engine)[0].state == "firing"


def test_another_integration_s_load_is_ignored(app, clock) -> None:
    r = app.post(f"/v1/webhooks/stitch/{TOKEN}", content=post_load(clock, name="hubspot"), headers=HEADERS)
    assert r.json()["ignored"] == 1 and alerts(app.app.state.engine)[0].state == "firing"


@pytest.mark.parametrize("path", [
    pytest.param("/v1/webhooks/stitch/not-the-token-at-all-000000000", id="wrong token"),
    pytest.param("/v1/webhooks/stitch", id="no token"),
    pytest.param("/v1/webhooks/stitch/", id="empty token: 401 like any other, not 405 (R1.8)"),
    pytest.param("/v1/webhooks/stitch/a/b", id="a path below the token"),
])
def test_a_wrong_token_is_401_and_stores_nothing(app, clock, path: str) -> None:
    engine = app.app.state.engine
    before = len(events(engine))
    r = app.post(path, content=post_load(clock), headers=HEADERS)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert "token" not in r.json().get("instance", "")
    assert len(events(engine)) == before and alerts(engine)[0].state == "firing"


@pytest.mark.parametrize(("body", "status"), [
    pytest.param(b"{not json", 400, id="not JSON"),
    pytest.param(b'{"integration_name": "shopify", "integration_name": "x", "tables": []}', 400, id="duplicate key"),
    pytest.param(b'["shopify"]', 422, id="not an object"),
    pytest.param(b'{"integration_name": 7, "tables": []}', 422, id="integration_name not a string"),
    pytest.param(b'{"integration_name": "shopify", "tables": {}}', 422, id="tables not an array"),
])
def test_a_malformed_body_is_refused_and_stores_nothing(app, body: bytes, status: int) -> None:
    engine = app.app.state.engine
    r = app.post(f"/v1/webhooks/stitch/{TOKEN}", content=body, headers=HEADERS)
    assert r.status_code == status and r.headers["content-type"] == "application/problem+json"
    assert len(events(engine)) == 1 and alerts(engine)[0].state == "firing"


def test_not_json_content_type_is_415(app, clock) -> None:
    r = app.post(f"/v1/webhooks/stitch/{TOKEN}", content=post_load(clock), headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_without_configured_secrets_every_request_is_refused(make_client, make_settings, clock) -> None:
    client = make_client(make_settings())
    r = client.post(f"/v1/webhooks/stitch/{TOKEN}", content=post_load(clock), headers=HEADERS)
    assert r.status_code == 401
