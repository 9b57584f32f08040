"""The dashboard in Debian's chromium (Playwright), against a real ``alerts serve`` process."""

from __future__ import annotations

import os
import re

import pytest

from tests.conftest import IN_CI
from tests.helpers import alerts
from tests.peers.browser import CHROMIUM_ARGS, chromium_path
from tests.peers.server import ServerProcess

pytestmark = pytest.mark.browser

CONFIG = """
[alerting]
group_wait = "0s"
[links]
reauthorize = "https://etl.example.com/connections/{integration_id}/reauthorize"
[server]
api_tokens = ["dashboard-test-token-0123456789"]
"""
TOKEN = "dashboard-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        if IN_CI:
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def server(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG)
    srv = ServerProcess(cwd=tmp_path, config=cfg).start()
    yield srv
    srv.stop()


def login(page, server) -> None:
    page.goto(server.url + "/")
    assert page.url.endswith("/login")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")


def test_dashboard_shows_acks_and_silences(browser, server, tmp_path) -> None:
    with server.client() as http:
        r = http.post("/v1/events", json={"integration_id": "sf-prod", "integration_name": "Salesforce <prod>",
                                          "provider": "salesforce", "error": "invalid_grant: expired access/refresh token"})
        assert r.status_code == 202
        http.post("/v1/events", json={"integration_id": "pg-wh", "provider": "postgres", "auth_method": "basic",
                                      "error": 'FATAL:  password authentication failed for user "etl"'})
    page = browser.new_page()
    login(page, server)
    needs = page.locator("#needs-action-list")
    assert needs.locator(".card").count() == 2
    card = needs.locator(".card", has_text="Salesforce <prod>")  # escaped, shown literally
    assert card.locator(".reauthorize").get_attribute("href") == \
        "https://etl.example.com/connections/sf-prod/reauthorize"
    assert "Reauthorize the integration" in card.inner_text() or "reauthorize" in card.inner_text().lower()

    card.locator("button", has_text="Acknowledge").click()
    page.wait_for_load_state()
    page.reload()
    assert page.locator("#needs-action-list .card").count() == 1
    quiet = page.locator("#quiet-list .card", has_text="Salesforce <prod>")
    assert "acknowledged" in quiet.locator(".state").inner_text().lower()
    with server.client() as http:
        [a] = [x for x in http.get("/v1/alerts", headers=AUTH).json()["alerts"] if x["integration_id"] == "sf-prod"]
        assert a["state"] == "acknowledged" and a["acknowledged_by"] == "dashboard"

    page.locator("#needs-action-list .card", has_text="pg-wh").locator("button", has_text="Silence 24 h").click()
    page.wait_for_load_state()
    assert page.locator("#needs-action-list .card").count() == 0
    assert "silenced" in page.locator("#quiet-list .card", has_text="pg-wh").inner_text().lower()
    shots = os.environ.get("SCREENSHOTS_DIR")
    if shots:
        page.set_viewport_size({"width": 1200, "height": 800})
        page.screenshot(path=os.path.join(shots, "dashboard-desktop.png"), full_page=True)
    page.close()


def test_dashboard_at_phone_width(browser, server) -> None:
    with server.client() as http:
        http.post("/v1/events", json={"integration_id": "hubspot-main", "provider": "hubspot",
                                      "error": "401 Client Error: Unauthorized for url: https://api.hubapi.com/crm/v3"})
    page = browser.new_page(viewport={"width": 390, "height": 844})
    login(page, server)
    card = page.locator("#needs-action-list .card").first
    assert card.is_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page scrolls sideways at phone width ({width}px)"
    box = card.locator("button", has_text="Acknowledge").bounding_box()
    assert box and box["x"] + box["width"] <= 390
    shots = os.environ.get("SCREENSHOTS_DIR")
    if shots:
        page.screenshot(path=os.path.join(shots, "dashboard-phone.png"), full_page=True)
    page.close()


def test_posts_need_csrf_and_login(server) -> None:
    import httpx

    with httpx.Client(base_url=server.url, follow_redirects=False) as http:
        assert http.get("/").status_code == 303
        r = http.post("/login", data={"token": "wrong"})
        assert r.status_code == 401
        r = http.post("/login", data={"token": TOKEN})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and re.search("SameSite=strict", cookie, re.I)
        http.post("/v1/events", json={"integration_id": "x", "error": "invalid_grant"})
        page = http.get("/")
        assert page.status_code == 200
        r = http.post("/ui/alerts/1/ack", data={"csrf": "forged"})
        assert r.status_code == 403
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = http.post("/ui/alerts/1/ack", data={"csrf": csrf})
        assert r.status_code == 303
        assert http.get("/v1/alerts/1", headers=AUTH).json()["state"] == "acknowledged"


def test_the_alert_page_names_the_owner_and_a_fixed_alert_offers_no_buttons(make_client, make_settings, clock) -> None:
    client = make_client(make_settings(integrations=[{"id": "sf-prod", "owner": "alice@example.com"}]))
    body = {"integration_id": "sf-prod", "provider": "salesforce", "authorized_by": "etl-bot@example.com",
            "error": "invalid_grant: expired access/refresh token"}
    [alert_id] = client.post("/v1/events", json=body).json()["alert_ids"]
    page = client.get(f"/alerts/{alert_id}").text
    assert "<th>Owner</th><td>alice@example.com</td>" in page
    assert "<th>Authorized by</th><td>etl-bot@example.com</td>" in page
    assert f"<th>First seen</th><td>{clock.now:%Y-%m-%d %H:%M:%S} UTC</td>" in page
    assert ">Resolve</button>" in page
    clock.advance(minutes=7)
    client.post("/v1/events", json={"integration_id": "sf-prod", "status": "succeeded"})
    page = client.get(f"/alerts/{alert_id}").text
    assert ">Resolve</button>" not in page and ">Reauthorize<" not in page and "Silence 24 h" not in page
    assert "fixed after 7m" in page


def test_silence_from_the_dashboard_silences_that_one_integration_even_if_its_id_reads_as_a_glob(client) -> None:
    """Found by a hostile-input review: the id "*" silenced every open alert; "sf[prod]" silenced "sfp"."""
    engine = client.app.state.engine
    ids = {}
    for iid in ("*", "sf[prod]", "sfp", "other"):
        [ids[iid]] = client.post("/v1/events", json={"integration_id": iid, "error": "invalid_grant"}).json()["alert_ids"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)
    for iid in ("*", "sf[prod]"):
        r = client.post(f"/ui/alerts/{ids[iid]}/silence", data={"csrf": csrf}, follow_redirects=False)
        assert r.status_code == 303
    silenced = {a.integration_id: a.silenced for a in alerts(engine)}
    assert silenced == {"*": True, "sf[prod]": True, "sfp": False, "other": False}
