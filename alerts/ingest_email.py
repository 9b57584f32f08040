"""``alerts ingest-email FILE...``: Stitch notification emails (``.eml``, mbox, folders of them) in, events out.

Every file is read before anything is stored, so a missing or unreadable file stops the command
with one line and stores nothing. The events of all files are then ingested in one transaction.
Emails that are not Stitch integration-error notifications are counted as skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from alerts.catalog import Catalog
from alerts.config import Settings
from alerts.ingest import ingest
from alerts.models import AuthErrorEvent
from alerts.sources.stitch_email import EmailFileError, parse_notification, read_messages, to_event


@dataclass
class EmailIngest:
    files: int = 0
    messages: int = 0
    skipped: int = 0
    events: list[AuthErrorEvent] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    alert_ids: list[int] = field(default_factory=list)

    def public(self, catalog: Catalog) -> dict[str, Any]:
        return {
            "files": self.files,
            "messages": self.messages,
            "stitch_errors": len(self.events),
            "skipped": self.skipped,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "alert_ids": self.alert_ids,
            "events": [
                {"integration_id": e.integration_id, "integration_name": e.integration_name,
                 "code": (found.entry.code if (found := catalog.classify(e.error, e.provider)) else None),
                 "event_id": e.event_id}
                for e in self.events
            ],
        }


def email_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to read: each path given, a directory as every file under it (a folder of ``.eml``
    files, a Maildir's ``cur/`` and ``new/``), in name order, hidden ones left out."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(path).parts))
            if not found:
                raise EmailFileError(f"{path}: a folder with no files in it")
            out += found
        else:
            out.append(path)
    return out


def read_files(paths: Sequence[str | Path], *, settings: Settings, catalog: Catalog) -> EmailIngest:
    """Parse every message of every file (raises :class:`~alerts.sources.stitch_email.EmailFileError`)."""
    out = EmailIngest()
    for path in email_files(paths):
        out.files += 1
        for msg, raw in read_messages(path):
            out.messages += 1
            note = parse_notification(msg, raw, catalog)
            if note is None:
                out.skipped += 1
                continue
            out.events.append(to_event(note, settings=settings, catalog=catalog))
    return out


def store(found: EmailIngest, *, engine: Engine, settings: Settings, catalog: Catalog, now: datetime) -> EmailIngest:
    """Ingest what :func:`read_files` found, in one transaction."""
    if found.events:
        result = ingest(found.events, engine=engine, settings=settings, catalog=catalog, now=now)
        found.accepted, found.duplicates, found.alert_ids = result.accepted, result.duplicates, result.alert_ids
    return found
