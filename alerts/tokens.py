"""Refresh-token expiry warnings: tell people *before* the sync breaks.

Token metadata arrives through ``POST /v1/tokens`` (issued, expires, last used, scopes — never the
token). Where no ``expires_at`` is known, the provider's documented lifetime from the catalog (or
``[tokens.providers.X]``) gives it: counted from issue (e.g. Google apps in testing: 7 days) or from
last use (e.g. Microsoft Entra: 90 days of inactivity). Successful sync events count as a use.

At each lead time (default 7 days and 1 day before), a ``token_expiring`` warning is raised once:
an alert of its own (fingerprint per integration and code), routed and shown like any other. A new
``issued_at`` (the integration was reauthorized) resolves it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alerts import ingest, silences
from alerts.catalog import Catalog, builtin_document
from alerts.config import Settings
from alerts.durations import humanize, parse_duration
from alerts.links import reauthorize_url
from alerts.models import AlertState, Kind, as_utc
from alerts.redact import clean_field, clean_id, redact
from alerts.storage import Alert, Token, session_scope

log = logging.getLogger("alerts.tokens")
CODE = "token_expiring"


@dataclass(frozen=True)
class Lifetime:
    duration: timedelta
    basis: str  # "issued" or "last_used"
    note: str = ""
    source: str = ""


def lifetime_for(provider: str | None, *, settings: Settings, catalog: Catalog) -> Lifetime | None:
    if not provider:
        return None
    override = settings.tokens.providers.get(provider)
    if override is not None and override.lifetime is not None:
        return Lifetime(override.lifetime, override.basis, note="configured in [tokens.providers]")
    spec: Any = catalog.lifetimes.get(provider) or documented_lifetimes().get(provider)
    if isinstance(spec, list):
        spec = spec[0] if spec else None
    if not isinstance(spec, dict) or "refresh_token" not in spec:
        return None
    return Lifetime(parse_duration(spec["refresh_token"]), spec.get("basis", "issued"), spec.get("note", ""),
                    spec.get("source", ""))


@functools.cache
def documented_lifetimes() -> dict[str, Any]:
    """The ``[token_lifetimes.<provider>]`` tables of the built-in catalog (each with its source)."""
    return dict(builtin_document().get("token_lifetimes", {}))


def lead_times(provider: str | None, settings: Settings) -> list[timedelta]:
    override = settings.tokens.providers.get(provider or "")
    leads = override.warn_before if override and override.warn_before else settings.tokens.warn_before
    return sorted(leads, reverse=True)


def expiry(token: Any, lifetime: Lifetime | None) -> datetime | None:
    """When the refresh token stops working, or ``None`` when nothing says."""
    if token.expires_at is not None:
        return as_utc(token.expires_at)
    if lifetime is None:
        return None
    if lifetime.basis == "last_used":
        base = token.last_used_at or token.issued_at
    else:
        base = token.issued_at
    return as_utc(base) + lifetime.duration if base is not None else None


def due_leads(expires: datetime, *, now: datetime, leads: list[timedelta], warned: list[int]) -> list[timedelta]:
    """Lead times whose moment has come and that were not warned about yet (pure)."""
    return [lead for lead in leads if now >= expires - lead and int(lead.total_seconds()) not in warned]


def _leads(token: Token, expires: datetime, leads: list[timedelta]) -> list[timedelta]:
    """The lead times that fall after the token was issued: a 7-day token warned 7 days ahead would warn
    the moment it is issued — right after the reauthorization that made it. A token shorter-lived than
    every lead is warned once, half its lifetime before it expires."""
    if token.issued_at is None:
        return leads
    issued = as_utc(token.issued_at)
    kept = [lead for lead in leads if expires - lead > issued]
    if not kept and leads and expires > issued:
        kept = [(expires - issued) / 2]
    return kept


def fingerprint(integration_id: str) -> str:
    return hashlib.sha256(f"{CODE}\x1f{integration_id}".encode()).hexdigest()[:32]


def upsert(session: Session, *, data: dict[str, Any], settings: Settings, catalog: Catalog, now: datetime) -> Token:
    """Record token metadata; a newer ``issued_at`` means reauthorized: warnings reset, the alert resolves."""
    iid = clean_id(data["integration_id"], 200) or data["integration_id"]  # as ingest stores alert ids
    token = session.exec(select(Token).where(Token.integration_id == iid)).first()
    reauthorized = False
    if token is None:
        token = Token(integration_id=iid, scopes=[], warned=[])
    elif data.get("issued_at") and token.issued_at and as_utc(data["issued_at"]) > as_utc(token.issued_at):
        reauthorized = True
    for key in ("integration_name", "provider", "issued_at", "expires_at", "last_used_at", "reauthorize_url"):
        if data.get(key) is not None:
            setattr(token, key, data[key])
    if token.reauthorize_url:  # a link carrying a credential is kept redacted (and so never used: links)
        token.reauthorize_url = redact(token.reauthorize_url)
    if data.get("scopes") is not None:  # free text as any event's: sanitised and redacted
        token.scopes = [s for s in (clean_field(str(scope), 200) for scope in data["scopes"]) if s]
    token.provider = clean_field(catalog.canonical_provider(token.provider), 100)
    token.integration_name = clean_field(token.integration_name, 200)
    token.updated_at = now
    if reauthorized or data.get("expires_at") is not None:
        token.warned = []
    session.add(token)
    if reauthorized:
        alert = _open_alert(session, iid)
        if alert is not None:
            ingest.resolve_alert(session, alert, now=now, by="reauthorized (new issued_at)", settings=settings,
                                 catalog=catalog)
    session.flush()
    return token


def _open_alert(session: Session, integration_id: str) -> Alert | None:
    return session.exec(select(Alert).where(Alert.fingerprint == fingerprint(integration_id),
                                            Alert.state != AlertState.resolved.value)).first()


def check(engine: Engine, *, settings: Settings, catalog: Catalog, now: datetime) -> int:
    """Raise each due warning once; return how many were raised."""
    raised = 0
    entry = catalog.get(CODE)
    if entry is None:
        return 0
    def due_of(token: Token) -> tuple[datetime | None, Any, list[timedelta]]:
        life = lifetime_for(token.provider, settings=settings, catalog=catalog)
        try:
            expires = expiry(token, life)
            due = due_leads(expires, now=now, leads=_leads(token, expires, lead_times(token.provider, settings)),
                            warned=list(token.warned)) if expires is not None else []
        except (OverflowError, ValueError):  # a date stored before 1970–9000 was checked: skip that one row
            log.warning("token dates out of range; no expiry warning", extra={"integration_id": token.integration_id})
            return None, life, []
        return expires, life, due

    with session_scope(engine) as session:
        ids = [t.id for t in session.exec(select(Token)).all() if due_of(t)[2]]
        if not ids:
            return 0
        # Those again, locked and decided on what is current: every replica's tick checks at once, and each
        # warning is raised by one of them (PostgreSQL re-reads a row it waited for; SQLite has one writer).
        session.expire_all()
        for token in session.exec(select(Token).where(Token.id.in_(ids)).order_by(Token.id).with_for_update()).all():
            expires, life, due = due_of(token)
            if not due or expires is None:
                continue
            token.warned = sorted({*token.warned, *(int(d.total_seconds()) for d in due)})
            session.add(token)
            _warn(session, token, expires=expires, life=life, now=now, settings=settings, catalog=catalog)
            raised += 1
    return raised


def _warn(session: Session, token: Token, *, expires: datetime, life: Lifetime | None, now: datetime,
          settings: Settings, catalog: Catalog) -> None:
    name = token.integration_name or token.integration_id
    when = expires.strftime("%Y-%m-%d %H:%M UTC")
    if expires > now:
        text = f"The refresh token of {name} expires on {when}, in {humanize(expires - now)}."
    else:
        text = f"The refresh token of {name} expired on {when}."
    if token.expires_at is None and life is not None and life.note:
        text += f" {life.note}"
    alert = _open_alert(session, token.integration_id)
    if alert is None:
        reg = settings.integration(token.integration_id)
        url, _ = reauthorize_url(links=settings.links, integration_id=token.integration_id, provider=token.provider,
                                 account_id=reg.account_id if reg else None,
                                 candidates=(token.reauthorize_url,),
                                 configured=reg.reauthorize_url if reg else None)
        alert = Alert(
            fingerprint=fingerprint(token.integration_id),
            integration_id=token.integration_id,
            integration_name=token.integration_name or (reg.name if reg else None),
            provider=token.provider,
            auth_method="oauth2",
            code=CODE,
            severity=str(catalog.entries[CODE].severity),
            state=AlertState.firing,
            count=1,
            first_seen=now,
            last_seen=now,
            last_error=text,
            labels=dict(reg.labels) if reg else {},
            reauthorize_url=url,
        )
        alert.silenced = silences.is_silenced(alert, silences.active(session, now=now))
        session.add(alert)
        session.flush()
        if not alert.silenced:
            ingest._notify(session, alert, Kind.firing, due=now, now=now, settings=settings, catalog=catalog)
        return
    alert.count += 1
    alert.last_seen = now
    alert.last_error = text
    session.add(alert)
    if alert.state == AlertState.firing and not alert.silenced:
        ingest._notify(session, alert, Kind.updated, due=now, now=now, settings=settings, catalog=catalog)


def public(token: Token, *, settings: Settings, catalog: Catalog, now: datetime) -> dict[str, Any]:
    life = lifetime_for(token.provider, settings=settings, catalog=catalog)
    expires = expiry(token, life)

    def iso(v: datetime | None) -> str | None:
        return as_utc(v).isoformat().replace("+00:00", "Z") if v else None

    return {
        "integration_id": token.integration_id,
        "integration_name": token.integration_name,
        "provider": token.provider,
        "issued_at": iso(token.issued_at),
        "last_used_at": iso(token.last_used_at),
        "expires_at": iso(expires),
        "expires_in_seconds": int((expires - now).total_seconds()) if expires else None,
        "expiry_source": "reported" if token.expires_at else (
            ("lifetime of " + (life.source or "the provider")) if life and expires else None),
        "scopes": list(token.scopes or []),
        "warned_days": sorted({w / 86400 for w in token.warned}, reverse=True),
    }
