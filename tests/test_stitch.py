"""The Stitch poller against a local Connect API (``tests/peers/stitch.py``) and a real SQLite file.

Time is the test clock: ``poll_once(now)`` is one poll; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from alerts import storage
from alerts.catalog import Catalog
from alerts.config import ConfigError, Settings
from alerts.netguard import guarded_transport
from alerts.sources.stitch import (
    StitchClient,
    Unavailable,
    parse_extraction,
    parse_retry_after,
    parse_source,
    provider_of,
)
from alerts.stitch_poller import PollResult, StitchPoller
from alerts.storage import Alert, Event
from tests.helpers import alerts, events, notifications, rows
from tests.peers.stitch import CLIENT_ID, TOKEN, StitchState, extraction, source, stitch_server

DATA = Path(__file__).parent / "data" / "stitch"
LINK = f"https://app.stitchdata.com/client/{CLIENT_ID}/pipeline/v2/sources/228068/"
HUBSPOT_401 = "401 Client Error: Unauthorized for url: https://api.hubapi.com/crm/v3/objects/contacts?limit=100"


@dataclass
class Env:
    url: str
    state: StitchState
    settings: Settings
    engine: Any
    catalog: Catalog
    clock: Any
    loop: asyncio.AbstractEventLoop
    pollers: list[StitchPoller]

    def poller(self) -> StitchPoller:
        p = StitchPoller(engine=self.engine, settings=self.settings, catalog=self.catalog, clock=self.clock)
        self.pollers.append(p)
        return p

    def poll(self, poller: StitchPoller, **advance: float) -> PollResult:
        if advance:
            self.clock.advance(**advance)
        return self.loop.run_until_complete(poller.poll_once(self.clock()))


@pytest.fixture
def stitch(make_settings: Callable[..., Settings], catalog: Catalog, clock: Any) -> Iterator[Env]:
    with stitch_server() as (url, state):
        state.sources = [
            source(228068, "hubspot", "HubSpot (marketing)", "platform.hubspot"),
            source(233312, "recurly", "Recurly", "platform.recurly", oauth=False),
            source(244788, "zendesk", "Zendesk", "platform.zendesk"),
        ]
        settings = make_settings(stitch={"client_id": CLIENT_ID, "token": TOKEN, "base_url": url,
                                         "allow_loopback_base_url": True})
        engine = storage.make_engine(settings.database_url)
        storage.upgrade(engine)
        loop = asyncio.new_event_loop()
        env = Env(url, state, settings, engine, catalog, clock, loop, [])
        yield env
        for p in env.pollers:
            loop.run_until_complete(p.aclose())
        loop.close()
        engine.dispose()


def failed_hubspot(env: Env, job: str = "job-1", *, ago: timedelta = timedelta(minutes=10), **kw: Any) -> dict:
    item = extraction(228068, job, completed=env.clock() - ago, tap_exit=1,
                      tap_description=kw.pop("tap_description", HUBSPOT_401), **kw)
    env.state.set_extraction(item)
    return item


# -- the documented shapes -----------------------------------------------------------------------


def test_documented_extractions_page_maps_to_what_failed_and_why() -> None:
    page = json.loads((DATA / "extractions_page.json").read_text())
    got = {x.source_id: x for x in map(parse_extraction, page["data"]) if x}
    terminated, shopify, healthy, recurly = got["123241"], got["228068"], got["233312"], got["244788"]
    assert not terminated.failed and not terminated.succeeded  # all exit statuses null: not an answer
    assert shopify.failed and shopify.phase == "tap" and "Invalid API key" in (shopify.description or "")
    assert healthy.succeeded and healthy.description is None
    assert recurly.failed and recurly.completion_time == datetime(2020, 6, 19, 14, 43, 8, tzinfo=UTC)
    assert recurly.job_name == "116078.244788.sync.2deb271f-b23b-11ea-894c-0ee2efcbf789"


@pytest.mark.parametrize(
    ("statuses", "failed", "succeeded"),
    [
        pytest.param((0, 0, 0), False, True, id="all phases succeeded"),
        pytest.param((1, None, None), True, False, id="discovery failed (credentials are checked first)"),
        pytest.param((0, 1, 0), True, False, id="tap failed"),
        pytest.param((0, -9, 0), True, False, id="tap killed (negative code)"),
        pytest.param((0, 0, 1), False, False, id="only the target failed: Stitch's side, not the source's"),
        pytest.param((0, None, None), False, False, id="still running"),
    ],
)
def test_exit_statuses(statuses: tuple, failed: bool, succeeded: bool) -> None:
    d, t, g = statuses
    x = parse_extraction(extraction(1, "j", completed=datetime(2026, 1, 1, tzinfo=UTC), discovery_exit=d,
                                    tap_exit=t, target_exit=g))
    assert x is not None and (x.failed, x.succeeded) == (failed, succeeded)


def test_documented_sources_give_names_providers_and_oauth(catalog: Catalog) -> None:
    adwords, mysql = (parse_source(s) for s in json.loads((DATA / "sources.json").read_text()))
    assert adwords and (adwords.id, adwords.name, adwords.display_name) == ("119945", "adwords", "AdWords2")
    assert adwords.auth_method == "oauth2" and adwords.provider(catalog) == "google"
    assert mysql and mysql.auth_method is None and mysql.provider(catalog) == "mysql"


@pytest.mark.parametrize(
    ("source_type", "provider"),
    [("platform.hubspot", "hubspot"), ("tap-hubspot", "hubspot"), ("platform.salesforce", "salesforce"),
     ("platform.google_analytics", "google"), ("platform.postgres", "postgres"), ("tap-recurly", "recurly")],
)
def test_provider_from_source_type(catalog: Catalog, source_type: str, provider: str) -> None:
    assert provider_of(source_type, catalog) == provider


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120), ("0", 1), ("86400", 3600), (None, 60), ("soon", 60),
     ("Sat, 28 Nov 2026 09:02:00 GMT", 120)],
)
def test_retry_after(header: str | None, seconds: int) -> None:
    now = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == timedelta(seconds=seconds)


def test_config_needs_client_id_and_token_together(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="stitch: .*both client_id and token"):
        make_settings(stitch={"client_id": 116078})
    with pytest.raises(ConfigError, match="poll_interval must be at least 1m"):
        make_settings(stitch={"client_id": 116078, "token": "t", "poll_interval": "10s"})
    with pytest.raises(ConfigError, match="loopback base_url needs allow_loopback_base_url"):
        make_settings(stitch={"client_id": 116078, "token": "t", "base_url": "http://127.0.0.1:1"})
    s = make_settings(stitch={"client_id": "116078", "token": "ac_canary_secret"})
    assert s.stitch.client_id == 116078 and s.stitch.poll_interval == timedelta(minutes=5)
    assert "ac_canary_secret" not in repr(s) + s.model_dump_json()


# -- the poller ----------------------------------------------------------------------------------


def test_auth_failure_opens_exactly_one_alert_with_the_stitch_link(stitch: Env) -> None:
    failed_hubspot(stitch)
    stitch.state.set_extraction(extraction(233312, "ok-1", completed=stitch.clock() - timedelta(minutes=3)))
    stitch.state.set_extraction(extraction(244788, "busy-1", completed=stitch.clock() - timedelta(minutes=4),
                                           tap_exit=1, tap_description="429 Too Many Requests: rate limit exceeded "
                                           "for this Zendesk account, please retry after 60 seconds"))
    stitch.state.set_extraction(extraction(300000, "running", completed=None, tap_exit=None, target_exit=None))

    result = stitch.poll(stitch.poller())

    assert result.outcome == "ok" and result.extractions == 4
    [alert] = alerts(stitch.engine)
    assert (alert.integration_id, alert.integration_name, alert.provider) == ("228068", "HubSpot (marketing)", "hubspot")
    assert (alert.code, alert.auth_method, alert.account_id) == ("access_token_expired", "oauth2", str(CLIENT_ID))
    assert alert.reauthorize_url == LINK
    assert alert.labels["stitch_source"] == "hubspot" and alert.count == 1
    assert alert.first_seen == stitch.clock() - timedelta(minutes=10)  # the extraction's completion time
    stored = {e.event_id: e for e in events(stitch.engine)}
    assert set(stored) == {"stitch-116078.228068.sync.job-1", "stitch-116078.244788.sync.busy-1"}
    assert stored["stitch-116078.244788.sync.busy-1"].code is None  # stored, never alerts
    assert len(notifications(stitch.engine, kind="firing")) == 1


def test_the_same_failed_job_seen_on_ten_polls_counts_once(stitch: Env) -> None:
    failed_hubspot(stitch)
    poller = stitch.poller()
    for _ in range(10):
        assert stitch.poll(poller, minutes=5).outcome == "ok"
    [alert] = alerts(stitch.engine)
    assert alert.count == 1 and len(events(stitch.engine)) == 1
    assert len(notifications(stitch.engine)) == 1
    assert len(stitch.state.calls(f"/v4/{CLIENT_ID}/extractions")) == 10
    assert len(stitch.state.calls("/v4/sources")) == 1  # names are only looked up when there is news

    failed_hubspot(stitch, "job-2", ago=timedelta(minutes=1))  # a new failed extraction does count
    stitch.poll(poller, minutes=5)
    assert alerts(stitch.engine)[0].count == 2 and len(notifications(stitch.engine)) == 1


def test_a_later_success_resolves_and_an_older_one_does_not(stitch: Env) -> None:
    failed_hubspot(stitch)
    poller = stitch.poller()
    stitch.poll(poller)
    stitch.state.set_extraction(extraction(228068, "older-ok", completed=stitch.clock() - timedelta(minutes=20)))
    stitch.poll(poller, minutes=5)
    assert alerts(stitch.engine)[0].state == "firing"
    assert len(events(stitch.engine)) == 1  # a success that resolves nothing stores nothing

    fixed_at = stitch.clock()
    stitch.state.set_extraction(extraction(228068, "fixed", completed=fixed_at))
    stitch.poll(poller, minutes=5)
    [alert] = alerts(stitch.engine)
    assert alert.state == "resolved" and alert.resolved_by == "stitch success event"
    stitch.poll(poller, minutes=5)  # seen again: nothing more happens
    assert len(events(stitch.engine)) == 2 and alerts(stitch.engine)[0].resolved_at == fixed_at


def test_a_restart_does_not_re_alert(stitch: Env) -> None:
    failed_hubspot(stitch)
    stitch.poll(stitch.poller())
    before = (len(events(stitch.engine)), len(notifications(stitch.engine)))

    restarted = stitch.poller()  # a new process: new client, new poller, the same database
    assert stitch.poll(restarted, minutes=5).accepted == 0
    [alert] = alerts(stitch.engine)
    assert alert.count == 1 and (len(events(stitch.engine)), len(notifications(stitch.engine))) == before


def test_a_short_description_sends_us_to_the_extraction_log(stitch: Env) -> None:
    job = failed_hubspot(stitch, tap_description="Tap failed with code 1")["job_name"]
    stitch.state.logs[job] = (DATA / "extraction.log").read_text()
    poller = stitch.poller()
    result = stitch.poll(poller)
    assert result.logs_fetched == 1
    [alert] = alerts(stitch.engine)
    assert alert.code == "access_token_expired"
    assert alert.last_error.startswith("Tap failed with code 1: 401 Client Error: Unauthorized")
    s3 = stitch.state.calls("/s3/")
    assert len(s3) == 1 and s3[0].authorization is None  # the token never goes to the log's host
    stitch.poll(poller, minutes=5)
    assert len(stitch.state.calls("/s3/")) == 1  # read once


def refusals(caplog) -> list[str]:
    return [r.error for r in caplog.records if r.getMessage() == "stitch extraction log refused"]


@pytest.mark.parametrize("origin", ["https://10.0.0.7", "https://169.254.169.254", "https://[::ffff:127.0.0.1]"])
def test_a_redirect_to_a_private_address_is_never_followed(stitch: Env, origin: str, caplog) -> None:
    """R3.6: the log's URL comes from Stitch; an https redirect to a private, metadata or mapped address
    is refused before any connection, and the short description stands."""
    job = failed_hubspot(stitch, tap_description="Tap failed with code 1")["job_name"]
    stitch.state.logs[job] = (DATA / "extraction.log").read_text()
    stitch.state.log_origin = origin
    with caplog.at_level(logging.WARNING):
        result = stitch.poll(stitch.poller())
    assert result.logs_fetched == 0
    [refused] = refusals(caplog)
    assert "resolves to no public address" in refused
    [event] = events(stitch.engine)  # as good as an expired log: the description stands
    assert event.error == "Tap failed with code 1" and event.code is None
    assert stitch.state.calls("/s3/") == []


def test_a_redirect_with_credentials_is_refused_even_an_empty_user_name(stitch: Env, caplog) -> None:
    job = failed_hubspot(stitch, tap_description="Tap failed with code 1")["job_name"]
    stitch.state.logs[job] = (DATA / "extraction.log").read_text()
    stitch.state.log_origin = f"http://:pw@{urlsplit(stitch.url).netloc}"  # the peer itself, over loopback
    with caplog.at_level(logging.WARNING):
        assert stitch.poll(stitch.poller()).logs_fetched == 0
    assert refusals(caplog) == ["extraction log: the redirect carries credentials"]
    assert stitch.state.calls("/s3/") == []


def test_an_api_name_without_a_public_address_is_an_outage_not_a_crash(stitch: Env) -> None:
    async def private(host: str, port: int) -> list[str]:
        return ["10.1.2.3"]

    client = StitchClient(base_url="https://api.stitchdata.com", token=TOKEN, client_id=CLIENT_ID, timeout=2,
                          transport=guarded_transport(resolve=private))
    with pytest.raises(Unavailable, match=r"api\.stitchdata\.com resolves to no public address \(10\.1\.2\.3\)"):
        stitch.loop.run_until_complete(client.list_extractions())
    stitch.loop.run_until_complete(client.aclose())


def test_an_expired_log_leaves_the_description(stitch: Env) -> None:
    failed_hubspot(stitch, tap_description="Tap failed with code 1")  # no log stored: S3 answers 404
    stitch.poll(stitch.poller())
    assert alerts(stitch.engine) == []
    [event] = events(stitch.engine)
    assert event.error == "Tap failed with code 1" and event.code is None


def test_a_revoked_api_token_is_one_stitch_alert_until_it_works_again(stitch: Env, caplog) -> None:
    failed_hubspot(stitch)
    stitch.state.token = "ac_a_newer_token_that_we_do_not_have"
    poller = stitch.poller()
    with caplog.at_level(logging.DEBUG):
        for _ in range(5):
            assert stitch.poll(poller, minutes=5).outcome == "unauthorized"
    [alert] = alerts(stitch.engine)
    assert (alert.integration_id, alert.code, alert.provider, alert.count) == ("stitch", "invalid_api_key", "stitch", 1)
    assert "Create a new Connect API token" in alert.last_error
    assert len(notifications(stitch.engine, kind="firing")) == 1
    leaked = [r for r in rows(stitch.engine, Event) + rows(stitch.engine, Alert) if TOKEN in json.dumps(
        r.model_dump(mode="json"))]
    assert leaked == [] and TOKEN not in caplog.text

    stitch.state.token = TOKEN  # a new token, configured
    stitch.poll(poller, minutes=5)
    states = {a.integration_id: a.state for a in alerts(stitch.engine)}
    assert states == {"stitch": "resolved", "228068": "firing"}


def test_429_retry_after_is_honoured_without_asking_again(stitch: Env) -> None:
    failed_hubspot(stitch)
    stitch.state.fail_next(429, path_prefix="/v4/", retry_after=900)
    poller = stitch.poller()
    assert stitch.poll(poller).outcome == "rate_limited"
    assert poller.next_delay(stitch.clock()) == timedelta(seconds=900)  # the loop sleeps, it does not spin
    calls = len(stitch.state.calls())
    assert stitch.poll(poller, seconds=600).outcome == "waiting"
    assert len(stitch.state.calls()) == calls  # no request before Retry-After
    assert poller.next_delay(stitch.clock()) == timedelta(minutes=5)  # 300 s left: the usual interval
    assert stitch.poll(poller, seconds=301).outcome == "ok"
    assert len(alerts(stitch.engine)) == 1


def test_429_on_a_log_keeps_the_rest_and_retries_that_job(stitch: Env) -> None:
    job = failed_hubspot(stitch, tap_description="Tap failed with code 1")["job_name"]
    stitch.state.logs[job] = (DATA / "extraction.log").read_text()
    stitch.state.set_extraction(extraction(244788, "zd-1", completed=stitch.clock(), tap_exit=1,
                                           tap_description="invalid_grant: the refresh token was revoked by the user"))
    stitch.state.fail_next(429, path_prefix=f"/v4/{CLIENT_ID}/extractions/", retry_after=30)
    poller = stitch.poller()
    assert stitch.poll(poller).outcome == "rate_limited"
    assert {a.integration_id for a in alerts(stitch.engine)} == {"244788"}
    stitch.poll(poller, seconds=31)
    assert {a.integration_id: a.code for a in alerts(stitch.engine)} == {"244788": "invalid_grant",
                                                                        "228068": "access_token_expired"}


def test_a_500_is_tried_again_on_the_next_poll(stitch: Env) -> None:
    failed_hubspot(stitch)
    stitch.state.fail_next(500)
    poller = stitch.poller()
    assert stitch.poll(poller).outcome == "unavailable" and events(stitch.engine) == []
    assert stitch.poll(poller, minutes=5).outcome == "ok" and len(alerts(stitch.engine)) == 1


def test_every_page_is_read(stitch: Env) -> None:
    stitch.state.page_size = 2
    for sid in (228068, 233312, 244788):
        stitch.state.set_extraction(extraction(sid, f"j{sid}", completed=stitch.clock(), tap_exit=1,
                                               tap_description=HUBSPOT_401))
    stitch.poll(stitch.poller())
    assert len(stitch.state.calls(f"/v4/{CLIENT_ID}/extractions")) == 2
    assert sorted(a.integration_id for a in alerts(stitch.engine)) == ["228068", "233312", "244788"]


def test_serve_runs_the_poller_and_stops_it(stitch: Env, make_client) -> None:
    failed_hubspot(stitch)
    client = make_client(stitch.settings, run_worker=True)
    deadline = time.monotonic() + 10
    while not alerts(stitch.engine) and time.monotonic() < deadline:
        time.sleep(0.05)
    [alert] = alerts(stitch.engine)
    assert alert.reauthorize_url == LINK
    body = client.get(f"/v1/alerts/{alert.id}").json()
    assert body["integration_name"] == "HubSpot (marketing)" and body["reauthorize_url"] == LINK
    poller = client.app.state.stitch_poller
    assert poller.last_outcome == "ok"
    client.__exit__(None, None, None)  # the lifespan ends: the poller task is cancelled, its client closed
    assert poller.client._api.is_closed


def test_stitch_provider_default_link_needs_the_client_id() -> None:
    from alerts.config import LinkSettings
    from alerts.links import reauthorize_url

    url, rejected = reauthorize_url(links=LinkSettings(), integration_id="228068", provider="stitch",
                                    account_id="116078")
    assert url == LINK and rejected == []
    assert reauthorize_url(links=LinkSettings(), integration_id="228068", provider="stitch") == (None, [])
    own = LinkSettings(providers={"stitch": "https://etl.example.com/stitch/{integration_id}"})
    assert reauthorize_url(links=own, integration_id="228068", provider="stitch", account_id="1")[0] == \
        "https://etl.example.com/stitch/228068"
