"""The Stitch poller: read the last extraction of every Stitch source and ingest what is new.

Composes :mod:`alerts.sources.stitch` (client and pure mappings) with the database and
:func:`alerts.ingest.ingest`, like the delivery worker composes the outbox and the channels.

One poll (:meth:`StitchPoller.poll_once`, given ``now``):

1. ``GET /v4/{client_id}/extractions`` (every page).
2. Keep the finished extractions not seen before: a failed one (discovery or tap exited non-zero)
   whose event ``stitch-<job_name>`` is not stored yet; a successful one only when its source has an
   open alert last seen before the extraction completed (so a success resolves, and nothing else is
   stored for the hundreds of healthy syncs a day).
3. If there are any, ``GET /v4/sources`` for names, types (→ provider) and OAuth (→ auth method).
4. A failed extraction whose description is too short to classify (``Tap failed with code 1``) has its
   log read and classified line by line with the log scanner (:mod:`alerts.scan`).
5. Ingest everything in one transaction. The events table's unique ``event_id`` makes each extraction
   count once, across restarts and replicas.

A ``401``/``403`` opens one alert on the ``stitch`` integration ("create a new Connect API token"),
only when none is open; the first poll that gets through again resolves it. A ``429`` sets
``not_before = now + Retry-After``: no request is made before it (the run loop sleeps until then).
Anything else (5xx, timeouts) is logged and retried on the next poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import select

from alerts.catalog import Catalog
from alerts.config import Settings
from alerts.ingest import IngestResult, ingest
from alerts.models import AlertState, AuthErrorEvent, as_utc, utcnow
from alerts.scan import LineScanner, ScanPlan, build_plan
from alerts.sources.logs import LineRules
from alerts.sources.stitch import (
    STITCH_INTEGRATION,
    Extraction,
    NotFound,
    RateLimited,
    Refused,
    StitchClient,
    StitchError,
    Unauthorized,
    error_lines,
    event_id_for,
    failure_event,
    needs_log,
    provider_of,
    sources_by_id,
    strip_log_prefix,
    success_event,
    token_event,
    token_ok_event,
)
from alerts.storage import Alert, Event, session_scope

log = logging.getLogger("alerts.stitch")

Clock = Callable[[], datetime]


@dataclass
class PollResult:
    """What one poll did. ``outcome``: ``ok``, ``waiting`` (rate limited, no request made),
    ``rate_limited``, ``unauthorized`` or ``unavailable``."""

    outcome: str
    extractions: int = 0
    new: int = 0
    logs_fetched: int = 0
    accepted: int = 0
    duplicates: int = 0
    alert_ids: list[int] = field(default_factory=list)

    def add(self, r: IngestResult) -> None:
        self.accepted += r.accepted
        self.duplicates += r.duplicates
        self.alert_ids.extend(i for i in r.alert_ids if i not in self.alert_ids)


class StitchPoller:
    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        catalog: Catalog,
        clock: Clock = utcnow,
        client: StitchClient | None = None,
    ) -> None:
        conf = settings.stitch
        if not conf.configured or conf.client_id is None or conf.token is None:
            raise ValueError("[stitch] needs client_id and token")
        self.engine = engine
        self.settings = settings
        self.catalog = catalog
        self.clock = clock
        self.client_id: int = conf.client_id
        self.client = client or StitchClient(
            base_url=conf.base_url,
            token=conf.token.get_secret_value(),
            client_id=conf.client_id,
            timeout=conf.timeout.total_seconds(),
            allow_loopback=conf.allow_loopback_base_url,
            clock=clock,
        )
        self.not_before: datetime | None = None
        self._plans: dict[tuple[str | None, str | None], ScanPlan] = {}
        self.last_poll: datetime | None = None
        self.last_outcome: str | None = None

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll now, then every ``poll_interval`` (longer while Stitch asks us to wait). Cancel to stop."""
        while True:
            try:
                await self.poll_once(self.clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stitch poll failed")
            await asyncio.sleep(self.next_delay(self.clock()).total_seconds())

    def next_delay(self, now: datetime) -> timedelta:
        delay = self.settings.stitch.poll_interval
        if self.not_before is not None and self.not_before - now > delay:
            delay = self.not_before - now
        return delay

    # -- one poll -------------------------------------------------------------------------------

    async def poll_once(self, now: datetime) -> PollResult:
        result = await self._poll(now)
        self.last_poll = now
        self.last_outcome = result.outcome
        return result

    async def _poll(self, now: datetime) -> PollResult:
        if self.not_before is not None and now < self.not_before:
            return PollResult("waiting")
        try:
            extractions = await self.client.list_extractions()
        except StitchError as exc:
            return await self._refused(exc, now, PollResult("ok"))
        self.not_before = None
        result = PollResult("ok", extractions=len(extractions))
        await asyncio.to_thread(self._token_accepted, now, result)
        todo = await asyncio.to_thread(self._unprocessed, extractions)
        result.new = len(todo)
        if not todo:
            return result
        try:
            sources = sources_by_id(await self.client.list_sources())
        except StitchError as exc:
            return await self._refused(exc, now, result)

        events: list[AuthErrorEvent] = []
        stopped: StitchError | None = None
        for extraction in todo:
            source = sources.get(extraction.source_id)
            if extraction.succeeded:
                events.append(success_event(extraction, source, client_id=self.client_id))
                continue
            try:
                error = await self._error_text(extraction, source, result)
            except (RateLimited, Unauthorized) as exc:
                stopped = exc
                break
            except StitchError as exc:  # this log later; the other extractions now
                log.warning("stitch extraction log unavailable; will retry", extra={"job_name": extraction.job_name,
                                                                                    "error": str(exc)})
                continue
            events.append(failure_event(extraction, source, client_id=self.client_id,
                                        app_url=self.settings.stitch.app_url, catalog=self.catalog, error=error))
        if events:
            result.add(await asyncio.to_thread(
                ingest, events, engine=self.engine, settings=self.settings, catalog=self.catalog, now=now
            ))
            log.info("stitch extractions ingested", extra={"accepted": result.accepted,
                                                            "duplicates": result.duplicates,
                                                            "alert_ids": result.alert_ids})
        if stopped is not None:
            await self._refused(stopped, now, result)
        return result

    async def _error_text(self, extraction: Extraction, source, result: PollResult) -> str | None:
        """The error to ingest: the description, or the log's authentication error when the description
        is too short to say anything."""
        provider = provider_of(source.type if source else None, self.catalog) or provider_of(
            extraction.source_type, self.catalog)
        auth_method = source.auth_method if source else None
        if not self.settings.stitch.fetch_logs or not needs_log(extraction, self.catalog, provider=provider,
                                                                 auth_method=auth_method):
            return None
        try:
            text = await self.client.extraction_log(extraction.job_name)
        except Refused as exc:  # R3.6: a redirect we do not follow is said once per extraction
            log.warning("stitch extraction log refused", extra={"job_name": extraction.job_name, "error": str(exc)})
            return None
        except NotFound:
            return None  # logs are kept for a while only: the description is all there is
        result.logs_fetched += 1
        line = self._auth_line(text, provider=provider, auth_method=auth_method)
        if line is None:  # no authentication failure: the last error line says what went wrong
            lines = error_lines(text)
            if not lines:
                return None
            line = lines[-1]
        description = (extraction.description or "").strip()
        return f"{description}: {line}" if description else line

    def _auth_line(self, text: str, *, provider: str | None, auth_method: str | None) -> str | None:
        """The first line of an extraction log that the log scanner finds an authentication failure in."""
        key = (provider, auth_method)
        plan = self._plans.get(key)
        if plan is None:
            rules = LineRules.default("text", integration_id=STITCH_INTEGRATION, provider=provider,
                                      auth_method=auth_method)
            plan = self._plans[key] = build_plan(self.catalog, rules, engine="re")
        scanner = LineScanner(plan)
        findings = scanner.feed(text.encode("utf-8", "replace")) + scanner.finish()
        if not findings:
            return None
        return strip_log_prefix(findings[0].text)

    async def _refused(self, exc: StitchError, now: datetime, result: PollResult) -> PollResult:
        """Stitch said no: wait (429), report the token (401/403), or try again next poll (the rest)."""
        if isinstance(exc, RateLimited):
            self.not_before = now + exc.retry_after
            log.warning("stitch rate limited", extra={"retry_after_s": int(exc.retry_after.total_seconds())})
            result.outcome = "rate_limited"
        elif isinstance(exc, Unauthorized):
            result.outcome = "unauthorized"
            await asyncio.to_thread(self._token_refused, exc.status, now, result)
        else:
            log.warning("stitch connect api unavailable; will retry next poll", extra={"error": str(exc)})
            result.outcome = "unavailable"
        return result

    # -- database (run in a thread) -------------------------------------------------------------

    def _open_stitch_alerts(self, session) -> list[Alert]:
        return list(session.exec(
            select(Alert).where(Alert.integration_id == STITCH_INTEGRATION,
                                Alert.state != AlertState.resolved.value)
        ).all())

    def _token_refused(self, status: int, now: datetime, result: PollResult) -> None:
        """One alert while the token is refused: nothing more while one is open."""
        with session_scope(self.engine) as session:
            if self._open_stitch_alerts(session):
                return
        log.error("stitch connect api refused the token: create a new Connect API token",
                  extra={"status": status, "client_id": self.client_id})
        result.add(ingest([token_event(client_id=self.client_id, status=status, now=now)], engine=self.engine,
                          settings=self.settings, catalog=self.catalog, now=now))

    def _token_accepted(self, now: datetime, result: PollResult) -> None:
        with session_scope(self.engine) as session:
            if not any(a.code == "invalid_api_key" for a in self._open_stitch_alerts(session)):
                return
        log.info("stitch connect api accepts the token again", extra={"client_id": self.client_id})
        result.add(ingest([token_ok_event(client_id=self.client_id, now=now)], engine=self.engine,
                          settings=self.settings, catalog=self.catalog, now=now))

    def _unprocessed(self, extractions: list[Extraction]) -> list[Extraction]:
        """Failed extractions not ingested yet; successes that would resolve an older open alert."""
        finished = {event_id_for(x.job_name): x for x in extractions if x.failed or x.succeeded}
        if not finished:
            return []
        ids = list(finished)
        sources = sorted({x.source_id for x in finished.values() if x.succeeded})
        seen: set[str] = set()
        open_until: dict[str, datetime] = {}
        with session_scope(self.engine) as session:
            for i in range(0, len(ids), 500):
                seen.update(e for e in session.exec(select(Event.event_id).where(Event.event_id.in_(ids[i:i + 500])))
                            if e)
            for i in range(0, len(sources), 500):
                rows = session.exec(
                    select(Alert.integration_id, sa.func.max(Alert.last_seen))
                    .where(Alert.integration_id.in_(sources[i:i + 500]), Alert.state != AlertState.resolved.value)
                    .group_by(Alert.integration_id)
                ).all()
                open_until.update({iid: as_utc(last) for iid, last in rows if last is not None})
        out = []
        for event_id, x in finished.items():
            if event_id in seen:
                continue
            if x.succeeded:
                last = open_until.get(x.source_id)
                if last is None or x.completion_time is None or x.completion_time <= last:
                    continue
            out.append(x)
        return out
