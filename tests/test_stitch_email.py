"""Stitch notification emails: the parser on sample ``.eml``/mbox files, and ``alerts ingest-email``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from alerts import storage
from alerts.catalog import Catalog
from alerts.config import Settings
from alerts.sources.stitch_email import _parse_bytes, parse_notification, read_messages, to_event
from tests.helpers import alerts, events
from tests.test_cli import alerts as run_alerts

DATA = Path(__file__).parent / "data" / "stitch"


def test_an_eml_gives_integration_source_error_and_link(catalog: Catalog, settings: Settings) -> None:
    [(msg, raw)] = list(read_messages(DATA / "integration_error.eml"))
    note = parse_notification(msg, raw, catalog)
    assert note is not None
    assert (note.integration_name, note.client_id, note.source_id) == ("HubSpot", "116078", "228068")
    assert note.error == "HTTP-error-code: 401, Error: The OAuth token used to make this call expired 2 hour(s) ago."
    assert note.occurred_at is not None and note.occurred_at.isoformat() == "2026-11-28T08:40:12+00:00"
    event = to_event(note, settings=settings, catalog=catalog)
    assert (event.integration_id, event.provider, event.account_id) == ("228068", "hubspot", "116078")
    assert event.reauthorize_url == "https://app.stitchdata.com/client/116078/pipeline/v2/sources/228068/summary"
    assert catalog.classify(event.error, event.provider) is not None


def test_an_mbox_skips_what_is_not_a_stitch_integration_error(catalog: Catalog) -> None:
    notes = [parse_notification(m, raw, catalog) for m, raw in read_messages(DATA / "notifications.mbox")]
    assert [n.integration_name if n else None for n in notes] == ["Salesforce (prod)", None, "Zendesk Support"]
    salesforce = notes[0]
    assert salesforce and salesforce.source_id == "300500" and "connections/300500" in (salesforce.link or "")


def test_the_integration_registry_names_an_email_without_a_link(catalog: Catalog, make_settings) -> None:
    settings = make_settings(integrations=[{"id": "hs-marketing", "name": "HubSpot", "provider": "hubspot"}])
    raw = (DATA / "integration_error.eml").read_bytes().replace(b"pipeline/v2/sources/228068", b"dashboard")
    note = parse_notification(_parse_bytes(raw), raw, catalog)
    assert note and note.source_id is None
    assert to_event(note, settings=settings, catalog=catalog).integration_id == "hs-marketing"


def test_ingest_email_cli_stores_each_email_once(tmp_path: Path) -> None:
    for name in ("integration_error.eml", "notifications.mbox"):
        shutil.copy(DATA / name, tmp_path / name)
    r = run_alerts("ingest-email", "integration_error.eml", "notifications.mbox", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["files"], out["messages"], out["stitch_errors"], out["skipped"]) == (2, 4, 3, 1)
    assert (out["accepted"], out["duplicates"]) == (3, 0) and len(out["alert_ids"]) == 2
    codes = {e["integration_id"]: e["code"] for e in out["events"]}
    assert codes == {"228068": "access_token_expired", "300500": "invalid_grant", "300777": None}

    engine = storage.make_engine(f"sqlite:///{tmp_path}/var/alerts.db")
    by_id = {a.integration_id: a for a in alerts(engine)}
    assert set(by_id) == {"228068", "300500"}
    assert by_id["300500"].integration_name == "Salesforce (prod)" and by_id["300500"].provider == "salesforce"
    assert by_id["228068"].reauthorize_url.startswith("https://app.stitchdata.com/client/116078/")

    again = run_alerts("ingest-email", "notifications.mbox", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 stored, 2 already seen" in again.stdout
    assert len(events(engine)) == 3 and all(a.count == 1 for a in alerts(engine))
    engine.dispose()


def test_ingest_email_cli_missing_file_is_one_line_and_stores_nothing(tmp_path: Path) -> None:
    shutil.copy(DATA / "integration_error.eml", tmp_path / "ok.eml")
    r = run_alerts("ingest-email", "ok.eml", "missing.eml", cwd=tmp_path)
    assert r.returncode == 2 and "missing.eml" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "var" / "alerts.db").exists()


def test_ingest_email_reads_a_folder_of_emails_and_a_maildir(tmp_path: Path) -> None:
    """A directory is every file under it, in name order (hidden ones left out): a folder of exported
    .eml files, or a Maildir (cur/, new/)."""
    box = tmp_path / "Stitch"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    shutil.copy(DATA / "integration_error.eml", box / "new" / "1701.M1.host")
    shutil.copy(DATA / "notifications.mbox", box / "cur" / "export.mbox")
    (box / ".uidvalidity").write_text("1\n")  # Maildir bookkeeping: not a message
    r = run_alerts("ingest-email", "Stitch", "--json", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["files"], out["messages"], out["stitch_errors"], out["skipped"]) == (2, 4, 3, 1)
    (tmp_path / "empty").mkdir()
    r = run_alerts("ingest-email", "empty", cwd=tmp_path)
    assert r.returncode == 2 and "empty: a folder with no files in it" in r.stderr
