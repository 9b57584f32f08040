"""Email digests: on a cron schedule, one summary per recipient of what is broken, new and fixed.

Each scheduled time is a *period*; a ``digest_run`` row with a unique ``(name, period_start)``
claims it, so several replicas (or a restart) send each period once (R2.7). Only the latest
scheduled time that has passed is considered, so downtime over several periods sends one
catch-up digest; the first time a digest is seen, its latest past time is recorded as a
``baseline`` and nothing is sent (a fresh installation sends no catch-up).

"Since the last digest" means since the previous digest of that name that was sent (scheduled
or manual), or, for the first, since the schedule's previous time.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from croniter import croniter
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alerts import crashpoints, outbox
from alerts.catalog import Catalog
from alerts.config import Digest, Settings
from alerts.durations import humanize
from alerts.models import AlertState, Kind, Severity, as_utc
from alerts.render import EXPIRING, Renderer, provider_label
from alerts.routing import Target, facts_of, route_matches
from alerts.stats import percentile
from alerts.storage import FIVETRAN, Alert, DigestRun, Event, session_scope

log = logging.getLogger("alerts.digest")

GROUP_BY_PROVIDER_ABOVE = 8


def scheduled_times(digest: Digest, now: datetime) -> tuple[datetime, datetime]:
    """The latest scheduled time at or before ``now`` and the one before it (UTC)."""
    tz = ZoneInfo(digest.timezone)
    local_now = as_utc(now).astimezone(tz)
    it = croniter(digest.schedule, local_now + timedelta(microseconds=1))
    latest = it.get_prev(datetime)
    previous = it.get_prev(datetime)
    return as_utc(latest), as_utc(previous)


def _claim(session: Session, *, name: str, period_start: datetime, status: str, manual: bool,
           now: datetime, period_end: datetime | None = None) -> bool:
    """Insert the (name, period) row; ``False`` when another replica (or run) already has it."""
    table = DigestRun.__table__
    values = {"name": name, "period_start": period_start, "period_end": period_end, "manual": manual,
              "status": status, "created_at": now}
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).values(**values).on_conflict_do_nothing(
        index_elements=["name", "period_start"]).returning(table.c.id)
    return session.execute(stmt).first() is not None


def _since(session: Session, name: str, *, before: datetime, default: datetime) -> datetime:
    last = session.exec(
        select(sa.func.max(DigestRun.period_start)).where(
            DigestRun.name == name, DigestRun.status.in_(["sent", "manual"]),
            DigestRun.period_start < before)
    ).first()
    return as_utc(last) if last else default


@dataclass
class Recipient:
    to: list[str]
    owner: str | None = None  # set for a per-owner digest


def digest_data(
    session: Session,
    digest: Digest,
    *,
    settings: Settings,
    catalog: Catalog,
    since: datetime,
    until: datetime,
    owner: str | None = None,
) -> dict[str, Any]:
    """The template data of one digest (the same model for HTML and text)."""

    def wanted(alert: Alert) -> bool:
        entry = catalog.get(alert.code)
        facts = facts_of(alert, base_code=entry.base_code if entry else None)
        if digest.match and not route_matches(digest.match, facts):
            return False
        if owner is not None:
            reg = settings.integration(alert.integration_id)
            return bool(reg and reg.owner == owner)
        return True

    open_rows = session.exec(select(Alert).where(Alert.state != AlertState.resolved.value)).all()
    new_rows = session.exec(select(Alert).where(Alert.first_seen > since, Alert.first_seen <= until)).all()
    fixed_rows = session.exec(select(Alert).where(
        Alert.state == AlertState.resolved.value, Alert.resolved_at > since, Alert.resolved_at <= until)).all()

    tz = ZoneInfo(digest.timezone)

    def item(a: Alert) -> dict[str, Any]:
        entry = catalog.get(a.code)
        name = a.integration_name or a.integration_id
        label = provider_label(a.provider) or "Other"
        auth = a.auth_method or catalog.default_auth.get(a.provider or "")  # as the alert's own message
        return {
            "id": a.id,
            "integration_id": a.integration_id,
            "name": name,
            "provider": a.provider or "",
            "provider_label": label,  # the heading items are grouped under
            # after the name, unless the name says it already ("Salesforce (prod) (Salesforce)")
            "provider_note": label if a.provider and label.lower() not in name.lower() else "",
            "code": a.code,
            "severity": a.severity,
            "state": a.state,
            "title": entry.title if entry else a.code,
            "solution": entry.solution_for(auth) if entry else "",
            "action_label": _action_label(entry.action_for(auth) if entry else ""),
            "expiring": a.code == EXPIRING,
            "count": a.count,
            "first_seen": as_utc(a.first_seen).astimezone(tz),  # in the digest's time zone, as its heading
            "since": humanize(until - as_utc(a.first_seen)),
            "time_to_fix": humanize(as_utc(a.resolved_at) - as_utc(a.first_seen)) if a.resolved_at else "",
            "reauthorize_url": a.reauthorize_url,
            "silenced": a.silenced,
            "acknowledged": a.state == AlertState.acknowledged,
            "url": f"{settings.server.base_url()}/alerts/{a.id}",
        }

    broken = sorted((a for a in open_rows if wanted(a)), key=lambda a: as_utc(a.first_seen))
    new = sorted((a for a in new_rows if wanted(a)), key=lambda a: as_utc(a.first_seen))
    fixed = sorted((a for a in fixed_rows if wanted(a)), key=lambda a: as_utc(a.resolved_at)) \
        if digest.include_resolved else []
    broken_items = [item(a) for a in broken]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in broken_items:
        groups[it["provider_label"]].append(it)
    critical = sum(1 for a in broken if Severity(a.severity) == Severity.critical)
    return {
        "kind": Kind.digest.value,
        "name": digest.name,
        "owner": owner,
        "since": since.astimezone(tz),
        "until": until.astimezone(tz),
        "timezone": digest.timezone,
        "counts": {"broken": len(broken), "new": len(new), "fixed": len(fixed), "critical": critical},
        "broken": broken_items,
        "by_provider": sorted(groups.items()) if len(broken_items) > GROUP_BY_PROVIDER_ABOVE else [],
        "new": [item(a) for a in new],
        "fixed": [item(a) for a in fixed],
        "dashboard_url": settings.server.base_url(),
        "time_to_fix": _time_to_fix(session, until),
        "empty": not (broken or new or fixed),
    }


def _time_to_fix(session: Session, until: datetime) -> list[dict[str, Any]]:
    """Median and p90 time to fix per provider over the 30 days before ``until``."""
    rows = session.exec(select(Alert.provider, Alert.first_seen, Alert.resolved_at).where(
        Alert.state == AlertState.resolved.value, Alert.resolved_at > until - timedelta(days=30),
        Alert.resolved_at <= until)).all()
    by: dict[str, list[float]] = defaultdict(list)
    for provider, first, resolved in rows:
        by[provider_label(provider) or "Other"].append((as_utc(resolved) - as_utc(first)).total_seconds())
    return [{"provider": k, "count": len(v), "median": humanize(timedelta(seconds=percentile(v, 50) or 0)),
             "p90": humanize(timedelta(seconds=percentile(v, 90) or 0))} for k, v in sorted(by.items())]


def _action_label(action: str) -> str:
    from alerts.render import ACTION_LABEL

    return ACTION_LABEL.get(action, "Fix it")


def recipients(digest: Digest, settings: Settings) -> list[Recipient]:
    out = [Recipient(to=list(digest.to))] if digest.to else []
    if digest.per_owner:
        owners = sorted({i.owner for i in settings.integrations if i.owner})
        out.extend(Recipient(to=[o], owner=o) for o in owners)
    return out


def channel_for(settings: Settings) -> str:
    return "email" if settings.email.configured else "file"


def enqueue_digest(
    session: Session,
    digest: Digest,
    *,
    settings: Settings,
    catalog: Catalog,
    renderer: Renderer,
    since: datetime,
    until: datetime,
    run_key: str,
    now: datetime,
) -> int:
    """Render and enqueue one digest per recipient (in the caller's transaction); return how many."""
    count = 0
    for rcpt in recipients(digest, settings):
        data = digest_data(session, digest, settings=settings, catalog=catalog, since=since, until=until,
                           owner=rcpt.owner)
        if data["empty"] and digest.skip_if_empty:
            continue
        rendered = renderer.digest(data)
        payload = rendered.to_json()
        # Fivetran's Connect Card links expire after a day: the worker mints fresh ones for these at send time.
        payload["fivetran_links"] = _fivetran_links(session, data["broken"])
        target = Target(receiver=f"digest:{digest.name}", channel=channel_for(settings), address={"to": rcpt.to})
        rows = outbox.enqueue(session, alert_id=None, kind=Kind.digest, seq=f"{run_key}|{','.join(rcpt.to)}",
                              targets=[target], due=now, now=now, payload=payload)
        count += len(rows)
    return count


def _fivetran_links(session: Session, items: list[dict[str, Any]]) -> list[list[str]]:
    """``[connector id, stored link]`` of the digest's alerts that came from Fivetran."""
    ids = [it["id"] for it in items if it.get("reauthorize_url")]
    if not ids:
        return []
    fivetran = set(session.exec(select(Event.alert_id).where(Event.alert_id.in_(ids), FIVETRAN).distinct()).all())
    return [[it["integration_id"], it["reauthorize_url"]] for it in items if it["id"] in fivetran]


def tick(engine: Engine, *, settings: Settings, catalog: Catalog, renderer: Renderer, now: datetime) -> int:
    """Send every digest whose latest scheduled time has passed and is not yet claimed."""
    sent = 0
    for digest in settings.digests:
        latest, previous = scheduled_times(digest, now)
        with session_scope(engine) as session:
            known = session.exec(select(sa.func.count()).select_from(DigestRun)
                                 .where(DigestRun.name == digest.name, DigestRun.manual == sa.false())).one()
            if not known:
                # First sight of this digest: remember where we start, send no catch-up.
                _claim(session, name=digest.name, period_start=latest, status="baseline", manual=False, now=now)
                continue
        with session_scope(engine) as session:
            since = _since(session, digest.name, before=latest, default=previous)
            if not _claim(session, name=digest.name, period_start=latest, period_end=latest, status="sent",
                          manual=False, now=now):
                continue  # this period is already someone's
            n = enqueue_digest(session, digest, settings=settings, catalog=catalog, renderer=renderer,
                               since=since, until=latest, run_key=f"{digest.name}|{latest.isoformat()}", now=now)
            crashpoints.hit("mid_digest_claim")
            if n == 0:
                session.execute(sa.update(DigestRun).where(
                    DigestRun.name == digest.name, DigestRun.period_start == latest).values(status="empty"))
            sent += n
            log.info("digest claimed", extra={"digest": digest.name, "period": latest.isoformat(), "messages": n})
    return sent


def send_now(engine: Engine, digest: Digest, *, settings: Settings, catalog: Catalog, renderer: Renderer,
             now: datetime) -> int:
    """A manual digest right now; recorded as manual, so the scheduled period is still sent at its time."""
    latest, previous = scheduled_times(digest, now)
    with session_scope(engine) as session:
        since = _since(session, digest.name, before=now, default=latest if latest < now else previous)
        _claim(session, name=digest.name, period_start=now, period_end=now, status="manual", manual=True, now=now)
        return enqueue_digest(session, digest, settings=settings, catalog=catalog, renderer=renderer,
                              since=since, until=now, run_key=f"{digest.name}|manual|{now.isoformat()}", now=now)


def preview(engine: Engine, digest: Digest, *, settings: Settings, catalog: Catalog, renderer: Renderer,
            now: datetime, owner: str | None = None) -> Any:
    latest, previous = scheduled_times(digest, now)
    with session_scope(engine) as session:
        since = _since(session, digest.name, before=now, default=latest if latest < now else previous)
        data = digest_data(session, digest, settings=settings, catalog=catalog, since=since, until=now, owner=owner)
    return renderer.digest(data)
