"""Email digests with the test clock and a real (in-process aiosmtpd) SMTP server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from alerts import digest as digests
from alerts.render import Renderer
from alerts.storage import DigestRun
from tests.helpers import SF, notifications, rows
from tests.peers.smtp import SmtpPeer


@pytest.fixture
def smtp():
    peer = SmtpPeer().start()
    yield peer
    peer.stop()


def digest_settings(make_settings, smtp, **digest):
    return make_settings(
        email={"host": "127.0.0.1", "port": smtp.port, "starttls": False, "from_addr": "alerts@example.com"},
        digests=[{"name": "morning", "schedule": "0 8 * * *", "timezone": "Europe/Berlin",
                  "to": ["team@example.com"], **digest}],
        integrations=[{"id": "sf-prod", "name": "Salesforce (prod)", "owner": "alice@example.com"},
                      {"id": "hs", "name": "HubSpot", "owner": "bob@example.com"}],
    )


def tick(client):
    return asyncio.run(client.app.state.worker.tick())


def subjects(smtp):
    return [m.message["Subject"] for m in smtp.messages]


def test_schedule_follows_local_time_across_dst(make_settings, smtp, make_client, clock) -> None:
    # Berlin leaves summer time on Sun 25 Oct 2026: 08:00 local is 06:00 UTC before, 07:00 UTC after.
    clock.now = datetime(2026, 10, 23, 12, 0, tzinfo=UTC)
    client = make_client(digest_settings(make_settings, smtp, skip_if_empty=False))
    tick(client)  # first sight: baseline, no catch-up
    assert smtp.messages == []
    sent_at = []
    for hour in range(12, 24 * 4):  # Fri 12:00 UTC .. Mon, hour by hour
        clock.now = datetime(2026, 10, 23, 0, 0, tzinfo=UTC) + timedelta(hours=hour)
        before = len(smtp.messages)
        tick(client)
        if len(smtp.messages) > before:
            sent_at.append(clock.now)
    assert sent_at == [datetime(2026, 10, 24, 6, 0, tzinfo=UTC),   # Sat 08:00 CEST
                       datetime(2026, 10, 25, 7, 0, tzinfo=UTC),   # Sun 08:00 CET
                       datetime(2026, 10, 26, 7, 0, tzinfo=UTC)]   # Mon 08:00 CET


def test_content_counts_and_sections(make_settings, smtp, make_client, clock) -> None:
    clock.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    client = make_client(digest_settings(make_settings, smtp))
    tick(client)  # baseline at Fri 08:00
    client.post("/v1/events", json={**SF, "reauthorize_url": None})
    client.post("/v1/events", json={"integration_id": "hs", "provider": "hubspot", "error": "invalid api key"})
    clock.advance(hours=2)
    client.post("/v1/events", json={"integration_id": "hs", "status": "succeeded"})
    clock.now = datetime(2026, 11, 28, 7, 0, 1, tzinfo=UTC)  # Sat 08:00:01 Berlin
    tick(client)
    [mail] = [m for m in smtp.messages if "digest" in m.message["Subject"].lower()]
    msg = mail.message
    assert msg["Subject"] == "Auth digest: 1 broken, 2 new, 1 fixed"
    assert mail.rcpt_tos == ["team@example.com"]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "STILL BROKEN (1)" in text and "Salesforce (prod)" in text and "What to do:" in text
    assert "FIXED SINCE THE LAST DIGEST (1)" in text and "HubSpot" in text and "fixed after 2h" in text
    assert "- HubSpot: 2h / 2h (1 fixed)" in text  # time to fix, median / p90, per provider
    assert "Still broken" in html and "Salesforce (prod)" in html


def test_two_schedulers_on_one_database_send_once(make_settings, smtp, make_client, clock) -> None:
    clock.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    settings = digest_settings(make_settings, smtp, skip_if_empty=False)
    a = make_client(settings)
    b = make_client(settings)  # a second replica on the same SQLite file
    tick(a)
    tick(b)
    clock.now = datetime(2026, 11, 28, 7, 0, 5, tzinfo=UTC)
    tick(a)
    tick(b)
    tick(a)
    assert subjects(smtp) == ["Auth digest: 0 broken, 0 new, 0 fixed"]
    assert [r.status for r in rows(a.app.state.engine, DigestRun)] == ["baseline", "sent"]


def test_downtime_over_three_periods_sends_one_catch_up(make_settings, smtp, make_client, clock) -> None:
    clock.now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    client = make_client(digest_settings(make_settings, smtp, skip_if_empty=False))
    tick(client)
    clock.now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # down Fri..Tue: 4 scheduled times passed
    tick(client)
    tick(client)
    assert len(smtp.messages) == 1


def test_empty_period_sends_nothing_when_skip_if_empty(make_settings, smtp, make_client, clock) -> None:
    clock.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    client = make_client(digest_settings(make_settings, smtp))
    tick(client)
    clock.now = datetime(2026, 11, 28, 7, 0, 5, tzinfo=UTC)
    tick(client)
    assert smtp.messages == []
    assert [r.status for r in rows(client.app.state.engine, DigestRun)] == ["baseline", "empty"]


def test_per_owner_digest_has_only_their_integrations(make_settings, smtp, make_client, clock) -> None:
    clock.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    client = make_client(digest_settings(make_settings, smtp, per_owner=True, to=[]))
    tick(client)
    client.post("/v1/events", json=SF)
    client.post("/v1/events", json={"integration_id": "hs", "provider": "hubspot", "error": "invalid api key"})
    clock.now = datetime(2026, 11, 28, 7, 0, 5, tzinfo=UTC)
    tick(client)
    digests_by_rcpt = {m.rcpt_tos[0]: m.message for m in smtp.messages if "digest" in m.message["Subject"].lower()}
    assert set(digests_by_rcpt) == {"alice@example.com", "bob@example.com"}
    alice = digests_by_rcpt["alice@example.com"].get_body(("plain",)).get_content()
    assert "Salesforce (prod)" in alice and "HubSpot" not in alice


def test_send_now_is_manual_and_scheduled_still_goes(make_settings, smtp, make_client, clock, engine) -> None:
    clock.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    settings = digest_settings(make_settings, smtp, skip_if_empty=False)
    client = make_client(settings)
    tick(client)
    app = client.app
    n = digests.send_now(app.state.engine, settings.digests[0], settings=settings, catalog=app.state.catalog,
                         renderer=Renderer(), now=clock.now)
    assert n == 1
    asyncio.run(app.state.worker.deliver_due())
    clock.now = datetime(2026, 11, 28, 7, 0, 5, tzinfo=UTC)
    tick(client)
    assert len(smtp.messages) == 2
    assert [r.status for r in rows(app.state.engine, DigestRun)] == ["baseline", "manual", "sent"]
    assert [n.status for n in notifications(app.state.engine, kind="digest")] == ["sent", "sent"]


def test_bad_digest_config_names_the_key(make_settings) -> None:
    from alerts.config import ConfigError

    with pytest.raises(ConfigError, match=r"digests\[0\]\.schedule"):
        make_settings(digests=[{"name": "x", "schedule": "every morning", "to": ["a@example.com"]}])
    with pytest.raises(ConfigError, match=r"digests\[0\]\.timezone"):
        make_settings(digests=[{"name": "x", "timezone": "Mars/Olympus", "to": ["a@example.com"]}])


def test_digest_cli_preview_and_send_now(tmp_path, smtp) -> None:
    import subprocess
    import sys

    (tmp_path / "config.toml").write_text(f"""
[email]
host = "127.0.0.1"
port = {smtp.port}
starttls = false
[[digests]]
name = "morning"
to = ["team@example.com"]
skip_if_empty = false
""")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "alerts", *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)

    r = cli("digest", "--preview")
    assert r.returncode == 0, r.stderr
    assert "Subject: Auth digest: 0 broken, 0 new, 0 fixed" in r.stdout
    assert (tmp_path / "var" / "digest-morning.html").read_text().startswith("<!doctype html>")
    assert smtp.messages == []
    r = cli("digest", "--name", "morning", "--send-now")
    assert r.returncode == 0, r.stderr
    assert [m.message["Subject"] for m in smtp.messages] == ["Auth digest: 0 broken, 0 new, 0 fixed"]
    assert "digest 'morning' sent (1 message)" in r.stdout
    r = cli("digest", "--name", "nope", "--preview")
    assert r.returncode == 2 and "no digest named 'nope'" in r.stderr


def test_digest_cli_without_smtp_says_where_it_went(tmp_path) -> None:
    """Found by a README walk-through: with no [email] host it said "sent" and wrote a file."""
    import subprocess
    import sys

    (tmp_path / "config.toml").write_text('[[digests]]\nname = "morning"\nto = ["team@example.com"]\n'
                                          "skip_if_empty = false\n")
    r = subprocess.run([sys.executable, "-m", "alerts", "digest", "--name", "morning", "--send-now"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "written to the file sink" in r.stdout and "set [email] host" in r.stdout
    [eml] = list((tmp_path / "var" / "outbox").glob("*.eml"))
    assert "Auth digest: 0 broken" in eml.read_text()
