"""Silences: matchers (integration glob, provider, code) with a start and an end.

A silenced alert keeps counting but sends nothing; when its silence ends and it is still firing,
one message goes out (see :func:`alerts.ingest.refresh_silences`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from datetime import datetime
from types import SimpleNamespace

from sqlmodel import Session, select

from alerts.fastsql import Raw
from alerts.storage import Alert, Silence


def glob_escape(text: str) -> str:
    """``text`` as an fnmatch pattern that matches only itself (silence matchers are globs)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def matches(silence: Silence, alert: Alert) -> bool:
    if not fnmatch.fnmatchcase(alert.integration_id, silence.integration or "*"):
        return False
    if silence.provider and silence.provider != alert.provider:
        return False
    return not (silence.code and silence.code != alert.code)


def active(session: Session, *, now: datetime) -> list[Silence]:
    return list(session.exec(select(Silence).where(Silence.starts_at <= now, Silence.ends_at > now)).all())


def active_raw(raw: Raw, *, now: datetime) -> list[SimpleNamespace]:
    """:func:`active` for the ingest hot path: just the matchers, in one raw statement."""
    rows = raw.select(f"SELECT integration, provider, code FROM {Silence.__tablename__} "
                      "WHERE starts_at <= {mark} AND ends_at > {mark}", [now, now])
    return [SimpleNamespace(integration=i, provider=p, code=c) for i, p, c in rows]


def is_silenced(alert: Alert, silences: Iterable[Silence]) -> bool:
    return any(matches(s, alert) for s in silences)


def public(s: Silence, *, now: datetime) -> dict:
    from alerts.models import as_utc

    state = "active" if as_utc(s.starts_at) <= now < as_utc(s.ends_at) else (
        "pending" if now < as_utc(s.starts_at) else "expired")
    return {
        "id": s.id,
        "integration": s.integration,
        "provider": s.provider,
        "code": s.code,
        "starts_at": as_utc(s.starts_at).isoformat().replace("+00:00", "Z"),
        "ends_at": as_utc(s.ends_at).isoformat().replace("+00:00", "Z"),
        "author": s.author,
        "comment": s.comment,
        "state": state,
    }
