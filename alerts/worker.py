"""The delivery worker: claim due outbox rows, render, send, record the outcome; and owe reminders.

One generic loop; the channel that knows the protocol decides whether a failure is retryable
(:class:`~alerts.channels.DeliveryError`). Nothing sleeps holding a message: a failed send sets
``next_attempt_at`` on its row, so a restart loses no retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlmodel import select

from alerts import crashpoints, digest, ingest, outbox, pacing, post_edits, storage, tokens
from alerts.catalog import Catalog
from alerts.channels import Channel, DeliveryError, Outgoing
from alerts.channels.email import EmailChannel, PartialDelivery
from alerts.channels.filesink import FileSink
from alerts.channels.mime import message_domain
from alerts.channels.slack import SlackChannel
from alerts.config import Settings
from alerts.fivetran_links import FreshLinks, substitute
from alerts.models import AlertState, DeliveryStatus, Kind, as_utc, utcnow
from alerts.redact import redact
from alerts.render import Rendered, Renderer, alert_data, provider_label, summary_data, with_delivery_note
from alerts.storage import Alert, DatabaseClock, Notification, session_scope

log = logging.getLogger("alerts.worker")

Clock = Callable[[], datetime]
# How a correlation key reads in a message: "3 integrations authorized by alice@example.com"
CORRELATION_WORDS = {"authorized_by": "authorized by", "account_id": "in account", "provider": "at"}
STILL_FAILING_SHOWN = 25  # a resolved group member's message names at most this many still failing
CLOCK_TOLERANCE = 2.0  # seconds between this replica's idea of the database's clock and a claim's now()
# What several integrations failing together with one code most likely means (issue: one cause, many alerts).
LIKELY_CAUSE = {
    "invalid_grant": "the app was likely de-authorized or the user's password changed",
    "refresh_token_expired": "the user's refresh tokens likely expired together (a lifetime or security policy)",
    "insufficient_permissions": "the user's role or the app's permissions were likely changed",
    "access_token_expired": "the user's access likely lapsed (de-authorization, password change or policy)",
    "invalid_api_key": "the account's API key was likely rotated or revoked",
    "invalid_credentials": "the shared login's password was likely changed or the account locked",
}


def build_channels(settings: Settings, *, clock: Clock = utcnow) -> dict[str, Channel]:
    channels: dict[str, Channel] = {"file": FileSink(settings.outbox.dir, from_addr=settings.email.from_addr)}
    if settings.slack.configured:
        channels["slack"] = SlackChannel(settings.slack, clock=clock)
    if settings.email.configured:
        channels["email"] = EmailChannel(settings.email, clock=clock)
    return channels


def _roots_a_thread(row: Notification) -> bool:
    """A Slack firing message: the root that the alert's later messages reply to."""
    return row.channel == "slack" and row.kind == Kind.firing and row.alert_id is not None


class Worker:
    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        catalog: Catalog,
        renderer: Renderer | None = None,
        channels: dict[str, Channel] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.catalog = catalog
        self.renderer = renderer or Renderer(user_dir=settings.templates.dir, interactive=settings.slack.interactive)
        self.channels = channels if channels is not None else build_channels(settings, clock=clock)
        self.clock = clock
        self.wake = asyncio.Event()
        self.policy = outbox.RetryPolicy(
            max_attempts=settings.outbox.max_attempts,
            max_age=settings.outbox.max_age,
            base=settings.outbox.backoff_base,
            cap=settings.outbox.backoff_cap,
        )
        self.last_tick: datetime | None = None
        self.failing_since: datetime | None = None  # ticks fail since then (the database, mostly): /readyz
        self.failure: str | None = None
        self._logged_failure_at = 0.0
        self._repeats = 0
        # Outcomes of sends the database could not take when they ended: (deadline, write, row id, outcome)
        self._unrecorded: list[tuple[float, Callable[[], Any], int, str]] = []
        self.on_sent: Callable[[Notification, float], None] | None = None  # (row, seconds since enqueued)
        self.domain = message_domain(settings.email.from_addr)
        self.fresh_links = FreshLinks(engine=engine, settings=settings, clock=clock)

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                # A wake-up (new events) only delivers; the periodic work runs once per poll interval.
                due = self.last_tick is None or self.clock() - self.last_tick >= self.settings.outbox.poll_interval
                await (self.tick() if due else self.deliver_due())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._tick_failed(exc)
            else:
                self.failing_since = self.failure = None
            try:
                await asyncio.wait_for(self.wake.wait(), self.settings.outbox.poll_interval.total_seconds())
            except TimeoutError:
                pass
            self.wake.clear()

    def _tick_failed(self, exc: BaseException) -> None:
        """Remember since when ticks fail (``/readyz`` says so) and log it: with its traceback when the
        error is new or a minute has passed, else one line — not a stack trace every second of an outage."""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = redact(f"{type(exc).__name__}: {first}")[:300]
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = self.clock()
        if text != self.failure or now - self._logged_failure_at >= 60:
            log.exception("delivery tick failed", extra={"error": text, "repeats": self._repeats})
            self._logged_failure_at, self._repeats = now, 0
        else:
            self._repeats += 1  # said once a minute, with how often it happened in between
        self.failure = text

    async def tick(self) -> int:
        """Silences, orphaned group members, due reminders and digests, then deliver every due row; return how
        many rows were handled.

        The loop runs this once per ``poll_interval``; between those, new events only trigger delivery.
        """
        now = self.clock()
        self.last_tick = now
        await asyncio.to_thread(
            ingest.refresh_silences, self.engine, settings=self.settings, catalog=self.catalog, now=now
        )
        await asyncio.to_thread(
            ingest.adopt_orphaned_members, self.engine, settings=self.settings, catalog=self.catalog, now=now
        )
        await asyncio.to_thread(
            ingest.enqueue_reminders, self.engine, settings=self.settings, catalog=self.catalog, now=now
        )
        await asyncio.to_thread(tokens.check, self.engine, settings=self.settings, catalog=self.catalog, now=now)
        await self.prune_events(now)
        if self.settings.digests:
            await asyncio.to_thread(
                digest.tick, self.engine, settings=self.settings, catalog=self.catalog, renderer=self.renderer,
                now=now,
            )
        return await self.deliver_due()

    async def prune_events(self, now: datetime, *, most: int = 200_000) -> int:
        """Delete stored events older than ``[database] keep_events`` (R4.5), a batch per transaction so
        that ingest waits at most one batch; at most ``most`` per tick (a long backlog takes a few ticks)."""
        before = now - self.settings.database.keep_events
        total = 0
        while total < most:
            n = await asyncio.to_thread(storage.prune_events, self.engine, before=before)
            total += n
            if n < storage.PRUNE_BATCH:
                break
        if total:
            log.info("old events deleted", extra={"events": total, "before": before.isoformat()})
        return total

    async def deliver_due(self) -> int:
        """Claim and deliver due outbox rows until none is left; return how many were handled.

        Up to ``[outbox] batch`` sends are in flight at once, and a claim tops them up as each one ends
        (or every half second): a slow peer — an SMTP server taking its time — holds up only its own
        sends, not the Slack message of an event that came in meanwhile. A Slack row of an alert whose
        first Slack message is still being sent here waits for it (a thread reply needs its root)."""
        handled = 0
        inflight: dict[asyncio.Task[None], Notification] = {}
        try:
            while True:
                room = self.settings.outbox.batch - len(inflight)
                claimed = False
                if room > 0:
                    if self._unrecorded:
                        await self._record_kept()  # before a claim could hand one of those rows out again
                    claimed_at = time.monotonic()
                    rows = await asyncio.to_thread(
                        # the service's clock is the database's: the claim reads it in SQL (R2.2)
                        outbox.claim, self.engine, now=None if isinstance(self.clock, DatabaseClock) else self.clock(),
                        lease=self.settings.outbox.lease, limit=room, db_now=self._check_clock,
                    )
                    claimed = bool(rows)  # even if all of them merge into a summary: that one is due now
                    if rows and "slack" in self.channels:
                        rows = await asyncio.to_thread(self.merge_backlogs, rows)
                    # Alerts whose first Slack message (the thread's root) is being sent: their replies wait.
                    rooting = {r.alert_id for r in inflight.values() if _roots_a_thread(r)}
                    after = []
                    for row in rows:
                        if row.channel == "slack" and row.alert_id in rooting and row.kind not in (Kind.firing,
                                                                                                 Kind.action):
                            after.append(row)
                            continue
                        if _roots_a_thread(row):
                            rooting.add(row.alert_id)
                        inflight[asyncio.create_task(self.deliver(row, claimed_at=claimed_at))] = row
                        handled += 1
                    if after:
                        await asyncio.to_thread(self._defer, after, self.clock() + timedelta(seconds=1))
                if not inflight:
                    if claimed:
                        continue
                    return handled
                done, _ = await asyncio.wait(inflight, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    inflight.pop(task)
                    task.result()
        except asyncio.CancelledError:  # shutting down: the sends in flight stop too (their leases expire)
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
            raise
        except BaseException:  # a bug in one delivery: the others finish before it is raised
            await asyncio.gather(*inflight, return_exceptions=True)
            raise

    def _defer(self, rows: list[Notification], until: datetime) -> None:
        for row in rows:
            outbox.defer(self.engine, row.id, until=until, claimed=row.lease_until)

    def _check_clock(self, db_now: datetime) -> None:
        """A claim saw the database's clock: if ours is off from it (a step since the last measurement),
        measure again now — backoff and deferral times written from a clock off by minutes would make
        rows due at once by the database's clock, and be claimed again in a loop."""
        clock = self.clock
        if isinstance(clock, DatabaseClock):
            off = (clock() - db_now).total_seconds()
            if abs(off) > CLOCK_TOLERANCE:
                log.warning("this replica's clock is off from the database's; measuring again",
                            extra={"off_seconds": round(off, 3)})
                clock.sync()

    def merge_backlogs(self, rows: list[Notification]) -> list[Notification]:
        """Slack posts for a channel beyond what its bucket holds, with more waiting behind them than
        ``[slack] backlog_summary``, become one summary row (R2.6); the rows left to deliver are returned.
        A channel is looked at only when this claim holds more posts for it than a burst."""
        cfg = self.settings.slack
        groups: dict[str, list[Notification]] = {}
        for row in rows:
            if pacing.paced(row) and row.kind not in pacing.NOT_MERGED:
                groups.setdefault(pacing.key_of(row.target), []).append(row)
        merged: set[int] = set()
        for key, held in groups.items():
            if len(held) <= cfg.burst:
                continue
            ids = pacing.merge_backlog(self.engine, key, held, now=self.clock(), threshold=cfg.backlog_summary,
                                       render=self._render_summary)
            if ids:
                log.warning("Slack backlog merged into one summary message",
                            extra={"slack_channel": key, "messages": len(ids)})
                merged |= ids
        return [r for r in rows if r.id not in merged]

    def _render_summary(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        data = summary_data(items, catalog=self.catalog, dashboard_url=self.settings.server.base_url())
        return self.renderer.summary(data).to_json()

    async def deliver(self, row: Notification, *, claimed_at: float | None = None) -> None:
        """Prepare, pace and send one claimed row, and record the outcome. ``claimed_at`` (monotonic)
        starts the send's budget: everything from the claim on must end within half the lease."""
        claimed_at = time.monotonic() if claimed_at is None else claimed_at
        channel = self.channels.get(row.channel)
        if channel is None:
            await self._fail(row, DeliveryError(f"channel {row.channel!r} is not configured", retryable=False))
            return
        try:
            message = await asyncio.to_thread(self.prepare, row)
        except _NotYet as wait:
            await asyncio.to_thread(outbox.defer, self.engine, row.id,
                                    until=self.clock() + timedelta(seconds=wait.seconds), claimed=row.lease_until)
            asyncio.get_running_loop().call_later(wait.seconds, self.wake.set)
            return
        except sa_exc.SQLAlchemyError as exc:  # the database hiccuped (restart, failover): try again later
            log.warning("could not prepare notification", extra={"notification_id": row.id, "alert_id": row.alert_id,
                                                                "error": type(exc).__name__})
            await self._fail(row, DeliveryError(f"database error while preparing: {type(exc).__name__}",
                                                retryable=True))
            return
        except Exception as exc:  # a template error is permanent: retrying renders the same thing
            log.exception("render failed", extra={"notification_id": row.id, "alert_id": row.alert_id})
            await self._fail(row, DeliveryError(f"render failed: {type(exc).__name__}: {exc}", retryable=False))
            return
        if message is None:
            return
        if pacing.paced(row):  # one post a second per Slack channel, shared by every replica (R2.6)
            cfg = self.settings.slack
            wait = await asyncio.to_thread(pacing.take, self.engine, pacing.key_of(row.target), now=self.clock(),
                                           rate=cfg.rate, burst=cfg.burst)
            if wait > 0:
                await asyncio.to_thread(outbox.defer, self.engine, row.id,
                                        until=self.clock() + timedelta(seconds=wait), claimed=row.lease_until)
                asyncio.get_running_loop().call_later(wait, self.wake.set)  # back when the bucket has a token
                return
        # A send, with every retry a channel makes inside it, ends at half the lease after the claim:
        # past the lease another worker would claim the row and send it again (R2.2). Preparing (a
        # Connect Card link is minted then) and pacing count against it.
        budget = self.settings.outbox.lease.total_seconds() / 2 - (time.monotonic() - claimed_at)
        if budget <= 0:  # nothing left to send in safely: an attempt that failed, retried after a backoff
            await self._fail(row, DeliveryError("preparing the message took half the outbox lease", retryable=True))
            return
        try:
            try:
                async with asyncio.timeout(budget):
                    ref = await channel.send(message)
            except TimeoutError:
                raise DeliveryError(f"send took longer than {budget:.3g} s (half the outbox lease after the claim)",
                                    retryable=True) from None
        except PartialDelivery as exc:  # some email recipients took it: one row per outcome
            dead_ids = await asyncio.to_thread(
                outbox.mark_partial, self.engine, row.id, now=self.clock(), message_id=exc.ref,
                delivered=exc.delivered, retry=exc.retry, dead=exc.dead, policy=self.policy, claimed=row.lease_until,
                fallback=self._fallback_to(),
            )
            log.log(logging.ERROR if dead_ids else logging.WARNING, "notification partly refused",
                    extra={"notification_id": row.id, "alert_id": row.alert_id, "error": exc.reason,
                           "dead": dead_ids})
            self._fallback_queued(dead_ids)
            return
        except DeliveryError as exc:
            if exc.retry_after is not None and pacing.paced(row):  # a 429: every replica holds off the channel
                cfg = self.settings.slack
                await asyncio.to_thread(pacing.hold, self.engine, pacing.key_of(row.target), now=self.clock(),
                                        seconds=exc.retry_after, rate=cfg.rate, burst=cfg.burst)
            await self._fail(row, exc)
            return
        except Exception as exc:  # an unexpected error from a channel: retry, but say what it was
            await self._fail(row, DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True))
            return
        crashpoints.hit("after_send_before_mark")
        sent_at = self.clock()

        def record() -> None:
            outbox.mark_sent(self.engine, row.id, now=sent_at, external_ref=ref, claimed=row.lease_until)
            if row.alert_id is not None and row.kind == Kind.firing:
                self._first_notified(row.alert_id)
            if row.channel == "slack" and row.alert_id is not None and row.kind in post_edits.UPDATABLE:
                offered = post_edits.offered(message.rendered.slack)
                if offered:
                    self._acted_on_meanwhile(row.alert_id, offered)

        if not await self._record(record, row, "sent"):
            return
        if self.on_sent is not None:
            self.on_sent(row, (self.clock() - as_utc(row.created_at)).total_seconds())
        log.info(
            "notification sent",
            extra={"notification_id": row.id, "alert_id": row.alert_id, "channel": row.channel,
                   "receiver": row.receiver, "kind": row.kind},
        )

    async def _record(self, write: Callable[[], Any], row: Notification, what: str) -> bool:
        """Write a send's outcome; when the database cannot take it now, keep it and write it as soon as it
        can (before the next claim), within the row's lease — else the row waits out its lease (2 min) and
        a message that did arrive is sent again (found by a fault review)."""
        try:
            await asyncio.to_thread(write)
            return True
        except sa_exc.SQLAlchemyError as exc:
            self._unrecorded.append((time.monotonic() + self.settings.outbox.lease.total_seconds() / 2, write,
                                     row.id, what))
            log.warning("notification outcome not recorded yet (database unavailable): kept to record",
                        extra={"notification_id": row.id, "alert_id": row.alert_id, "outcome": what,
                               "error": type(exc).__name__})
            return False

    async def _record_kept(self) -> None:
        """Write the outcomes the database could not take earlier, oldest first; stop at the first failure.
        A delivery is written however late (``mark_sent`` takes a late mark: the message did arrive); a
        failure only within the row's lease — after it, the row is whoever claims it next to decide."""
        while self._unrecorded:
            deadline, write, row_id, what = self._unrecorded[0]
            if what != "sent" and time.monotonic() > deadline:
                log.warning("notification outcome dropped: its lease ran out before the database came back",
                            extra={"notification_id": row_id, "outcome": what})
                self._unrecorded.pop(0)
                continue
            await asyncio.to_thread(write)  # raises while the database is still away: the tick fails, kept
            self._unrecorded.pop(0)
            log.info("notification outcome recorded late", extra={"notification_id": row_id, "outcome": what})

    async def _fail(self, row: Notification, exc: DeliveryError) -> None:
        result: list[str] = []

        def record() -> None:
            result.append(outbox.mark_failed(
                self.engine, row.id, now=self.clock(), error=exc.reason, retryable=exc.retryable,
                retry_after=exc.retry_after, policy=self.policy, claimed=row.lease_until,
                fallback=self._fallback_to()))

        if not await self._record(record, row, "failed"):
            return
        status = result[0]
        if status == "lost":
            log.warning("notification outcome dropped: its lease ran out and another worker holds it",
                        extra={"notification_id": row.id, "alert_id": row.alert_id, "error": exc.reason})
            return
        level = logging.ERROR if status == DeliveryStatus.dead else logging.WARNING
        log.log(
            level,
            "notification %s", "dead" if status == DeliveryStatus.dead else "failed, will retry",
            extra={"notification_id": row.id, "alert_id": row.alert_id, "channel": row.channel,
                   "receiver": row.receiver, "error": exc.reason, "attempts": row.attempts},
        )
        if status == DeliveryStatus.dead:
            self._fallback_queued([row.id])

    def _fallback_to(self) -> outbox.Fallback | None:
        """Dead letters go to ``[email] admin`` by email, if there is one (R2.5): queued by the very
        transaction that makes a row dead, so a crash in between cannot lose the report."""
        admin = self.settings.email.admin
        if not admin or "email" not in self.channels:
            return None
        return outbox.Fallback(admin, with_delivery_note)

    def _fallback_queued(self, dead_ids: list[int]) -> None:
        if dead_ids and self._fallback_to() is not None:
            log.info("dead letter queued for the admin address", extra={"notification_ids": dead_ids})
            self.wake.set()

    # -- rendering --------------------------------------------------------------------------

    def prepare(self, row: Notification) -> Outgoing | None:
        """Render the row (once: the payload is stored before the first send) and find its thread."""
        with session_scope(self.engine) as session:
            alert = session.get(Alert, row.alert_id) if row.alert_id is not None else None
            thread = None
            if alert is not None and row.kind != Kind.firing:
                firings = session.exec(
                    select(Notification).where(
                        Notification.alert_id == alert.id,
                        Notification.receiver == row.receiver,
                        Notification.channel == row.channel,
                        Notification.kind == Kind.firing.value,
                        Notification.status.in_([DeliveryStatus.sent.value, DeliveryStatus.pending.value,
                                                 DeliveryStatus.failed.value]),
                    ).order_by(Notification.id)
                ).all()
                # The thread's root is the first FIRING that went out on this channel (one a silence
                # cancelled, or a dead one, never did), else the one still being sent or retried.
                thread = next((n for n in firings if n.status == DeliveryStatus.sent), firings[0] if firings else None)
            on_its_way = thread is not None and thread.status in (DeliveryStatus.pending, DeliveryStatus.failed)
            if row.kind in (Kind.resolved, Kind.updated) and on_its_way:
                # its FIRING on this channel is still being sent or retried: this comes after it, not before
                retry_in = (as_utc(thread.next_attempt_at) - self.clock()).total_seconds() + 1
                raise _NotYet(max(RESOLVED_WAITS_S, retry_in))
            if row.kind == Kind.resolved and alert is not None and session.exec(
                    select(Notification.id).where(
                        Notification.alert_id == alert.id, Notification.receiver == row.receiver,
                        Notification.channel == row.channel,
                        Notification.kind.in_([Kind.action.value, Kind.reminder.value, Kind.updated.value]),
                        Notification.status.in_([DeliveryStatus.pending.value, DeliveryStatus.failed.value]),
                        Notification.lease_until > self.clock())).first() is not None:
                # another message of the alert is being sent right now (by any replica), rendered while it was
                # firing — a reminder, an update, an in-place edit of its post: the resolution goes after it
                # (else "still failing" arrives after "resolved", or the edit turns the post back to FIRING)
                raise _NotYet(RESOLVED_WAITS_S)
            superseded = _superseded(alert, row.kind)
            if superseded is None and row.kind == Kind.reminder:
                superseded = "its FIRING is still on its way" if on_its_way else _newer_reminder(session, row)
            if superseded is not None:
                # Silenced alerts send nothing at all; the end of the silence sends one message.
                db_row = session.get(Notification, row.id)
                if db_row is not None:
                    db_row.status = DeliveryStatus.cancelled
                    db_row.lease_until = None
                    db_row.last_error = superseded
                return None
            if alert is not None and thread is None and row.kind in (Kind.reminder, Kind.updated):
                # Nothing of this alert went out on this channel: this message is its first there (a FIRING,
                # top-level), and the thread's root that later ones reply to.
                row.kind = Kind.firing
                db_row = session.get(Notification, row.id)
                if db_row is not None:
                    db_row.kind = Kind.firing.value
            payload = row.payload
            if payload is None:
                if alert is None:
                    raise ValueError("notification has neither payload nor alert")
                entry = self.catalog.get(alert.code)
                if entry is None:
                    raise ValueError(f"unknown catalog code {alert.code!r}")
                reg = self.settings.integration(alert.integration_id)
                # an in-place edit owed by the ingest path (a group member fixed) shows the first message anew
                kind = Kind.firing if row.kind == Kind.action else row.kind
                data = alert_data(
                    kind=kind, alert=alert, entry=entry,
                    dashboard_url=self.settings.server.base_url(), now=self.clock(),
                    owner=reg.owner if reg else None, usual_auth=self.catalog.default_auth.get(alert.provider or ""),
                )
                data["group"] = self._group(session, alert, entry)
                if row.kind == Kind.resolved:
                    data["still_failing"] = self._still_failing(session, alert)
                payload = self.renderer.alert(data).to_json()
                db_row = session.get(Notification, row.id)
                if db_row is not None:
                    db_row.payload = payload
        rendered = Rendered(**{k: payload[k] for k in ("kind", "slack", "subject", "text", "html")})
        rendered = self.fresh_links.apply(row.alert_id, rendered)  # Fivetran Connect Card link, never stored
        if self.fresh_links.enabled:  # a digest's Fivetran links too: each is minted when it is sent
            for connector_id, stored in payload.get("fivetran_links") or []:
                fresh = self.fresh_links.link_for(connector_id)
                if fresh and fresh != stored:
                    rendered = substitute(rendered, stored, fresh)
        root = self.thread_root_id(row.alert_id, row.receiver) if row.alert_id is not None else None
        if row.kind != Kind.firing and row.channel == "email" and thread is not None \
                and thread.status == DeliveryStatus.sent and (thread.external_ref or "").startswith("<"):
            root = thread.external_ref  # the first email's Message-ID as sent (by whichever version sent it)
        message_id = (row.target or {}).get("message_id") or (
            root if row.kind == Kind.firing and root else self.message_id(row))
        return Outgoing(
            notification_id=row.id,
            idempotency_key=row.idempotency_key,
            instance=self.instance,
            kind=row.kind,
            alert_id=row.alert_id,
            address=dict(row.target or {}),
            rendered=rendered,
            message_id=message_id,
            thread_root_id=root if row.kind != Kind.firing else None,
            thread_ref=thread.external_ref if thread is not None and thread.status == DeliveryStatus.sent else None,
            extra={"attempts": row.attempts, "created_at": row.created_at},
        )

    def _group(self, session: Any, alert: Alert, entry: Any) -> dict[str, Any] | None:
        """The integrations failing together with ``alert`` (its correlation members), for one message."""
        if not alert.correlation_key or alert.correlation_lead_id is not None:
            return None
        members = session.exec(select(Alert).where(Alert.correlation_lead_id == alert.id)
                               .order_by(Alert.first_seen, Alert.id)).all()
        if not members:
            return None
        everyone = [alert, *members]
        kind, _, rest = alert.correlation_key.partition("=")
        value = rest.rpartition("|")[0]
        return {
            "count": len(everyone),
            "open": sum(1 for a in everyone if a.state != "resolved"),
            "key": CORRELATION_WORDS.get(kind, kind),
            "value": value,
            "started": as_utc(min(a.first_seen for a in everyone)),
            "likely": LIKELY_CAUSE.get(entry.base_code, entry.cause),
            "members": [{
                "id": a.id, "name": a.integration_name or a.integration_id, "integration_id": a.integration_id,
                "provider": provider_label(a.provider), "state": a.state, "reauthorize_url": a.reauthorize_url,
                "code": a.code if a.code != alert.code else None,  # a member failing otherwise than its message says
            } for a in everyone],
        }

    def _still_failing(self, session: Any, alert: Alert) -> dict[str, Any] | None:
        """For a resolved alert of a correlated group: the integrations still failing for the same cause (the
        same key and code), so the message that said "N integrations" does not read as if all were fixed."""
        if not alert.correlation_key:
            return None
        open_ = session.exec(select(Alert).where(
            Alert.correlation_key == alert.correlation_key, Alert.state != AlertState.resolved.value,
            Alert.id != alert.id).order_by(Alert.first_seen, Alert.id).limit(STILL_FAILING_SHOWN + 1)).all()
        if not open_:
            return None
        kind, _, rest = alert.correlation_key.partition("=")
        return {
            "key": CORRELATION_WORDS.get(kind, kind), "value": rest.rpartition("|")[0],
            "more": len(open_) > STILL_FAILING_SHOWN,
            "members": [{"name": a.integration_name or a.integration_id, "integration_id": a.integration_id,
                         "provider": provider_label(a.provider), "reauthorize_url": a.reauthorize_url}
                        for a in open_[:STILL_FAILING_SHOWN]],
        }

    @property
    def instance(self) -> str:
        return storage.instance_id(self.engine)

    def _own(self, key: str) -> str:
        """``key`` made this database's: keys repeat across deployments (alert 1 of staging and of prod)."""
        return hashlib.sha256(f"{self.instance}|{key}".encode()).hexdigest()

    def message_id(self, row: Notification) -> str:
        return f"<{self._own(row.idempotency_key)[:32]}@{self.domain}>"

    def thread_root_id(self, alert_id: int, receiver: str) -> str:
        """The Message-ID of an alert's first email to a receiver; later messages reply to it."""
        key = self._own(outbox.idempotency_key(alert_id, receiver, "email", "thread", 0))
        return f"<alert-{alert_id}.{key[:12]}@{self.domain}>"

    def _acted_on_meanwhile(self, alert_id: int, offered: set[str]) -> None:
        """A post offering Acknowledge or Silence (``offered``) went out, but the alert was acknowledged or
        silenced while it was being rendered and sent (on any replica): that action's edits covered only the
        posts already sent, so this one is edited now — it loses the button and says who is on it."""
        with session_scope(self.engine) as session:
            alert = session.exec(select(Alert).where(Alert.id == alert_id).with_for_update()).first()
            if alert is None:
                return
            acked, silenced = alert.state == AlertState.acknowledged, bool(alert.silenced)
            if not ((acked and "ack" in offered) or (silenced and "silence" in offered)):
                return
            how = "ack" if acked else "silence"
            if post_edits.owe_updates_elsewhere(session, alert, how=how, by=alert.acknowledged_by or "a silence",
                                                settings=self.settings, catalog=self.catalog,
                                                renderer=self.renderer, now=self.clock()):
                self.wake.set()

    def _first_notified(self, alert_id: int) -> None:
        with session_scope(self.engine) as session:
            alert = session.get(Alert, alert_id)
            if alert is not None and alert.first_notified_at is None:
                alert.first_notified_at = self.clock()
                # reminders are timed from when people were told, not from when the message was due: after
                # an outage longer than repeat_interval, a reminder must not follow its FIRING at once
                if alert.last_notified_at is None or as_utc(alert.last_notified_at) < alert.first_notified_at:
                    alert.last_notified_at = alert.first_notified_at

    async def aclose(self) -> None:
        for ch in self.channels.values():
            await ch.aclose()


RESOLVED_WAITS_S = 2.0


class _NotYet(Exception):
    """A row that must wait for another of its alert's rows (its FIRING, still in flight)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def _newer_reminder(session: Any, row: Notification) -> str | None:
    """A reminder owed after ``row`` to its channel replaces it: a channel that was down hears one, not each."""
    newer = session.exec(select(Notification.id).where(
        Notification.alert_id == row.alert_id, Notification.receiver == row.receiver,
        Notification.channel == row.channel, Notification.kind == Kind.reminder.value, Notification.id > row.id,
        Notification.status.in_([DeliveryStatus.pending.value, DeliveryStatus.failed.value,
                                 DeliveryStatus.sent.value])).limit(1)).first()
    return "a newer reminder replaces it" if newer is not None else None


def _superseded(alert: Alert | None, kind: str) -> str | None:
    """Why a row must not be sent any more, or ``None``. A silenced alert sends nothing, except the
    ``action`` row that shows who silenced it; an ``action`` row of a since-resolved alert would
    overwrite the "resolved" message."""
    if alert is None:
        return None
    if kind == Kind.action:
        return "alert resolved" if alert.state == AlertState.resolved else None
    if kind == Kind.reminder and alert.state != AlertState.firing:  # acknowledged (or resolved) since it was owed
        return f"alert {alert.state}"
    return "alert silenced" if alert.silenced else None
