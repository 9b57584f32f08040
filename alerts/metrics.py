"""Prometheus metrics, every name prefixed ``alerts_``, on a registry of the app's own.

Counters and the delivery-latency histogram are kept in process; everything that describes
shared state (alerts by state, outbox depth, notifications by status) is read from the database
at scrape time, so every replica reports the same truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from alerts.models import as_utc
from alerts.storage import Alert, LogOffset, Notification, Silence, session_scope

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "alerts_events_received", "Events received, by source and outcome (accepted, duplicate, rejected).",
            ["source", "outcome"], registry=self.registry,
        )
        self.refused = Counter(
            "alerts_requests_refused", "Requests refused with a 4xx, by route and status.",
            ["route", "status"], registry=self.registry,
        )
        self.unavailable = Counter(
            "alerts_requests_unavailable", "Requests answered 503 because the database could not be used, by route.",
            ["route"], registry=self.registry,
        )
        self.sent = Counter(
            "alerts_notifications_delivered", "Notifications delivered by this process, by channel and kind.",
            ["channel", "kind"], registry=self.registry,
        )
        self.latency = Histogram(
            "alerts_delivery_latency_seconds", "From the event that caused a notification to its delivery.",
            ["channel"], registry=self.registry,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
        )
        # Group commit (alerts.web.committer): how many requests and events each ingest transaction
        # carried and where its time went. A large ``wait`` means the SQLite writers' lock is the limit
        # (more workers will not help: move to PostgreSQL); ``commit`` is the fsync each 2xx waits for.
        self.commit_requests = Histogram(
            "alerts_ingest_transaction_requests", "Requests committed together in one ingest transaction.",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.commit_events = Histogram(
            "alerts_ingest_transaction_events", "Events committed together in one ingest transaction.",
            registry=self.registry, buckets=(1, 10, 50, 100, 200, 500, 1000, 2000),
        )
        self.commit_seconds = Histogram(
            "alerts_ingest_transaction_seconds",
            "Time of one ingest transaction by phase: wait (for the SQLite write lock), work (statements), "
            "commit (durable on disk).",
            ["phase"], registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
        self._phases = {name: self.commit_seconds.labels(name) for name in ("wait", "work", "commit")}
        self.registry.register(DatabaseCollector(engine, clock))
        self._children: dict[tuple[str, str], Counter] = {}

    def count_events(self, source: str, *, accepted: int = 0, duplicates: int = 0, rejected: int = 0) -> None:
        if accepted:
            self._events(source, "accepted").inc(accepted)
        if duplicates:
            self._events(source, "duplicate").inc(duplicates)
        if rejected:
            self._events(source, "rejected").inc(rejected)

    def _events(self, source: str, outcome: str) -> Counter:
        child = self._children.get((source, outcome))
        if child is None:  # labels() takes a lock and builds a key: once per label pair, not per request
            child = self._children[(source, outcome)] = self.events.labels(source, outcome)
        return child

    def on_commit(self, requests: int, events: int, phases: dict[str, float]) -> None:
        self.commit_requests.observe(requests)
        self.commit_events.observe(events)
        for name, seconds in phases.items():
            child = self._phases.get(name)
            if child is not None:
                child.observe(seconds)

    def on_sent(self, row: Notification, seconds: float) -> None:
        self.sent.labels(row.channel, row.kind).inc()
        self.latency.labels(row.channel).observe(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class DatabaseCollector(Collector):
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock()
        alerts = GaugeMetricFamily("alerts_alerts", "Alerts by state (silenced ones counted separately too).",
                                   labels=["state"])
        notes = GaugeMetricFamily("alerts_notifications", "Outbox rows by channel and status.",
                                  labels=["channel", "status"])
        depth = GaugeMetricFamily("alerts_outbox_depth", "Notifications waiting to be delivered (pending or failed).")
        oldest = GaugeMetricFamily("alerts_outbox_oldest_pending_seconds",
                                   "Age of the oldest notification that is due, or failed and waiting to be "
                                   "retried, and not yet delivered.")
        silences = GaugeMetricFamily("alerts_silences_active", "Silences in effect now.")
        lag = GaugeMetricFamily("alerts_log_source_lag_seconds", "Time since each followed log file was last read.",
                                labels=["path"])
        with session_scope(self.engine) as s:
            by_state = dict(s.execute(sa.select(Alert.state, sa.func.count()).group_by(Alert.state)).all())
            for state in ("firing", "acknowledged", "resolved"):
                alerts.add_metric([state], by_state.get(state, 0))
            silenced = s.execute(sa.select(sa.func.count()).where(
                Alert.silenced == sa.true(), Alert.state != "resolved")).scalar_one()
            alerts.add_metric(["silenced"], silenced)
            for channel, status, n in s.execute(
                sa.select(Notification.channel, Notification.status, sa.func.count())
                .group_by(Notification.channel, Notification.status)
            ).all():
                notes.add_metric([channel, status], n)
            waiting = s.execute(sa.select(sa.func.count(), sa.func.min(Notification.next_attempt_at)).where(
                Notification.status.in_(["pending", "failed"]))).one()
            depth.add_metric([], waiting[0])
            # a failed row waiting out its backoff counts (found by a fault review: during an SMTP outage the
            # gauge read 0 between retries, so an alert on it never fired); a row waiting out group_wait not
            due_oldest = s.execute(sa.select(sa.func.min(Notification.created_at)).where(sa.or_(
                Notification.status == "failed",
                sa.and_(Notification.status == "pending", Notification.next_attempt_at <= now)))).scalar_one()
            oldest.add_metric([], max(0.0, (now - as_utc(due_oldest)).total_seconds()) if due_oldest else 0.0)
            silences.add_metric([], s.execute(sa.select(sa.func.count()).where(
                Silence.starts_at <= now, Silence.ends_at > now)).scalar_one())
            for path, updated in s.execute(sa.select(LogOffset.path, LogOffset.updated_at)).all():
                if updated is not None:
                    lag.add_metric([path], max(0.0, (now - as_utc(updated)).total_seconds()))
        yield from (alerts, notes, depth, oldest, silences, lag)
