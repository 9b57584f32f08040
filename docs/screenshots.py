#!/usr/bin/env python3
"""Regenerate the README's screenshots from the real templates, in Debian's chromium.

    python docs/screenshots.py        # writes docs/img/dashboard-desktop.png, dashboard-phone.png, digest.png

Seeds a scratch database with a realistic morning (a few broken integrations, one fixed), renders the
dashboard through the real app and the digest through the real digest code.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts import digest as digests  # noqa: E402
from alerts.catalog import load_catalog  # noqa: E402
from alerts.config import load_settings  # noqa: E402
from alerts.ingest import ingest  # noqa: E402
from alerts.models import AuthErrorEvent  # noqa: E402
from alerts.render import Renderer  # noqa: E402
from alerts.storage import make_engine, upgrade  # noqa: E402
from alerts.web import create_app  # noqa: E402
from alerts.worker import Worker  # noqa: E402
from tests.peers.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402

OUT = ROOT / "docs" / "img"
NOW = datetime(2026, 11, 30, 6, 59, tzinfo=UTC)  # 07:59 in Berlin, just before the digest

SCENARIO = [
    # (hours before now, integration, name, provider, auth, error)
    (50, "sf-prod", "Salesforce (prod)", "salesforce", "oauth2", "invalid_grant: expired access/refresh token"),
    (26, "pg-warehouse", "Postgres warehouse", "postgres", "basic",
     'psycopg2.OperationalError: FATAL:  password authentication failed for user "etl_loader"'),
    (9, "hubspot-crm", "HubSpot CRM", "hubspot", "oauth2",
     "requests.exceptions.HTTPError: 403 Client Error: Forbidden for url: https://api.hubapi.com/crm/v3/objects/"
     "deals — This app hasn't been granted all required scopes"),
    (3, "stripe-billing", "Stripe billing", "stripe", "api_key",
     "stripe.error.AuthenticationError: Invalid API Key provided: rk_live_****************abcd"),
    (30, "ga4-web", "GA4 website", "google", "oauth2", "invalid_grant: Token has been expired or revoked."),
]


def seed(settings, catalog, engine) -> None:
    """Replay the scenario in time order, with the delivery worker running as it would have."""
    clock = {"now": NOW}
    worker = Worker(engine=engine, settings=settings, catalog=catalog, clock=lambda: clock["now"])
    steps = []
    for hours, iid, name, provider, auth, error in SCENARIO:
        at = NOW - timedelta(hours=hours)
        for k in range(1 + hours // 4):
            steps.append((at + timedelta(minutes=30 * k),
                          AuthErrorEvent(integration_id=iid, integration_name=name, provider=provider,
                                         auth_method=auth, error=error, occurred_at=at + timedelta(minutes=30 * k))))
    fixed = NOW - timedelta(hours=20)
    steps.append((fixed, AuthErrorEvent(integration_id="ga4-web", status="succeeded", occurred_at=fixed)))
    for at, event in sorted(steps, key=lambda s: s[0]):
        clock["now"] = at
        ingest([event], engine=engine, settings=settings, catalog=catalog, now=at)
        clock["now"] = at + timedelta(seconds=10)
        asyncio.run(worker.tick())


def main() -> None:
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        sys.exit("chromium is not installed (apt-get install -y chromium)")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, database={"url": f"sqlite:///{tmp}/alerts.db"},
                                 outbox={"dir": f"{tmp}/outbox"},
                                 links={"reauthorize": "https://etl.example.com/connections/{integration_id}/reauthorize"},
                                 digests=[{"name": "morning", "schedule": "0 8 * * *", "timezone": "Europe/Berlin",
                                           "to": ["data-team@example.com"]}])
        catalog = load_catalog()
        engine = make_engine(settings.database_url)
        upgrade(engine)
        seed(settings, catalog, engine)
        rendered = digests.preview(engine, settings.digests[0], settings=settings, catalog=catalog,
                                   renderer=Renderer(), now=NOW)
        (Path(tmp) / "digest.html").write_text(rendered.html)

        app = create_app(settings, engine=engine, catalog=catalog, clock=lambda: NOW, run_worker=False)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        alert_id = httpx.get(url + "/v1/alerts?state=firing").json()["alerts"][-1]["id"]
        httpx.post(f"{url}/v1/alerts/{alert_id}/ack", headers={"X-Alerts-User": "alice"})
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url + "/")
            page.screenshot(path=str(OUT / "dashboard-desktop.png"), full_page=True)
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            page.goto(url + "/")
            page.screenshot(path=str(OUT / "dashboard-phone.png"), full_page=False)
            page = browser.new_page(viewport={"width": 640, "height": 900})
            page.goto((Path(tmp) / "digest.html").as_uri())
            page.screenshot(path=str(OUT / "digest.png"), full_page=True)
            browser.close()
        server.should_exit = True
        thread.join(5)
    print("wrote", *(p.name for p in sorted(OUT.glob("*.png"))))


if __name__ == "__main__":
    main()
