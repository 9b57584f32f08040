"""Ingest: events in, alerts and outbox rows out — in one transaction (R2.1, R5.2).

For each event: sanitise and redact its text, enrich it from the ``[[integrations]]`` registry,
classify it, store it (a repeated ``event_id`` is a duplicate and stops there), and apply the
lifecycle decision to its fingerprint's alert, enqueueing the notifications that decision owes.
The caller answers 2xx only after :func:`ingest` returns, i.e. after the commit.
"""

from __future__ import annotations

import functools
import logging
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alerts import lifecycle, outbox, silences
from alerts.catalog import Catalog
from alerts.config import Settings
from alerts.fastsql import Raw, _Array, transaction
from alerts.lifecycle import Action, AlertView, EventView, Policy
from alerts.links import dropped_because, reauthorize_url
from alerts.models import (
    AlertState,
    AuthErrorEvent,
    CatalogEntry,
    DeliveryStatus,
    EventStatus,
    Kind,
    Severity,
    as_utc,
)
from alerts.redact import MAX_TEXT, clean, clean_field, clean_id, clean_labels, redact, sanitize
from alerts.routing import Target, facts_of, targets_for
from alerts.storage import Alert, Event, Notification, Token, UTCDateTime, session_scope

log = logging.getLogger("alerts.ingest")

TOKEN_EXPIRING = "token_expiring"  # warnings of alerts.tokens: not resolved by a successful sync


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    alert_ids: list[int] = field(default_factory=list)
    wake: bool = False  # a notification is due now: the delivery worker should look at once
    _alerts: dict[int, Any] = field(default_factory=dict, repr=False)  # records (by id()) and ids, in order
    _ids: set[int] = field(default_factory=set, repr=False)

    def add_alert(self, alert_id: int | None) -> None:
        if alert_id is not None and alert_id not in self._ids:
            self._ids.add(alert_id)
            self.alert_ids.append(alert_id)

    def add_alert_obj(self, alert: Any) -> None:
        """Remember an alert (or its id) whose id may not be known yet (new alerts get theirs when inserted)."""
        self._alerts.setdefault(alert if isinstance(alert, int) else id(alert), alert)

    def resolve_ids(self) -> None:
        for alert in self._alerts.values():
            self.add_alert(alert if isinstance(alert, int) else alert.id)
        self._alerts.clear()


def policy_of(settings: Settings) -> Policy:
    return Policy(
        group_wait=settings.alerting.group_wait,
        repeat_interval=settings.alerting.repeat_interval,
        send_resolved=settings.alerting.send_resolved,
    )


def normalise(event: AuthErrorEvent, settings: Settings, catalog: Catalog) -> AuthErrorEvent:
    """Sanitise free text (R3.3), fill gaps from the integration registry, canonicalise the provider."""
    reg = settings.integration(event.integration_id)
    # Names are free text too: a secret in them is redacted like one in an error (R4.1); ids lose only
    # token shapes (clean_id: they must stay distinct to be matched and grouped on).
    event.integration_id = clean_id(event.integration_id, 200) or event.integration_id
    event.integration_name = clean_field(event.integration_name or (reg.name if reg else None), 200)
    provider = catalog.canonical_provider(event.provider or (reg.provider if reg else None))
    event.provider = clean_field(provider, 100) if provider else None  # fits the column on every database
    event.auth_method = event.auth_method or (reg.auth_method if reg else None)
    event.account_id = clean_id(event.account_id or (reg.account_id if reg else None), 200)
    event.error = sanitize(event.error, limit=MAX_TEXT)  # cut to 4096 only once redacted (clean)
    event.labels = {**(reg.labels if reg else {}), **(event.labels or {})}
    return event



def classify(event: AuthErrorEvent, catalog: Catalog):  # -> Classification | None
    if event.status != EventStatus.failed:
        return None
    return catalog.by_code(event.error_code) or catalog.classify(event.error, event.provider, event.auth_method)


@dataclass
class Prepared:
    """One event ready to apply: cleaned, classified and fingerprinted (no database needed)."""

    event: AuthErrorEvent
    entry: CatalogEntry | None
    occurred: datetime
    error: str | None  # sanitised and redacted: what is stored and shown
    fingerprint: str | None
    body_sha256: str | None = None


def _classified(catalog: Catalog, error: str | None, provider: str | None, auth_method: str | None,
                error_code: str | None) -> CatalogEntry | None:
    """The catalog entry for an error, judged on what is stored of it (its first 4096 characters)."""
    return _classified_cached(catalog, error[:4096] if error else error, provider, auth_method, error_code)


@functools.lru_cache(maxsize=2048)
def _classified_cached(catalog: Catalog, error: str | None, provider: str | None, auth_method: str | None,
                       error_code: str | None) -> CatalogEntry | None:
    found = catalog.by_code(error_code) or catalog.classify(error, provider, auth_method)
    return found.entry if found else None


def _cleaned(text: str | None) -> str | None:
    return clean(text) if text and len(text) > 4096 else _cleaned_cached(text)  # long texts: not kept


@functools.lru_cache(maxsize=2048)
def _cleaned_cached(text: str | None) -> str | None:
    return clean(text)


def prepare(event: AuthErrorEvent, *, settings: Settings, catalog: Catalog, now: datetime,
            body_sha256: str | None = None) -> Prepared:
    """Normalise, classify and fingerprint one event.

    A broken integration fails the same way on every run, so the outcome is memoised by the event's
    fields (events with labels of their own, or with errors longer than is stored, are worked out
    each time: labels are part of the key space of the fingerprint and rarely repeat)."""
    if event.authorized_by:  # not part of the memo's key: cleaned on its own (cached)
        event.authorized_by = clean_field(event.authorized_by, 320)
    memo = None if event.labels or len(event.error or "") > 4096 else _memo_of(settings, catalog)
    if memo is not None:
        key = (event.integration_id, event.status, event.integration_name, event.provider, event.auth_method,
               event.account_id, event.error, event.error_code)
        hit = memo.get(key)
        if hit is not None:
            (event.integration_id, event.integration_name, event.provider, event.auth_method, event.account_id,
             event.error, labels, entry, fp, error) = hit
            event.labels = dict(labels)
            occurred = _occurred(event, now)
            return Prepared(event, entry, occurred, error, fp, body_sha256)
    event = normalise(event, settings, catalog)
    entry = None
    if event.status == EventStatus.failed:
        entry = _classified(catalog, event.error, event.provider, event.auth_method, event.error_code)
    fp = None
    if entry is not None:
        fp = lifecycle.fingerprint(
            settings.alerting.group_by,
            integration_id=event.integration_id,
            provider=event.provider,
            code=entry.base_code,
            account_id=event.account_id,
            auth_method=event.auth_method,
            labels=event.labels,
        )
    error = _cleaned(event.error)
    if memo is not None:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[key] = (event.integration_id, event.integration_name, event.provider, event.auth_method,
                     event.account_id, event.error, dict(event.labels), entry, fp, error)
    return Prepared(event, entry, _occurred(event, now), error, fp, body_sha256)


def _occurred(event: AuthErrorEvent, now: datetime) -> datetime:
    """When the event happened: its ``occurred_at``, but never later than now (its arrival). A sender
    whose clock runs ahead, or a typo of a year, must not date an alert or a resolution in the future:
    a resolution dated 9999 would make every later failure of the integration look older than it, so
    nothing would ever alert again."""
    if not event.occurred_at:
        return now
    occurred = as_utc(event.occurred_at)
    return occurred if occurred <= now else now


_MEMO_SIZE = 50_000
_memo: tuple[Any, Any, dict[tuple[Any, ...], tuple[Any, ...]]] | None = None


def _memo_of(settings: Settings, catalog: Catalog) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The memo of :func:`prepare` for these settings and this catalog (a new one when either changes)."""
    global _memo
    current = _memo
    if current is None or current[0]() is not settings or current[1]() is not catalog:
        current = _memo = (weakref.ref(settings), weakref.ref(catalog), {})
    return current[2]


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
    return ingest_groups([events], engine=engine, settings=settings, catalog=catalog, now=now,
                         body_sha256s=[body_sha256])[0]


def ingest_groups(
    groups: list[list[AuthErrorEvent]],
    *,
    engine: Engine,
    settings: Settings,
    catalog: Catalog,
    now: datetime,
    body_sha256s: list[str | None] | None = None,
    phases: dict[str, float] | None = None,
) -> list[IngestResult]:
    """Several requests' events in ONE transaction (group commit), each with its own result.

    ``phases`` receives the committed transaction's timings (:func:`alerts.fastsql.transaction`).

    A concurrent writer (another replica) may open the same alert or store the same ``event_id``
    between our read and our write; the unique indexes refuse the second one and the whole
    transaction is retried, now seeing the other writer's rows (so is a PostgreSQL deadlock).
    """
    shas = body_sha256s or [None] * len(groups)
    prepared = [
        [prepare(e, settings=settings, catalog=catalog, now=now, body_sha256=sha) for e in group]
        for group, sha in zip(groups, shas, strict=True)
    ]
    items = [(i, p) for i, group in enumerate(prepared) for p in group]
    for attempt in range(4):
        results = [IngestResult() for _ in groups]
        try:
            with transaction(engine, phases) as raw:
                batch = Batch(raw, settings=settings, catalog=catalog, now=now)
                batch.apply(items, results)
            wake = batch.due_now
            for r in results:
                r.wake = wake
            return results
        except (sa.exc.IntegrityError, sa.exc.OperationalError, ConcurrentOpen) as exc:
            if attempt == 3 or not _retryable(exc):
                raise
            log.info("ingest conflict with a concurrent writer; retrying", extra={"attempt": attempt + 1})
    raise AssertionError("unreachable")


def _retryable(exc: Exception) -> bool:
    """A conflict with a concurrent writer: a unique index refused our row, or (PostgreSQL) a deadlock
    between two replicas locking the same alerts, or a serialization failure."""
    if isinstance(exc, sa.exc.IntegrityError | ConcurrentOpen):
        return True
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in ("40P01", "40001")


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
    """Apply one event inside the caller's transaction (log tailers commit their offsets with it)."""
    p = prepare(event, settings=settings, catalog=catalog, now=now, body_sha256=body_sha256)
    Batch(Raw.of(session), settings=settings, catalog=catalog, now=now).apply([(0, p)], [result])


class AlertRecord:
    """An alert row as plain attributes (the batch path avoids ORM objects: they cost ~1 ms each)."""

    def __init__(self, data: dict[str, Any], *, new: bool = False) -> None:
        self.__dict__.update(data)
        self.new = new
        self.dirty = new  # to be written back
        self.full = new  # more changed than a plain repeat's columns

    def values(self, columns: list[str]) -> tuple[Any, ...]:
        return tuple([getattr(self, c) for c in columns])


def _column_default(column: Any) -> Any:
    default = column.default
    if default is None or not getattr(default, "is_scalar", False):
        return None
    return default.arg


_ALERT = Alert.__table__  # type: ignore[attr-defined]
_ALERT_COLUMNS = [c.name for c in _ALERT.columns]
_ALERT_TIMES = {c.name for c in _ALERT.columns if isinstance(c.type, UTCDateTime)}
_ALERT_JSON = {c.name for c in _ALERT.columns if isinstance(c.type, sa.JSON)}
_ALERT_BOOLS = {c.name for c in _ALERT.columns if isinstance(c.type, sa.Boolean)}
_ALERT_DEFAULTS = {c.name: _column_default(c) for c in _ALERT.columns}
# What an event can change on an existing alert. A plain repeat changes only the first four.
_BUMPED = ["count", "last_seen", "last_error", "integration_name"]
_MUTABLE = [*_BUMPED, "code", "severity", "state", "notify_seq", "last_notified_at", "resolved_at", "resolved_by"]
_NEW_ALERT_COLUMNS = [c for c in _ALERT_COLUMNS if c != "id"]
# The partial unique index refuses a second open alert; the writer that comes second sees it and retries.
_OPEN_CONFLICT = "ON CONFLICT (fingerprint) WHERE state != 'resolved' DO NOTHING"
_EVENT = Event.__table__  # type: ignore[attr-defined]
_EVENT_COLUMNS = ["event_id", "source", "integration_id", "status", "provider", "auth_method", "code", "error",
                  "occurred_at", "received_at", "alert_id", "body_sha256"]


# A repeat that owes nothing (Batch._count_quiet_repeats): the alert is open, no event is more severe
# than it (lifecycle.decide escalates only to a higher rank) and no reminder is due
# (lifecycle.reminder_due, ``{mark}`` = now - repeat_interval). ``v`` holds, per fingerprint: the number
# of events, the latest occurrence and its error, the last name given, the highest rank.
_QUIET = ["fingerprint", "n", "last_seen", "last_error", "integration_name", "rank"]
_QUIET_TYPES = {"n": sa.Integer(), "rank": sa.Integer()}
_QUIET_SET = (
    "count = alert.count + v.n, "
    "last_error = CASE WHEN v.last_seen >= alert.last_seen THEN v.last_error ELSE alert.last_error END, "
    "last_seen = CASE WHEN v.last_seen >= alert.last_seen THEN v.last_seen ELSE alert.last_seen END, "
    "integration_name = COALESCE(v.integration_name, alert.integration_name)"
)
_QUIET_WHERE = (
    "alert.fingerprint = v.fingerprint AND alert.state != 'resolved' AND v.rank <= CASE alert.severity "
    + " ".join(f"WHEN '{sev.value}' THEN {sev.rank}" for sev in Severity) + " END "
    "AND NOT (alert.state = 'firing' AND NOT alert.silenced AND alert.last_notified_at IS NOT NULL "
    "AND alert.last_notified_at <= {mark} "
    "AND (alert.first_notified_at IS NOT NULL OR alert.correlation_lead_id IS NOT NULL))"
)


class ConcurrentOpen(Exception):
    """Another writer opened an alert this batch meant to open: the batch is retried and counts it instead."""


class Batch:
    """Applies a list of prepared events with a handful of statements, whatever their number.

    State is read once (open alerts of the batch's fingerprints and integrations, their last
    resolutions, active silences); every event is applied in order, in memory, with the pure
    :func:`lifecycle.decide`; then the outcome is written back, each a multi-row statement: an UPDATE
    of the alerts that only counted a repeat, one of those that changed more, an INSERT … ON
    CONFLICT DO NOTHING RETURNING of new alerts, an INSERT of the events and one of outbox rows.
    """

    def __init__(self, raw: Raw, *, settings: Settings, catalog: Catalog, now: datetime) -> None:
        self.raw = raw
        self.settings = settings
        self.catalog = catalog
        self.now = now
        self.policy = policy_of(settings)
        self.open: dict[str, AlertRecord] = {}
        self.by_integration: dict[str, list[AlertRecord]] = {}
        self.last_resolved: dict[str, datetime] = {}
        self._silences: list[Any] | None = None  # read when the batch opens its first alert
        self.records: list[AlertRecord] = []
        self.notify: list[tuple[AlertRecord, Kind, int, datetime]] = []  # (alert, kind, seq, due)
        self.resolved: list[AlertRecord] = []
        self.succeeded: dict[str, datetime] = {}  # integration -> latest success in this batch
        self.leads: dict[str, AlertRecord] = {}  # correlation key -> the open alert whose message names the group

    # -- reading ------------------------------------------------------------------------------

    def _seen(self, items: list[tuple[int, Prepared]]) -> set[str]:
        """The batch's event ids that are stored already (replays)."""
        ids = [p.event.event_id for _, p in items if p.event.event_id]
        raw = self.raw
        seen: set[str] = set()
        for chunk in _chunks(ids, 500):
            cond, params = raw.in_("event_id", chunk)
            seen.update(r[0] for r in raw.select(f"SELECT event_id FROM {Event.__tablename__} WHERE {cond}", params))
        return seen

    def _load(self, items: list[tuple[int, Prepared]]) -> None:
        """The open alerts ``items`` can touch, their fingerprints' last resolutions, correlation leads."""
        if not items:
            return
        raw = self.raw
        fps = sorted({p.fingerprint for _, p in items if p.fingerprint})
        integrations = sorted({p.event.integration_id for _, p in items
                               if p.event.status == EventStatus.succeeded})
        # Raw SELECTs (fastsql): SQLAlchemy's statement building and per-row result processing were
        # a quarter of ingest's time.
        conds, params = [], []
        for chunk in _chunks(fps, 500):
            cond, values = raw.in_("fingerprint", chunk)
            conds.append(cond)
            params += values
        # A success resolves the integration's failures, not its token-expiry warning (a sync that works
        # today says nothing about a refresh token that expires next week).
        for chunk in _chunks(integrations, 500):
            cond, values = raw.in_("integration_id", chunk)
            conds.append(f"({cond} AND code != {{mark}})")
            params += [*values, TOKEN_EXPIRING]
        if conds:
            sql = (f"SELECT {', '.join(_ALERT_COLUMNS)} FROM {_ALERT.name} WHERE state != {{mark}} AND "
                   f"({' OR '.join(conds)}) ORDER BY id{'' if raw.sqlite else ' FOR UPDATE'}")
            for row in raw.select(sql, [AlertState.resolved.value, *params]):
                rec = AlertRecord(_alert_row(raw, row))
                self.records.append(rec)
                self.open[rec.fingerprint] = rec
                self.by_integration.setdefault(rec.integration_id, []).append(rec)
        # When an alert was last resolved matters only where none is open (a late event must not reopen it).
        for chunk in _chunks([fp for fp in fps if fp not in self.open], 500):
            cond, values = raw.in_("fingerprint", chunk)
            rows = raw.select(f"SELECT fingerprint, MAX(resolved_at) FROM {_ALERT.name} WHERE state = {{mark}} AND "
                              f"{cond} GROUP BY fingerprint", [AlertState.resolved.value, *values])
            self.last_resolved.update({fp: raw.datetime_of(at) for fp, at in rows if at is not None})
        keys = sorted({k for _, p in items if (k := correlation_key(p, self.settings))})
        for chunk in _chunks(keys, 500):
            cond, values = raw.in_("correlation_key", chunk)
            # Locked (PostgreSQL) like the alerts above: a lead owed a message is written back whole, and
            # unlocked it could undo a concurrent replica's count or resolution of it.
            for row in raw.select(f"SELECT {', '.join(_ALERT_COLUMNS)} FROM {_ALERT.name} WHERE {cond} "
                                  "AND correlation_lead_id IS NULL AND state != {mark} ORDER BY id"
                                  + ("" if raw.sqlite else " FOR UPDATE"),
                                  [*values, AlertState.resolved.value]):
                rec = self._known(_alert_row(raw, row))
                # the earliest lead still speaking (firing, not silenced): an acknowledged or silenced one
                # tells nobody of a new member, so each later failure would lead a group of its own
                held = self.leads.get(rec.correlation_key)
                if held is None or (not _speaks(held) and _speaks(rec)):
                    self.leads[rec.correlation_key] = rec

    def _known(self, row: dict[str, Any]) -> AlertRecord:
        """The record of an alert row, the same object if it was loaded already."""
        for rec in self.records:
            if rec.id == row["id"]:
                return rec
        rec = AlertRecord(row)
        self.records.append(rec)
        return rec

    # -- applying -----------------------------------------------------------------------------

    def _lock_correlation_keys(self, items: list[tuple[int, Prepared]]) -> None:
        """PostgreSQL: serialise the choice of a correlation group's lead across replicas. Two writers each
        opening the first alert of one key would both find no lead and both lead (two group messages).
        Taken first, in key order, before any row lock (so it adds no lock cycle); held to commit."""
        if self.raw.sqlite:
            return
        keys = sorted({k for _, p in items if (k := correlation_key(p, self.settings))})
        if keys:  # one statement, the locks taken in key order (by the sorted subquery)
            self.raw.select("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM "
                            "(SELECT k FROM unnest({mark}::text[]) AS k ORDER BY k) AS keys", [_Array(keys)])

    def apply(self, items: list[tuple[int, Prepared]], results: list[IngestResult]) -> None:
        self._lock_correlation_keys(items)
        seen = self._seen(items)
        accepted: list[tuple[int, Prepared]] = []
        for index, p in items:
            eid = p.event.event_id
            if eid and eid in seen:
                results[index].duplicates += 1
                continue
            if eid:
                seen.add(eid)
            results[index].accepted += 1
            accepted.append((index, p))
        quiet = self._count_quiet_repeats(accepted)
        self._load([(i, p) for i, p in accepted if p.fingerprint not in quiet])
        rows: list[tuple[Prepared, AlertRecord | int | None]] = []
        for index, p in accepted:
            touched: list[Any] = [quiet[p.fingerprint]] if p.fingerprint in quiet else self._apply_one(p)
            for alert in touched:
                results[index].add_alert_obj(alert)
            rows.append((p, touched[-1] if touched else None))
        self._write(rows, results)

    def _count_quiet_repeats(self, items: list[tuple[int, Prepared]]) -> dict[str, int]:
        """Count the failures that owe nobody a message, in one statement; their alert ids by fingerprint.

        Most events repeat a failure whose alert is open: no new alert, no more severe code, no reminder
        due. All :func:`lifecycle.decide` does with such an event is count it (and keep the latest
        error), in any order; so all of a fingerprint's repeats are applied at once, by one
        ``UPDATE … RETURNING`` whose WHERE holds exactly when ``decide`` would only count every one of
        them (``tests/test_quiet_repeats.py`` checks that against the full path). A fingerprint it does
        not return — no open alert, a more severe code, a reminder due — goes through the full path,
        as do integrations that also succeeded in this batch (there the order of events matters).
        """
        succeeded = {p.event.integration_id for _, p in items if p.event.status == EventStatus.succeeded}
        repeats: dict[str, list[Any]] = {}  # fingerprint -> [n, latest occurrence, its error, name, rank]
        for _, p in items:
            fp = p.fingerprint
            if fp is None or p.entry is None or p.event.integration_id in succeeded:
                continue
            r = repeats.get(fp)
            rank = p.entry.severity.rank
            if r is None:
                repeats[fp] = [1, p.occurred, p.error, p.event.integration_name or None, rank]
                continue
            r[0] += 1
            if p.occurred >= r[1]:  # as _apply_one: the last of the latest occurrences gives last_error
                r[1], r[2] = p.occurred, p.error
            if p.event.integration_name:
                r[3] = p.event.integration_name
            if rank > r[4]:
                r[4] = rank
        if not repeats:
            return {}
        # In fingerprint order: replicas updating overlapping alerts lock them in the same order (no deadlock).
        counted = self.raw.update_from(
            _ALERT, _QUIET, [(fp, *repeats[fp]) for fp in sorted(repeats)], set_=_QUIET_SET, where=_QUIET_WHERE,
            returning="alert.id, alert.fingerprint", params=[self.now - self.policy.repeat_interval],
            types=_QUIET_TYPES)
        return {fp: alert_id for alert_id, fp in counted}

    def _write(self, rows: list[tuple[Prepared, AlertRecord | int | None]], results: list[IngestResult]) -> None:
        raw = self.raw
        for alert in self.resolved:
            if not alert.new:  # only an alert that existed before this batch can have told anyone
                _resolve_notifications(raw, alert, now=self.now, settings=self.settings)
        changed = [r for r in self.records if r.dirty and not r.new]
        raw.update(_ALERT, _BUMPED, [(*r.values(_BUMPED), r.id) for r in changed if not r.full])
        raw.update(_ALERT, _MUTABLE, [(*r.values(_MUTABLE), r.id) for r in changed if r.full])
        # New alerts, leads first: a member stores its lead's id, which a new lead only has once inserted.
        new = [r for r in self.records if r.new]
        for group in ([r for r in new if getattr(r, "lead", None) is None],
                      [r for r in new if getattr(r, "lead", None) is not None]):
            for rec in group:
                if getattr(rec, "lead", None) is not None:
                    rec.correlation_lead_id = rec.lead.id
            self._insert_alerts(group)
        for r in results:
            r.resolve_ids()
        raw.insert(_EVENT, _EVENT_COLUMNS, [self._event_row(p, alert) for p, alert in rows])
        if self.succeeded:  # a successful sync used the refresh token: inactivity-based lifetimes restart
            raw.executemany(f"UPDATE {Token.__tablename__} SET last_used_at = {{mark}} WHERE integration_id = {{mark}} "
                            "AND (last_used_at IS NULL OR last_used_at < {mark})",
                            [(at, iid, at) for iid, at in self.succeeded.items()])
        notes = []
        for alert, kind, seq, due in self.notify:
            notes.extend(outbox.notification_row(alert_id=alert.id, kind=kind, seq=seq, target=t, due=due,
                                                 now=self.now) for t in _targets(alert, self.settings, self.catalog))
        outbox.insert_many(raw, notes)

    def _insert_alerts(self, group: list[AlertRecord]) -> None:
        """``INSERT … ON CONFLICT DO NOTHING RETURNING id, fingerprint``. A row that did not go in was
        opened by a concurrent writer first (:class:`ConcurrentOpen`: the batch is retried)."""
        first: dict[str, AlertRecord] = {}
        again: list[AlertRecord] = []  # opened, resolved and opened again within the batch: one at a time
        for rec in group:
            if rec.fingerprint in first:
                again.append(rec)
            else:
                first[rec.fingerprint] = rec
        for part in ([*first.values()], *([r] for r in again)):
            if not part:
                continue
            got = self.raw.insert(_ALERT, _NEW_ALERT_COLUMNS, [r.values(_NEW_ALERT_COLUMNS) for r in part],
                                  conflict=_OPEN_CONFLICT, returning="id, fingerprint")
            if len(got) != len(part):
                raise ConcurrentOpen
            by_fp = {r.fingerprint: r for r in part}
            for new_id, fp in got:
                by_fp[fp].id = new_id

    def _event_row(self, p: Prepared, alert: AlertRecord | int | None) -> tuple[Any, ...]:
        e = p.event
        alert_id = alert if alert is None or isinstance(alert, int) else alert.id
        return (e.event_id, e.source, e.integration_id, e.status.value, e.provider, e.auth_method,
                p.entry.code if p.entry else None, p.error, p.occurred, self.now, alert_id, p.body_sha256)

    def _apply_one(self, p: Prepared) -> list[AlertRecord]:
        event = p.event
        if event.status == EventStatus.succeeded:
            prev = self.succeeded.get(event.integration_id)
            self.succeeded[event.integration_id] = max(prev, p.occurred) if prev else p.occurred
            touched = []
            for alert in list(self.by_integration.get(event.integration_id, [])):
                if p.occurred < as_utc(alert.last_seen):
                    continue  # a success from before the latest failure says nothing about now (a late report)
                self._resolve(alert, at=p.occurred, by=f"{event.source} success event")
                touched.append(alert)
            return touched
        if p.entry is None or p.fingerprint is None:
            return []
        entry, fp = p.entry, p.fingerprint
        alert = self.open.get(fp)
        ev = EventView(status=EventStatus.failed, code=entry.code, severity=entry.severity, occurred_at=p.occurred)
        decision = lifecycle.decide(_view(alert, now=self.now) if alert else None, ev, now=self.now, policy=self.policy,
                                    last_resolved_at=None if alert else self.last_resolved.get(fp))
        if decision.action == Action.ignore:
            return []
        if decision.action == Action.open:
            alert = self._open(p)
            key = correlation_key(p, self.settings)
            lead = self.leads.get(key) if key else None
            if lead is not None and not _speaks(lead):
                lead = None  # nobody is being told about that group any more: this alert leads a new one
            if key and lead is not None and lead is not alert:
                # One cause, many integrations: this alert joins the lead's message instead of sending its own.
                alert.correlation_key = key
                alert.lead = lead
                # A member arriving once the group's message is out (or being sent) updates it, whenever
                # the member says it failed: an older occurred_at was joined silently and never announced.
                if lead.state == AlertState.firing and not lead.silenced and _told(lead, self.now) \
                        and not any(a is lead and k == Kind.updated for a, k, _, _ in self.notify):
                    # (not yet sent: it will name this member when it goes; several late members, one update)
                    self._owe(lead, Kind.updated, due=self.now)  # a late member: the group message is updated
                return [alert]
            if key:
                alert.correlation_key = key
                self.leads[key] = alert
            if not alert.silenced:
                wait = max(self.policy.group_wait, self.settings.correlation.window) if key else self.policy.group_wait
                self._owe(alert, Kind.firing, due=self.now + wait)
            return [alert]
        assert alert is not None
        alert.dirty = True
        alert.count += 1
        if event.integration_name and event.integration_name != alert.integration_name:
            alert.integration_name = event.integration_name
        if p.occurred >= as_utc(alert.last_seen):
            alert.last_seen = p.occurred
            alert.last_error = p.error
        if decision.escalate:
            alert.full = True
            alert.code = entry.code
            alert.severity = str(entry.severity)
            alert.last_error = p.error  # the error that says what the alert now is
            if alert.correlation_lead_id is not None:  # a member speaks in its lead's message: that is updated
                self._owe_group_update(self._lead_of(alert))
        if decision.notify is not None:
            self._owe(alert, decision.notify, due=self.now)
        return [alert]

    def _lead_of(self, member: AlertRecord) -> AlertRecord | None:
        """The lead of a member loaded in this batch (read when first needed: only an escalation needs it)."""
        for rec in self.records:
            if rec.id == member.correlation_lead_id:
                return rec
        # locked as _load locks what it writes back (PostgreSQL): owing it a message writes the whole row
        rows = self.raw.select(f"SELECT {', '.join(_ALERT_COLUMNS)} FROM {_ALERT.name} WHERE id = {{mark}}"
                               f"{'' if self.raw.sqlite else ' FOR UPDATE'}", [member.correlation_lead_id])
        return self._known(_alert_row(self.raw, rows[0])) if rows else None

    def _owe_group_update(self, lead: AlertRecord | None) -> None:
        """A member became more severe: its lead's message, once out, is updated (rendered when sent, it names
        the member's code); as for the lead's own escalation (lifecycle.decide), not while silenced."""
        if lead is None or lead.state == AlertState.resolved or lead.silenced or not _told(lead, self.now):
            return  # not yet out: it says what the group is when it goes; resolved: the heir's message will
        if not any(a is lead and k == Kind.updated for a, k, _, _ in self.notify):
            self._owe(lead, Kind.updated, due=self.now)

    @property
    def due_now(self) -> bool:
        """Whether this batch owes a message that is due already (a resolution may owe one too)."""
        return bool(self.resolved) or any(due <= self.now for _, _, _, due in self.notify)

    def _owe(self, alert: AlertRecord, kind: Kind, *, due: datetime) -> None:
        alert.dirty = alert.full = True
        alert.notify_seq += 1
        alert.last_notified_at = due
        self.notify.append((alert, kind, alert.notify_seq, due))

    def _open(self, p: Prepared) -> AlertRecord:
        event, entry, fp = p.event, p.entry, p.fingerprint
        assert entry is not None and fp is not None
        reg = self.settings.integration(event.integration_id)
        url, rejected = reauthorize_url(
            links=self.settings.links,
            integration_id=event.integration_id,
            provider=event.provider,
            account_id=event.account_id,
            candidates=(event.reauthorize_url,), configured=reg.reauthorize_url if reg else None,
            source=event.source,
        )
        for bad in rejected:
            log.warning("reauthorize link dropped", extra={
                "integration_id": event.integration_id, "url": redact(bad)[:200],
                "reason": dropped_because(bad, links=self.settings.links, source=event.source)})
        data = dict(_ALERT_DEFAULTS)
        data.update(
            id=None,
            fingerprint=fp,
            integration_id=event.integration_id,
            integration_name=event.integration_name,
            provider=event.provider,
            auth_method=event.auth_method,
            account_id=event.account_id,
            authorized_by=event.authorized_by,  # cleaned by prepare
            code=entry.code,
            severity=str(entry.severity),
            state=AlertState.firing.value,
            count=1,
            first_seen=p.occurred,
            last_seen=p.occurred,
            last_error=p.error,
            labels=clean_labels(event.labels),
            reauthorize_url=url,
            silenced=False,
            notify_seq=0,
        )
        alert = AlertRecord(data, new=True)
        if self._silences is None:
            self._silences = silences.active_raw(self.raw, now=self.now)
        alert.silenced = silences.is_silenced(alert, self._silences)  # type: ignore[arg-type]
        self.records.append(alert)
        self.open[fp] = alert
        self.by_integration.setdefault(alert.integration_id, []).append(alert)
        return alert

    def _resolve(self, alert: AlertRecord, *, at: datetime, by: str) -> None:
        alert.dirty = alert.full = True
        if alert.correlation_key and self.leads.get(alert.correlation_key) is alert:
            del self.leads[alert.correlation_key]
        _mark_resolved(alert, now=self.now, at=at, by=by)  # type: ignore[arg-type]
        self.open.pop(alert.fingerprint, None)
        self.by_integration[alert.integration_id].remove(alert)
        self.last_resolved[alert.fingerprint] = as_utc(alert.resolved_at)
        # A message owed in this very batch was never sent: nobody needs telling it is fixed.
        self.notify = [n for n in self.notify if n[0] is not alert]
        self.resolved.append(alert)


def correlation_key(p: Prepared, settings: Settings) -> str | None:
    """What several failing integrations share, if anything: the user who authorized them or their
    account (or, opt-in, the provider), plus the base code. ``None`` when correlation does not apply."""
    cfg = settings.correlation
    if not cfg.enabled or p.entry is None or p.event.status != EventStatus.failed:
        return None
    for name in cfg.keys:
        value = getattr(p.event, name, None)
        if value:
            return f"{name}={(sanitize(str(value), limit=300) or '').strip().lower()}|{p.entry.base_code}"
    if cfg.provider_wide and p.event.provider:
        return f"provider={p.event.provider}|{p.entry.base_code}"
    return None


def _alert_row(raw: Raw, row: tuple[Any, ...]) -> dict[str, Any]:
    """A raw alert row as the ORM would read it (aware datetimes, booleans, parsed JSON)."""
    data = dict(zip(_ALERT_COLUMNS, row, strict=True))
    for name in _ALERT_TIMES:
        data[name] = raw.datetime_of(data[name])
    for name in _ALERT_JSON:
        data[name] = raw.json_of(data[name])
    for name in _ALERT_BOOLS:
        data[name] = bool(data[name])
    return data


def _targets(alert: Any, settings: Settings, catalog: Catalog) -> list[Target]:
    entry = catalog.get(alert.code)
    owner = settings.integration(alert.integration_id)
    return targets_for(facts_of(alert, base_code=entry.base_code if entry else None), settings,
                       owner=owner.owner if owner else None)


def _chunks(values: list[Any], size: int) -> list[list[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


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
    _mark_resolved(alert, now=now, at=at, by=by)
    session.add(alert)
    session.flush()
    _resolve_notifications(Raw.of(session), alert, now=now, settings=settings)
    session.add(alert)  # its notify_seq, when a resolved message is owed


def _mark_resolved(alert: Alert, *, now: datetime, at: datetime | None, by: str) -> None:
    alert.state = AlertState.resolved
    alert.resolved_at = max(as_utc(at or now), as_utc(alert.first_seen))
    alert.resolved_by = by


def _resolve_notifications(raw: Raw, alert: Any, *, now: datetime, settings: Settings) -> None:
    """Cancel the alert's messages never tried; owe a ``resolved`` message to whoever was told (or is
    about to be) that it fired. ``alert`` is an :class:`Alert` or an :class:`AlertRecord`."""
    table = Notification.__tablename__
    # Messages never tried are cancelled, and so are reminders and updates not delivered (they would
    # arrive after the RESOLVED). A FIRING already tried may have arrived (Slack answered 5xx after
    # posting, SMTP dropped after DATA): it counts as told, and the RESOLVED owed to its target waits
    # for it (worker.prepare) — so it never arrives after the RESOLVED (found by a lifecycle review).
    raw.executemany(f"UPDATE {table} SET status = {{mark}}, last_error = {{mark}} WHERE alert_id = {{mark}} "
                    f"AND status IN ({{mark}}, {{mark}}) AND (lease_until IS NULL OR lease_until < {{mark}}) "
                    f"AND (attempts = 0 OR kind != {{mark}})",
                    [(DeliveryStatus.cancelled.value, "alert resolved before it was delivered", alert.id,
                      DeliveryStatus.pending.value, DeliveryStatus.failed.value, now, Kind.firing.value)])
    told = raw.select(
        f"SELECT receiver, channel, target FROM {table} WHERE alert_id = {{mark}} AND kind = {{mark}} "
        f"AND status IN ({{mark}}, {{mark}}, {{mark}}) ORDER BY id",
        [alert.id, Kind.firing.value, DeliveryStatus.sent.value, DeliveryStatus.failed.value,
         DeliveryStatus.pending.value])
    if alert.correlation_lead_id is not None:
        _owe_group_edit(raw, alert, now=now)
    if not settings.alerting.send_resolved or alert.silenced or not told:  # silenced: no messages at all
        return
    targets: dict[tuple[str, str], Target] = {}
    for receiver, channel, target in told:
        targets.setdefault((receiver, channel), Target(receiver, channel, dict(raw.json_of(target) or {})))
    alert.notify_seq += 1
    alert.last_notified_at = now
    outbox.insert_many(raw, [outbox.notification_row(alert_id=alert.id, kind=Kind.resolved, seq=alert.notify_seq,
                                                     target=t, due=now, now=now) for t in targets.values()])


def _owe_group_edit(raw: Raw, member: Any, *, now: datetime) -> None:
    """A member of a correlated group is fixed: its lead's Slack posts, which name every member, are edited
    in place (rendered when sent, so they show the group as it is then: "— fixed", "2 of 3 still failing").
    Nothing new is posted, and emails, which cannot be edited, wait for the lead's own resolution."""
    table = Notification.__tablename__
    posts = raw.select(
        f"SELECT receiver, target, external_ref FROM {table} WHERE alert_id = {{mark}} AND kind = {{mark}} "
        f"AND channel = {{mark}} AND status = {{mark}} AND external_ref IS NOT NULL ORDER BY id",
        [member.correlation_lead_id, Kind.firing.value, "slack", DeliveryStatus.sent.value])
    rows = [outbox.notification_row(
        alert_id=member.correlation_lead_id, kind=Kind.action, seq=f"member-fixed:{member.id}",
        target=Target(receiver, "slack", {**dict(raw.json_of(target) or {}), "update_ref": ref}), due=now, now=now)
        for receiver, target, ref in posts]
    if rows:
        outbox.insert_many(raw, rows)


def acknowledge_alert(session: Session, alert: Alert, *, now: datetime, by: str) -> bool:
    if alert.state != AlertState.firing:
        return False
    alert.state = AlertState.acknowledged
    alert.acknowledged_at = now
    alert.acknowledged_by = clean_field(by, 200)
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
                Alert.first_notified_at.is_not(None),  # reminders follow a first message that arrived
                Alert.code != TOKEN_EXPIRING,  # expiry warnings speak at their lead times only
            ).order_by(Alert.id).limit(500)
            # Locked as ingest locks them (in id order): a batch counting into the same alert must not
            # write back a notify_seq from before this reminder (PostgreSQL; SQLite has one writer).
            .with_for_update()
        ).all()
        for alert in due:
            if lifecycle.reminder_due(_view(alert), now=now, policy=policy):
                _notify(session, alert, Kind.reminder, due=now, now=now, settings=settings, catalog=catalog)
                count += 1
    return count


def adopt_orphaned_members(engine: Engine, *, settings: Settings, catalog: Catalog, now: datetime) -> int:
    """Give a correlated group a new lead when its lead is resolved while members still fail, or is
    silenced before its first message went out (that message is cancelled: it named the members).

    A member sends nothing of its own (it is named in its lead's message) and reminders follow
    messages, so without this a member still broken after its lead was fixed would never be heard of
    again. The earliest open member becomes the group's lead and speaks — its first message, naming
    the members still failing — and the other open members join it. Returns how many groups changed."""
    lead = sa.orm.aliased(Alert)
    with session_scope(engine) as session:
        orphans = session.exec(
            select(Alert).join(lead, Alert.correlation_lead_id == lead.id)
            .where(Alert.state != AlertState.resolved.value,
                   sa.or_(lead.state == AlertState.resolved.value,
                          sa.and_(lead.silenced == sa.true(), lead.first_notified_at.is_(None))))
            .order_by(Alert.id)  # locked as ingest locks them, in id order (PostgreSQL)
            .with_for_update(of=Alert)
        ).all()
        groups: dict[int, list[Alert]] = {}
        for alert in orphans:
            groups.setdefault(alert.correlation_lead_id, []).append(alert)  # type: ignore[arg-type]
        changed = 0
        for lead_id, members in groups.items():
            members.sort(key=lambda a: (as_utc(a.first_seen), a.id))
            # the earliest that would speak (firing, not silenced); an acknowledged or silenced heir would
            # keep its firing members quiet
            speaking = [a for a in members if a.state == AlertState.firing and not a.silenced]
            if not speaking and session.get(Alert, lead_id).state != AlertState.resolved:  # type: ignore[union-attr]
                continue  # a silenced lead's group with nobody to speak: it speaks when its silence ends
            changed += 1
            heir = speaking[0] if speaking else members[0]
            rest = [a for a in members if a is not heir]
            heir.correlation_lead_id = None
            session.add(heir)
            for member in rest:
                member.correlation_lead_id = heir.id
                session.add(member)
            if heir.state == AlertState.firing and not heir.silenced:
                kind = Kind.reminder if heir.first_notified_at else Kind.firing
                _notify(session, heir, kind, due=now, now=now, settings=settings, catalog=catalog)
            log.info("correlated group has a new lead", extra={"alert_id": heir.id, "members": len(rest)})
        return changed


# -- helpers ----------------------------------------------------------------------------------


def _view(alert: Alert, *, now: datetime | None = None) -> AlertView:
    return AlertView(
        state=AlertState(alert.state),
        severity=Severity(alert.severity),
        code=alert.code,
        silenced=alert.silenced,
        last_notified_at=alert.last_notified_at,
        told=_told(alert, now),
        delivered=alert.first_notified_at is not None or alert.correlation_lead_id is not None,
    )


def _speaks(alert: Any) -> bool:
    """Whether an alert is heard from (firing, not silenced): only such a lead can announce its group."""
    return alert.state == AlertState.firing and not alert.silenced


def _told(alert: Any, now: datetime | None) -> bool:
    """Whether the alert's first message went out or may be going out: sent (``first_notified_at``), or
    due already — the worker may have rendered it (a payload is kept from its first attempt, retries
    and all), so only a message still waiting out ``group_wait`` can still change what it will say."""
    if alert.first_notified_at is not None or now is None:
        return True
    return alert.last_notified_at is not None and as_utc(alert.last_notified_at) <= now


def _notify(session: Session, alert: Alert, kind: Kind, *, due: datetime, now: datetime,
            settings: Settings, catalog: Catalog) -> None:
    alert.notify_seq += 1
    alert.last_notified_at = due
    session.add(alert)
    session.flush()
    _enqueue(session, alert, kind, seq=alert.notify_seq, due=due, now=now, settings=settings, catalog=catalog)


def _enqueue(session: Session, alert: Alert, kind: Kind, *, seq: int, due: datetime, now: datetime,
             settings: Settings, catalog: Catalog) -> None:
    outbox.enqueue(session, alert_id=alert.id, kind=kind, seq=seq, targets=_targets(alert, settings, catalog),
                   due=due, now=now)


def is_silenced(session: Session, alert: Alert, *, now: datetime) -> bool:
    return silences.is_silenced(alert, silences.active(session, now=now))


def _firing_on_its_way(session: Session, alert_id: int | None) -> bool:
    """Whether the alert's first message is still to be delivered (pending or being retried)."""
    return session.exec(select(Notification.id).where(
        Notification.alert_id == alert_id, Notification.kind == Kind.firing.value,
        Notification.status.in_([DeliveryStatus.pending.value, DeliveryStatus.failed.value])).limit(1)).first() is not None


def refresh_silences(engine: Engine, *, settings: Settings, catalog: Catalog, now: datetime) -> int:
    """Recompute ``silenced`` on open alerts; one message for each firing alert whose silence ended.

    Returns how many alerts changed. New silences take effect at once (their alerts stop sending);
    an alert that comes out of a silence still firing gets one message: its first if it never had one.
    """
    changed = 0
    with session_scope(engine) as session:
        current = silences.active(session, now=now)
        if not current:
            # The common case: nothing is silenced now; only alerts still flagged need a look.
            open_alerts = session.exec(select(Alert).where(
                Alert.state != AlertState.resolved.value, Alert.silenced == sa.true())).all()
        else:
            open_alerts = session.exec(select(Alert).where(Alert.state != AlertState.resolved.value)).all()
        flip = [a.id for a in open_alerts if silences.is_silenced(a, current) != a.silenced]
        if not flip:
            return 0
        # Those alerts again, locked as ingest locks them (in id order), and decided on what is current:
        # a batch counting into one of them must not write back a notify_seq from before this message
        # (PostgreSQL; SQLite has one writer). Only the few that change are locked, never all open alerts.
        session.expire_all()
        locked = [a for chunk in _chunks(flip, 500)  # bounded statements, however many a silence flips
                  for a in session.exec(select(Alert).where(Alert.id.in_(chunk), Alert.state != AlertState.resolved.value)
                                        .order_by(Alert.id).with_for_update()).all()]
        for alert in locked:
            now_silenced = silences.is_silenced(alert, current)
            if now_silenced == alert.silenced:
                continue
            changed += 1
            alert.silenced = now_silenced
            session.add(alert)
            if not now_silenced and alert.state == AlertState.firing and alert.correlation_lead_id is None \
                    and not _firing_on_its_way(session, alert.id):
                # (a group's member is named in its lead's message and speaks only as a lead; a first message
                # still waiting out group_wait goes as it is — found by a lifecycle review: both sent twice)
                kind = Kind.reminder if alert.first_notified_at else Kind.firing
                _notify(session, alert, kind, due=now, now=now, settings=settings, catalog=catalog)
    return changed
