"""The same service on PostgreSQL: migrations, ingest, dedup, and several replicas sharing one database."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlmodel import select

from alerts import outbox, storage
from alerts.models import utcnow
from alerts.routing import Target
from alerts.storage import Alert, Notification, session_scope
from tests.peers.postgres import fresh_schema
from tests.peers.server import ServerProcess
from tests.peers.smtp import SmtpPeer

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url():
    with fresh_schema() as url:
        yield url


@pytest.fixture
def smtp():
    peer = SmtpPeer().start()
    yield peer
    peer.stop()


def test_api_on_postgres(pg_url, make_settings, make_client) -> None:
    client = make_client(make_settings(database={"url": pg_url}))
    sf = {"integration_id": "sf-prod", "provider": "salesforce", "error": "invalid_grant"}
    for i in range(5):
        assert client.post("/v1/events", json={**sf, "event_id": f"e{i}"}).status_code == 202
    assert client.post("/v1/events", json={**sf, "event_id": "e0"}).json()["duplicates"] == 1
    [alert] = client.get("/v1/alerts").json()["alerts"]
    assert (alert["count"], alert["state"]) == (5, "firing")
    client.post("/v1/events", json={"integration_id": "sf-prod", "status": "succeeded"})
    assert client.get(f"/v1/alerts/{alert['id']}").json()["state"] == "resolved"
    assert client.get("/readyz").status_code == 200


def test_two_replicas_ingesting_concurrently_open_one_alert_each(pg_url, smtp, tmp_path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[database]
url = "{pg_url}"
[alerting]
group_wait = "0s"
[email]
host = "127.0.0.1"
port = {smtp.port}
starttls = false
[[receivers]]
name = "team"
email = {{ to = ["team@example.com"] }}
""")
    a = ServerProcess(cwd=tmp_path, config=cfg).start()
    b = ServerProcess(cwd=tmp_path, config=cfg).start()
    try:
        errors: list[str] = []

        def feed(server: ServerProcess, parity: int) -> None:
            with server.client() as http:
                for i in range(1000):
                    if i % 2 != parity:
                        continue
                    r = http.post("/v1/events", json={"integration_id": f"int-{i % 100:03d}", "provider": "google",
                                                      "error": "invalid_grant: Token has been expired or revoked."})
                    if r.status_code != 202:
                        errors.append(r.text)

        threads = [threading.Thread(target=feed, args=(s, p)) for s, p in ((a, 0), (b, 1), (a, 1), (b, 0))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        eng = storage.make_engine(pg_url)
        with session_scope(eng) as s:
            alerts = s.exec(select(Alert)).all()
            assert len(alerts) == 100
            assert sorted(x.count for x in alerts) == [20] * 100
        a.wait_for(lambda: len(smtp.messages) >= 100, timeout=60)
        per_integration = Counter()
        for m in smtp.messages:
            subject = m.message["Subject"]
            per_integration[subject.split("]")[1].split()[0]] += 1
        assert len(per_integration) == 100 and set(per_integration.values()) == {1}
        eng.dispose()
    finally:
        a.stop()
        b.stop()


def test_two_claimers_deliver_each_row_exactly_once(pg_url) -> None:
    eng = storage.make_engine(pg_url)
    storage.upgrade(eng)
    from alerts.models import utcnow

    now = utcnow()
    with session_scope(eng) as s:
        for i in range(1000):
            outbox.enqueue(s, alert_id=None, kind="digest", seq=i, targets=[Target("r", "file", {})], due=now,
                           now=now, payload={})
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        while True:
            rows = outbox.claim(eng, now=utcnow(), lease=timedelta(seconds=120), limit=25)
            if not rows:
                return
            for r in rows:
                outbox.mark_sent(eng, r.id, now=utcnow(), external_ref="x")
            with lock:
                claimed.extend(r.id for r in rows)

    threads = [threading.Thread(target=claimer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 1000 and len(set(claimed)) == 1000
    with session_scope(eng) as s:
        assert len(s.exec(select(Notification).where(Notification.status == "sent")).all()) == 1000
    eng.dispose()



def test_two_schedulers_send_one_digest_per_period(pg_url, smtp, make_settings, make_client, clock) -> None:
    import asyncio
    from datetime import UTC, datetime

    from alerts.storage import DigestRun

    settings = make_settings(
        database={"url": pg_url},
        email={"host": "127.0.0.1", "port": smtp.port, "starttls": False, "from_addr": "alerts@example.com"},
        digests=[{"name": "morning", "schedule": "0 8 * * *", "timezone": "UTC", "to": ["team@example.com"],
                  "skip_if_empty": False}],
    )
    replicas = [make_client(settings), make_client(settings)]

    def tick_all() -> None:  # both replicas at the same moment, each on its own thread and connection
        threads = [threading.Thread(target=lambda c=c: asyncio.run(c.app.state.worker.tick())) for c in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    clock.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    tick_all()  # the first sight of the schedule: a baseline, nothing sent
    for day in (28, 29):
        clock.now = datetime(2026, 11, day, 8, 0, 5, tzinfo=UTC)
        for _ in range(3):
            tick_all()
    digests = [m for m in smtp.messages if m.message["X-Alerts-Kind"] == "digest"]
    assert len(digests) == 2, [m.message["Subject"] for m in digests]
    eng = storage.make_engine(pg_url)
    with session_scope(eng) as s:
        runs = sorted((r.period_start, r.status) for r in s.exec(select(DigestRun)).all())
    assert [status for _, status in runs] == ["baseline", "sent", "sent"]
    eng.dispose()


def test_the_database_clock_overrules_a_replica_clock_an_hour_fast(pg_url) -> None:
    from datetime import UTC, datetime, timedelta

    eng = storage.make_engine(pg_url)
    fast = storage.DatabaseClock(eng, local=lambda: datetime.now(UTC) + timedelta(hours=1))
    assert fast() - datetime.now(UTC) > timedelta(minutes=59)  # before it has measured: its own clock
    offset = fast.sync()
    assert timedelta(minutes=-61) < offset < timedelta(minutes=-59)
    with eng.connect() as conn:
        theirs = conn.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
    assert abs(fast() - theirs) < timedelta(seconds=1)
    eng.dispose()


def test_writers_on_overlapping_alerts_in_opposite_orders_lose_nothing(pg_url, make_settings, catalog) -> None:
    """Two replicas' batches touch the same 50 alerts, one in reverse order: each batch commits (row locks
    are taken in one order, a deadlock would be retried) and every event is counted once."""
    from alerts import ingest
    from alerts.models import AuthErrorEvent, utcnow

    settings = make_settings(database={"url": pg_url}, alerting={"group_wait": "1h"})
    eng = storage.make_engine(pg_url)
    storage.upgrade(eng)
    ids = [f"int-{i:02d}" for i in range(50)]
    ingest.ingest([AuthErrorEvent(integration_id=i, error="invalid_grant") for i in ids], engine=eng,
                  settings=settings, catalog=catalog, now=utcnow())
    errors: list[BaseException] = []

    def writer(order: list[str]) -> None:
        engine = storage.make_engine(pg_url)  # a replica of its own: its own pool
        try:
            for _ in range(20):
                ingest.ingest([AuthErrorEvent(integration_id=i, error="invalid_grant") for i in order],
                              engine=engine, settings=settings, catalog=catalog, now=utcnow())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=writer, args=(o,)) for o in (ids, ids[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with session_scope(eng) as s:
        assert sorted(a.count for a in s.exec(select(Alert)).all()) == [41] * 50
    eng.dispose()


def test_repeats_update_alert_rows_in_place(pg_url, make_settings, catalog) -> None:
    """Migration 0008 leaves room on alert pages (fillfactor 50): a repeat's update of count, last_seen
    and last_error is heap-only (HOT), with no index entry written."""
    import time

    import sqlalchemy as sa

    from alerts import ingest
    from alerts.models import AuthErrorEvent, utcnow

    settings = make_settings(database={"url": pg_url}, alerting={"group_wait": "1h"})
    eng = storage.make_engine(pg_url)
    storage.upgrade(eng)
    with eng.connect() as c:
        assert c.exec_driver_sql("SELECT reloptions FROM pg_class WHERE oid = 'alert'::regclass").scalar() \
            == ["fillfactor=50"]
    ids = [f"int-{i:03d}" for i in range(200)]
    for _ in range(10):  # the first round opens 200 alerts, the other nine count 1,800 repeats
        ingest.ingest([AuthErrorEvent(integration_id=i, error="invalid_grant") for i in ids], engine=eng,
                      settings=settings, catalog=catalog, now=utcnow())
    eng.dispose()  # the backends report their statistics as they exit
    stats = sa.create_engine(pg_url)
    deadline = time.monotonic() + 10
    while True:
        with stats.connect() as c:
            upd, hot = c.exec_driver_sql("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                                         "WHERE relid = 'alert'::regclass").one()
        if upd >= 1800 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    stats.dispose()
    assert upd == 1800
    assert hot == upd
    with session_scope(storage.make_engine(pg_url)) as s:
        assert sorted({a.count for a in s.exec(select(Alert)).all()}) == [10]


def _db_now(eng):
    with eng.connect() as conn:
        return storage.as_utc(conn.exec_driver_sql("select now()").scalar_one())


def test_a_claim_on_the_database_clock_ignores_this_replicas_clock(pg_url) -> None:
    """R2.2: which rows are due and when their leases end come from ``now()`` in the claim itself."""
    eng = storage.make_engine(pg_url)
    storage.upgrade(eng)
    db_now = _db_now(eng)
    far_future = db_now + timedelta(hours=3)  # what a replica whose clock jumped ahead would believe
    with session_scope(eng) as s:
        for seq, due in enumerate((db_now - timedelta(seconds=1), db_now + timedelta(hours=1))):
            outbox.enqueue(s, alert_id=None, kind="digest", seq=seq, targets=[Target("r", "file", {})], due=due,
                           now=db_now, payload={})
    # the fast clock would take both rows and lease them until 3 h from now...
    assert {r.seq for r in outbox.claim(eng, now=far_future, lease=timedelta(seconds=1), limit=10)} == {0, 1}
    with eng.begin() as conn:
        conn.exec_driver_sql("update notification set lease_until = null, attempts = 0")
    # ...the database's clock takes the one that is due, leased for exactly the lease from the database's now
    [row] = outbox.claim(eng, now=None, lease=timedelta(seconds=120), limit=10)
    after = _db_now(eng)
    assert row.seq == 0
    assert db_now + timedelta(seconds=120) <= storage.as_utc(row.lease_until) <= after + timedelta(seconds=120)
    assert outbox.claim(eng, now=None, lease=timedelta(seconds=120), limit=10) == []  # leased, the other not due
    eng.dispose()


def test_the_worker_claims_on_the_database_clock_even_when_its_own_is_off(pg_url, make_settings, make_client,
                                                                          tmp_path) -> None:
    """A replica whose clock fell an hour behind since it last measured the offset still delivers what is due."""
    settings = make_settings(database={"url": pg_url})
    client = make_client(settings)
    eng = client.app.state.engine
    db_now = _db_now(eng)
    with session_scope(eng) as s:
        outbox.enqueue(s, alert_id=None, kind="digest", seq=0, targets=[Target("r", "file", {})], due=db_now,
                       now=db_now, payload={"kind": "digest", "slack": {}, "subject": "s", "text": "t", "html": "h"})
    worker = client.app.state.worker
    slow = storage.DatabaseClock(eng, local=lambda: utcnow() - timedelta(hours=1))  # never synced
    worker.clock = slow
    asyncio.run(worker.deliver_due())
    with session_scope(eng) as s:
        [row] = s.exec(select(Notification)).all()
        assert (row.status, row.attempts) == ("sent", 1)  # by its own clock nothing was due for an hour


def test_a_worker_that_finds_its_clock_off_measures_again_instead_of_retrying_in_a_loop(
        pg_url, make_settings, make_client) -> None:
    """Backoff times come from the replica's clock: one an hour slow would write them an hour in the past by
    the database's clock, and the row would be claimed again at once until its attempts ran out. The
    claim's now() shows the clock is off; it is measured again before the failure is recorded."""
    import socket

    with socket.socket() as s:  # a port nobody listens on: every send fails, retryably
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings = make_settings(database={"url": pg_url},
                             email={"host": "127.0.0.1", "port": closed, "starttls": False, "timeout": "1s"})
    client = make_client(settings)
    eng = client.app.state.engine
    db_now = _db_now(eng)
    with session_scope(eng) as s:
        outbox.enqueue(s, alert_id=None, kind="digest", seq=0, targets=[Target("r", "email", {"to": ["a@example.com"]})],
                       due=db_now, now=db_now,
                       payload={"kind": "digest", "slack": {}, "subject": "s", "text": "t", "html": "h"})
    worker = client.app.state.worker
    slow = storage.DatabaseClock(eng, local=lambda: utcnow() - timedelta(hours=1))  # never synced
    worker.clock = slow
    asyncio.run(worker.deliver_due())
    assert abs(slow.offset - timedelta(hours=1)) < timedelta(seconds=5)  # measured again
    with session_scope(eng) as s:
        [row] = s.exec(select(Notification)).all()
        assert (row.status, row.attempts) == ("failed", 1)  # one attempt, not max_attempts in a loop
        assert storage.as_utc(row.next_attempt_at) > _db_now(eng)  # due after a backoff, by the database's clock


def test_a_postgres_that_refuses_or_hangs_is_a_503_quickly_and_recovers(pg_url, make_settings, make_client) -> None:
    """Found by a fault review: refused connections answered 500 (the hot path's raw connection raises the
    driver's own error), and a server that accepts and never answers held every request for minutes."""
    import time

    from tests.helpers import SF
    from tests.peers.tcpproxy import TcpProxy

    proxy = TcpProxy("127.0.0.1", 5432)
    try:
        url = pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        client = make_client(make_settings(database={"url": url}))
        assert client.post("/v1/events", json=SF).status_code == 202
        for mode in ("refuse", "hang"):
            proxy.set(mode)
            start = time.monotonic()
            r = client.post("/v1/events", json=SF)
            took = time.monotonic() - start
            assert r.status_code == 503 and r.headers["retry-after"] == "5", (mode, r.status_code, r.text)
            assert took < 3 * storage.PG_CONNECT_TIMEOUT_S, (mode, took)
            proxy.set("forward")
            assert client.post("/v1/events", json=SF).status_code == 202  # no restart needed
        with session_scope(client.app.state.engine) as s:
            [alert] = s.exec(select(Alert)).all()
            assert alert.count == 3  # the refused ones stored nothing
        assert 'alerts_requests_unavailable_total{route="/v1/events"} 2.0' in client.get("/metrics").text
    finally:
        proxy.stop()


def test_a_postgres_that_stalls_on_an_open_connection_is_a_503_not_a_hang(pg_url, make_settings, make_client,
                                                                          monkeypatch) -> None:
    """Found by a code review: a server that takes the statements and never answers (no driver timeout sees
    it) held every request and the commit thread for as long as it lasted."""
    import time

    from alerts.web import committer
    from tests.helpers import SF
    from tests.peers.tcpproxy import TcpProxy

    monkeypatch.setattr(committer, "COMMIT_DEADLINE_S", 2.0)
    proxy = TcpProxy("127.0.0.1", 5432)
    try:
        url = pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        client = make_client(make_settings(database={"url": url}))
        assert client.post("/v1/events", json=SF).status_code == 202
        proxy.set("stall")
        start = time.monotonic()
        r = client.post("/v1/events", json=SF)
        assert r.status_code == 503 and time.monotonic() - start < 6, (r.status_code, time.monotonic() - start)
        assert "no answer from the database" in client.get("/readyz").json()["detail"]
    finally:
        proxy.stop()


def test_replicas_starting_together_on_a_new_database_all_migrate(pg_url) -> None:
    """Found by a fault review: two `alerts serve` started at once on a fresh database; one failed on
    alembic_version's primary key. The migration now holds an advisory lock."""
    engines = [storage.make_engine(pg_url) for _ in range(3)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def start(engine) -> None:
        barrier.wait()
        try:
            storage.upgrade(engine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert {storage.current_revision(e) for e in engines} == {storage.head_revision()}
    for e in engines:
        e.dispose()
