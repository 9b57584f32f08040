"""Ingest: events in, alerts and outbox rows out — in one transaction (R2.1, R5.2).

For each event: sanitise and redact its text, enrich it from the ``[[integrations]]`` registry,
classify it, store it (a repeated ``event_id`` is a duplicate and stops there), and apply the
lifecycle decision to its fingerprint's alert, enqueueing the notifications that decision owes.
The caller answers 2xx only after :func:`ingest` returns, i.e. after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alerts import lifecycle, outbox, silences
from alerts.catalog import Catalog
from alerts.config import Settings
from alerts.lifecycle import Action, AlertView, EventView, Policy
from alerts.links import reauthorize_url
from alerts.models import AlertState, AuthErrorEvent, DeliveryStatus, EventStatus, Kind, Severity, as_utc
from alerts.redact import clean, redact_value, sanitize
from alerts.routing import Target, facts_of, targets_for
from alerts.storage import Alert, Event, Notification, session_scope

log = logging.getLogger("alerts.ingest")


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    alert_ids: list[int] = field(default_factory=list)

    def add_alert(self, alert_id: int | None) -> None:
        if alert_id is not None and alert_id not in self.alert_ids:
            self.alert_ids.append(alert_id)


def policy_of(settings: Settings) -> Policy:
    return Policy(
        group_wait=settings.alerting.group_wait,
        repeat_interval=settings.alerting.repeat_interval,
        send_resolved=settings.alerting.send_resolved,
    )


def normalise(event: AuthErrorEvent, settings: Settings, catalog: Catalog) -> AuthErrorEvent:
    """Sanitise free text (R3.3), fill gaps from the integration registry, canonicalise the provider."""
    reg = settings.integration(event.integration_id)
    event.integration_id = sanitize(event.integration_id, limit=200) or event.integration_id
    event.integration_name = sanitize(event.integration_name or (reg.name if reg else None), limit=200)
    event.provider = catalog.canonical_provider(event.provider or (reg.provider if reg else None))
    event.auth_method = event.auth_method or (reg.auth_method if reg else None)
    event.account_id = sanitize(event.account_id or (reg.account_id if reg else None), limit=200)
    event.error = sanitize(event.error, limit=4096)
    event.labels = {**(reg.labels if reg else {}), **(event.labels or {})}
    return event


def classify(event: AuthErrorEvent, catalog: Catalog):  # -> Classification | None
    if event.status != EventStatus.failed:
        return None
    return catalog.by_code(event.error_code) or catalog.classify(event.error, event.provider, event.auth_method)


def ingest(
    events: list[AuthErrorEvent],
    *,
    engine: Engine,
    settings: Settings,
    catalog: Catalog,
    now: datetime,
    body_sha256: str | None = None,
) -> IngestResult:
    """Store ``events`` and everything they cause in one transaction; return what happened."""
    result = IngestResult()
    with session_scope(engine) as session:
        for event in events:
            apply_event(session, event, settings=settings, catalog=catalog, now=now, result=result,
                        body_sha256=body_sha256)
    return result


def apply_event(
    session: Session,
    event: AuthErrorEvent,
    *,
    settings: Settings,
    catalog: Catalog,
    now: datetime,
    result: IngestResult,
    body_sha256: str | None = None,
) -> None:
    event = normalise(event, settings, catalog)
    found = classify(event, catalog)
    occurred = as_utc(event.occurred_at) if event.occurred_at else now
    stored_error = clean(event.error)
    if not _insert_event(session, event, code=found.entry.code if found else None, error=stored_error,
                         occurred=occurred, now=now, body_sha256=body_sha256):
        result.duplicates += 1
        return
    result.accepted += 1
    policy = policy_of(settings)

    if event.status == EventStatus.succeeded:
        for alert in _open_alerts_of(session, event.integration_id):
            resolve_alert(session, alert, now=now, at=occurred, by=f"{event.source} success event",
                          settings=settings, catalog=catalog)
            result.add_alert(alert.id)
        return
    if found is None:
        return

    entry = found.entry
    fp = lifecycle.fingerprint(
        settings.alerting.group_by,
        integration_id=event.integration_id,
        provider=event.provider,
        code=entry.base_code,
        account_id=event.account_id,
        auth_method=event.auth_method,
        labels=event.labels,
    )
    ev = EventView(status=EventStatus.failed, code=entry.code, severity=entry.severity, occurred_at=occurred)
    for _ in range(3):  # a concurrent replica may open the same fingerprint between our read and insert
        alert = _open_alert(session, fp)
        last_resolved = None if alert else _last_resolved_at(session, fp)
        view = _view(alert) if alert else None
        decision = lifecycle.decide(view, ev, now=now, policy=policy, last_resolved_at=last_resolved)
        if decision.action == Action.ignore:
            return
        if decision.action == Action.open:
            alert = _try_open(session, event, entry, fp, occurred=occurred, now=now, settings=settings,
                              error=stored_error)
            if alert is None:
                continue
            _link_event(session, event, alert)
            result.add_alert(alert.id)
            if not alert.silenced:
                _notify(session, alert, Kind.firing, due=now + policy.group_wait, now=now, settings=settings,
                        catalog=catalog)
            return
        assert alert is not None
        alert.count += 1
        if occurred >= as_utc(alert.last_seen):
            alert.last_seen = occurred
            alert.last_error = stored_error
        if decision.escalate:
            alert.code = entry.code
            alert.severity = str(entry.severity)
        session.add(alert)
        _link_event(session, event, alert)
        result.add_alert(alert.id)
        if decision.notify is not None:
            _notify(session, alert, decision.notify, due=now, now=now, settings=settings, catalog=catalog)
        return
    raise RuntimeError(f"could not open or update the alert for fingerprint {fp}")


# -- alert state changes shared by events, the API and the CLI --------------------------------


def resolve_alert(
    session: Session,
    alert: Alert,
    *,
    now: datetime,
    at: datetime | None = None,
    by: str,
    settings: Settings,
    catalog: Catalog,
) -> None:
    """Resolve ``alert`` and owe a ``resolved`` message to everyone who was told it was firing.

    A firing message still waiting out ``group_wait`` is cancelled instead: nobody was told, so
    nobody needs telling that it is fixed.
    """
    if alert.state == AlertState.resolved:
        return
    alert.state = AlertState.resolved
    alert.resolved_at = max(as_utc(at or now), as_utc(alert.first_seen))
    alert.resolved_by = by
    session.add(alert)
    session.flush()
    pending = session.exec(
        select(Notification).where(
            Notification.alert_id == alert.id,
            Notification.status == DeliveryStatus.pending,
            Notification.attempts == 0,
        )
    ).all()
    for row in pending:
        row.status = DeliveryStatus.cancelled
        session.add(row)
    told = session.exec(
        select(Notification).where(
            Notification.alert_id == alert.id,
            Notification.status.in_([DeliveryStatus.sent, DeliveryStatus.failed, DeliveryStatus.pending]),
            Notification.kind == Kind.firing.value,
        )
    ).all()
    if not settings.alerting.send_resolved or alert.silenced or not told:
        return
    targets = _unique_targets(told)
    alert.notify_seq += 1
    alert.last_notified_at = now
    outbox.enqueue(session, alert_id=alert.id, kind=Kind.resolved, seq=alert.notify_seq, targets=targets,
                   due=now, now=now)


def acknowledge_alert(session: Session, alert: Alert, *, now: datetime, by: str) -> bool:
    if alert.state != AlertState.firing:
        return False
    alert.state = AlertState.acknowledged
    alert.acknowledged_at = now
    alert.acknowledged_by = sanitize(by, limit=200)
    session.add(alert)
    return True


def enqueue_reminders(engine: Engine, *, settings: Settings, catalog: Catalog, now: datetime) -> int:
    """Timed reminders: each firing, unsilenced alert gets one per ``repeat_interval`` since its last message."""
    policy = policy_of(settings)
    cutoff = now - policy.repeat_interval
    count = 0
    with session_scope(engine) as session:
        due = session.exec(
            select(Alert).where(
                Alert.state == AlertState.firing.value,
                Alert.silenced == sa.false(),
                Alert.last_notified_at.is_not(None),
                Alert.last_notified_at <= cutoff,
            ).limit(500)
        ).all()
        for alert in due:
            if lifecycle.reminder_due(_view(alert), now=now, policy=policy):
                _notify(session, alert, Kind.reminder, due=now, now=now, settings=settings, catalog=catalog)
                count += 1
    return count


# -- helpers ----------------------------------------------------------------------------------


def _view(alert: Alert) -> AlertView:
    return AlertView(
        state=AlertState(alert.state),
        severity=Severity(alert.severity),
        code=alert.code,
        silenced=alert.silenced,
        last_notified_at=alert.last_notified_at,
    )


def _insert_event(session: Session, event: AuthErrorEvent, *, code: str | None, error: str | None,
                  occurred: datetime, now: datetime, body_sha256: str | None) -> bool:
    """Insert the event row; ``False`` when its ``event_id`` was seen before (a replay)."""
    if event.event_id:
        seen = session.exec(select(Event.id).where(Event.event_id == event.event_id)).first()
        if seen is not None:
            return False
    row = Event(
        event_id=event.event_id,
        source=event.source,
        integration_id=event.integration_id,
        status=str(event.status),
        provider=event.provider,
        auth_method=event.auth_method,
        code=code,
        error=error,
        occurred_at=occurred,
        received_at=now,
        body_sha256=body_sha256,
    )
    if event.event_id:
        # A nested transaction keeps a concurrent duplicate from aborting the whole batch.
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except sa.exc.IntegrityError:
            return False
    else:
        session.add(row)
        session.flush()
    event._row_id = row.id  # type: ignore[attr-defined]
    return True


def _link_event(session: Session, event: AuthErrorEvent, alert: Alert) -> None:
    row_id = getattr(event, "_row_id", None)
    if row_id is not None:
        session.execute(sa.update(Event).where(Event.id == row_id).values(alert_id=alert.id))


def _open_alert(session: Session, fp: str) -> Alert | None:
    stmt = select(Alert).where(Alert.fingerprint == fp, Alert.state != AlertState.resolved.value)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return session.exec(stmt).first()


def _open_alerts_of(session: Session, integration_id: str) -> list[Alert]:
    stmt = select(Alert).where(Alert.integration_id == integration_id, Alert.state != AlertState.resolved.value)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return list(session.exec(stmt).all())


def _last_resolved_at(session: Session, fp: str) -> datetime | None:
    value = session.exec(
        select(sa.func.max(Alert.resolved_at)).where(Alert.fingerprint == fp, Alert.state == "resolved")
    ).first()
    return as_utc(value) if value else None


def _try_open(session: Session, event: AuthErrorEvent, entry, fp: str, *, occurred: datetime,
              now: datetime, settings: Settings, error: str | None) -> Alert | None:
    reg = settings.integration(event.integration_id)
    url, rejected = reauthorize_url(
        links=settings.links,
        integration_id=event.integration_id,
        provider=event.provider,
        account_id=event.account_id,
        candidates=(event.reauthorize_url, reg.reauthorize_url if reg else None),
    )
    for bad in rejected:
        log.warning("reauthorize link dropped: not https or host not in [links] allowed_hosts",
                    extra={"integration_id": event.integration_id, "url": bad[:200]})
    alert = Alert(
        fingerprint=fp,
        integration_id=event.integration_id,
        integration_name=event.integration_name,
        provider=event.provider,
        auth_method=event.auth_method,
        account_id=event.account_id,
        authorized_by=sanitize(event.authorized_by, limit=320),
        code=entry.code,
        severity=str(entry.severity),
        state=AlertState.firing,
        count=1,
        first_seen=occurred,
        last_seen=occurred,
        last_error=error,
        labels=redact_value(dict(event.labels)),
        reauthorize_url=url,
        silenced=False,
    )
    alert.silenced = is_silenced(session, alert, now=now)
    try:
        with session.begin_nested():
            session.add(alert)
            session.flush()
    except sa.exc.IntegrityError:
        return None  # another writer opened it first; the caller re-reads and bumps
    return alert


def _notify(session: Session, alert: Alert, kind: Kind, *, due: datetime, now: datetime,
            settings: Settings, catalog: Catalog) -> None:
    entry = catalog.get(alert.code)
    owner = settings.integration(alert.integration_id)
    targets = targets_for(
        facts_of(alert, base_code=entry.base_code if entry else None),
        settings,
        owner=owner.owner if owner else None,
    )
    alert.notify_seq += 1
    alert.last_notified_at = due
    session.add(alert)
    session.flush()
    outbox.enqueue(session, alert_id=alert.id, kind=kind, seq=alert.notify_seq, targets=targets, due=due, now=now)


def _unique_targets(rows) -> list[Target]:
    seen: dict[tuple[str, str], Target] = {}
    for r in rows:
        seen.setdefault((r.receiver, r.channel), Target(r.receiver, r.channel, dict(r.target or {})))
    return list(seen.values())


def is_silenced(session: Session, alert: Alert, *, now: datetime) -> bool:
    return silences.is_silenced(alert, silences.active(session, now=now))


def refresh_silences(engine: Engine, *, settings: Settings, catalog: Catalog, now: datetime) -> int:
    """Recompute ``silenced`` on open alerts; one message for each firing alert whose silence ended.

    Returns how many alerts changed. New silences take effect at once (their alerts stop sending);
    an alert that comes out of a silence still firing gets one message: its first if it never had one.
    """
    changed = 0
    with session_scope(engine) as session:
        current = silences.active(session, now=now)
        open_alerts = session.exec(select(Alert).where(Alert.state != AlertState.resolved.value)).all()
        for alert in open_alerts:
            now_silenced = silences.is_silenced(alert, current)
            if now_silenced == alert.silenced:
                continue
            changed += 1
            alert.silenced = now_silenced
            session.add(alert)
            if not now_silenced and alert.state == AlertState.firing:
                kind = Kind.reminder if alert.first_notified_at else Kind.firing
                _notify(session, alert, kind, due=now, now=now, settings=settings, catalog=catalog)
    return changed
