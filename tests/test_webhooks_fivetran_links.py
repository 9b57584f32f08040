"""Fresh Fivetran Connect Card links, minted at send time against a local server that speaks the
Connect Card endpoint (``POST /v1/connections/{id}/connect-card``, HTTP Basic auth)."""

from __future__ import annotations

import base64
import email
import json
import logging
import threading
from collections.abc import Iterator
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from alerts.fivetran_links import FreshLinks, substitute
from alerts.netguard import guarded_sync_transport
from alerts.render import Rendered
from tests import webhook_kit as kit
from tests.helpers import SF, alerts, notifications, run_worker_once

API_KEY = "ftkey-0001"
API_SECRET = "CANARY-fivetran-api-secret-000"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJkIjp7ImNvbm5lY3RvciI6Im15c3RpZmllZCJ9fQ.c2lnbmF0dXJl"
DASHBOARD = "https://fivetran.com/dashboard/connectors/mystified_presiding/status"


class FakeFivetran:
    """Fivetran's Connect Card endpoint, as documented: 200 with ``data.connect_card.{token, uri}``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                parts = self.path.strip("/").split("/")
                expected = "Basic " + base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
                if self.headers.get("authorization") != expected:
                    return self._send(401, {"code": "AuthFailed", "message": "Missing or invalid credentials"})
                if outer.status != 200:
                    return self._send(outer.status, {"code": "Error", "message": "something broke"})
                if len(parts) != 4 or parts[:2] != ["v1", "connections"] or parts[3] != "connect-card":
                    return self._send(404, {"code": "NotFound"})
                redirect = body["connect_card_config"]["redirect_uri"]
                uri = f"https://fivetran.com/connect-card/setup?auth={TOKEN}&redirect_uri={redirect}&hide_setup_guide=true"
                self._send(200, {"code": "Success", "message": "Connection Connect Card has been created",
                                 "data": {"connector_id": parts[2], "connect_card": {"token": TOKEN, "uri": uri},
                                          "connect_card_config": body["connect_card_config"]}})

            def _send(self, status: int, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def fake() -> Iterator[FakeFivetran]:
    server = FakeFivetran()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _settings(make_settings, fake: FakeFivetran | None, **extra: Any):
    fivetran = {"api_key": API_KEY, "api_secret": API_SECRET, "base_url": fake.url, "allow_loopback_base_url": True,
                "redirect_uri": "https://alerts.example.com/"} if fake else {}
    return make_settings(webhooks=kit.hooks(), fivetran=fivetran, **extra)


def _sent(tmp_path, note_id: int) -> tuple[str, str, str]:
    slack = (tmp_path / "outbox" / f"{note_id}.json").read_text()
    msg = email.message_from_bytes((tmp_path / "outbox" / f"{note_id}.eml").read_bytes(), policy=policy.default)
    return slack, msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def test_message_carries_a_fresh_connect_card_link_that_is_never_stored(make_client, make_settings, fake, tmp_path,
                                                                        caplog) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(_settings(make_settings, fake))
    engine = client.app.state.engine
    assert kit.fivetran(client, kit.load("fivetran_sync_end_failure.json")).status_code == 200
    [alert] = alerts(engine)
    assert alert.reauthorize_url == DASHBOARD
    assert run_worker_once(client.app) == 1

    [req] = fake.requests
    assert req["path"] == "/v1/connections/mystified_presiding/connect-card"
    assert req["headers"]["Accept"] == "application/json;version=2"
    assert req["body"] == {"connect_card_config": {"redirect_uri": "https://alerts.example.com", "hide_setup_guide": True}}

    [note] = notifications(engine)
    assert note.status == "sent"
    slack, text, html = _sent(tmp_path, note.id)
    link = f"https://fivetran.com/connect-card/setup?auth={TOKEN}&redirect_uri=https://alerts.example.com&hide_setup_guide=true"
    assert link in slack and json.loads(slack)  # the button and the text link
    assert link in text
    assert link.replace("&", "&amp;") in html
    assert DASHBOARD not in text and DASHBOARD not in html and DASHBOARD not in slack
    # the token is a credential: the stored payload keeps the fallback link only
    stored = json.dumps(note.payload)
    assert TOKEN not in stored and DASHBOARD in stored
    logged = "\n".join(r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert API_SECRET not in logged and TOKEN not in logged


def test_links_are_cached_and_only_fivetran_alerts_are_minted(make_client, make_settings, fake, tmp_path, clock) -> None:
    client = make_client(_settings(make_settings, fake))
    kit.fivetran(client, kit.load("fivetran_sync_end_failure.json"))
    client.post("/v1/events", content=kit.dumps(SF), headers=kit.JSON)  # not a Fivetran connector
    run_worker_once(client.app)
    assert len(fake.requests) == 1
    links = client.app.state.worker.fresh_links
    first = links.link_for("mystified_presiding")
    assert first is not None and len(fake.requests) == 1  # cached
    clock.advance(hours=2)
    assert links.link_for("mystified_presiding") == first and len(fake.requests) == 2  # minted again


def test_without_credentials_the_fivetran_page_is_the_link(make_client, make_settings, tmp_path) -> None:
    client = make_client(_settings(make_settings, None))
    kit.fivetran(client, kit.load("fivetran_sync_end_failure.json"))
    run_worker_once(client.app)
    [note] = notifications(client.app.state.engine)
    slack, text, html = _sent(tmp_path, note.id)
    assert DASHBOARD in text and DASHBOARD in html and DASHBOARD in slack


@pytest.mark.parametrize("status", [500, 403, 429])
def test_api_failure_falls_back_and_logs_no_secret(make_client, make_settings, fake, tmp_path, caplog, status) -> None:
    caplog.set_level(logging.DEBUG)
    fake.status = status
    client = make_client(_settings(make_settings, fake))
    kit.fivetran(client, kit.load("fivetran_sync_end_failure.json"))
    run_worker_once(client.app)
    [note] = notifications(client.app.state.engine)
    assert note.status == "sent"  # the message still goes out, with the stored link
    _, text, _ = _sent(tmp_path, note.id)
    assert DASHBOARD in text
    warning = [r for r in caplog.records if r.name == "alerts.fivetran"]
    assert warning and warning[0].status == status
    assert all(API_SECRET not in r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records)


def test_unreachable_api_falls_back(make_settings, engine) -> None:
    settings = make_settings(fivetran={"api_key": API_KEY, "api_secret": API_SECRET, "base_url": "http://127.0.0.1:9",
                                       "allow_loopback_base_url": True, "timeout": "1s"})
    assert FreshLinks(engine=engine, settings=settings).link_for("x") is None


def test_substitute_handles_each_encoding() -> None:
    old = "https://fivetran.com/dashboard/connectors/a/status"
    new = "https://fivetran.com/connect-card/setup?auth=T&redirect_uri=https://x.example.com"
    rendered = Rendered(kind="firing", slack={"blocks": [{"url": old, "text": f"<{old}|Reauthorize>"}]},
                        subject="s", text=f"Reauthorize: {old}", html=f'<a href="{old}">Reauthorize</a>')
    out = substitute(rendered, old, new)
    assert out.slack == {"blocks": [{"url": new, "text": f"<{new}|Reauthorize>"}]}
    assert out.text == f"Reauthorize: {new}"
    assert out.html == f'<a href="{new.replace("&", "&amp;")}">Reauthorize</a>'


def test_digests_mint_their_own_links(make_client, make_settings, fake, tmp_path, clock) -> None:
    import asyncio

    from alerts import digest as digests
    from alerts.render import Renderer

    settings = _settings(make_settings, fake, digests=[{"name": "morning", "to": ["team@example.com"]}])
    client = make_client(settings)
    engine = client.app.state.engine
    assert kit.fivetran(client, kit.load("fivetran_sync_end_failure.json")).status_code == 200
    clock.advance(days=2)  # a link minted for the first message would have expired by now
    assert digests.send_now(engine, settings.digests[0], settings=settings, catalog=client.app.state.catalog,
                            renderer=Renderer(), now=clock.now) == 1
    asyncio.run(client.app.state.worker.deliver_due())
    [note] = notifications(engine, kind="digest")
    assert note.status == "sent"
    msg = email.message_from_bytes((tmp_path / "outbox" / f"{note.id}.eml").read_bytes(), policy=policy.default)
    text = msg.get_body(("plain",)).get_content()
    assert f"auth={TOKEN}" in text and DASHBOARD not in text
    assert TOKEN not in json.dumps(note.payload) and DASHBOARD in json.dumps(note.payload)


def test_a_rebound_api_name_is_never_connected_to(make_settings, engine, caplog) -> None:
    """R3.6: api.fivetran.com answering with a private address (a poisoned resolver) mints nothing and
    sends the key nowhere; the message keeps its stored link."""
    settings = make_settings(fivetran={"api_key": API_KEY, "api_secret": API_SECRET, "timeout": "1s"})
    asked: list[str] = []

    def poisoned(host: str, port: int) -> list[str]:
        asked.append(f"{host}:{port}")
        return ["10.0.0.5", "169.254.169.254"]

    links = FreshLinks(engine=engine, settings=settings, transport=guarded_sync_transport(resolve=poisoned))
    with caplog.at_level(logging.WARNING, logger="alerts.fivetran"):
        assert links.link_for("mystified_presiding") is None
    assert asked == ["api.fivetran.com:443"]
    [warning] = [r for r in caplog.records if r.name == "alerts.fivetran"]
    assert warning.error == "NonPublicAddress"


def test_a_hanging_name_lookup_is_given_up_on_within_the_timeout(make_settings, engine, caplog) -> None:
    """A resolver that does not answer (getaddrinfo waits out resolv.conf's tries) holds the message up
    for the configured timeout, not the resolver's: no link is minted and the stored one is kept."""
    import threading
    import time

    settings = make_settings(fivetran={"api_key": API_KEY, "api_secret": API_SECRET, "timeout": "1s"})
    release = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        release.wait(30)
        return ["8.8.8.8"]

    links = FreshLinks(engine=engine, settings=settings, transport=guarded_sync_transport(resolve=hanging))
    start = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="alerts.fivetran"):
            assert links.link_for("mystified_presiding") is None
        assert time.monotonic() - start < 5
    finally:
        release.set()
    [warning] = [r for r in caplog.records if r.name == "alerts.fivetran"]
    assert warning.error == "ConnectTimeout"
