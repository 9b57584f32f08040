"""Crash harness (R5.3–R5.4): every crash point, then random ``kill -9``s, against a real process.

A recording Slack Web API peer and an aiosmtpd server count every delivery by its idempotency key
(Slack message metadata; the email's deterministic Message-ID). 500 events for 50 integrations are
fed in batches, re-sent until acknowledged (as a webhook sender would), and 50 auth-failure lines are
appended to a followed log file. After each crash the service is restarted. At the end:

After every restart the harness waits (at most lease + 10 s) until every due row was delivered and
none is leased — (d), checked after each crash, not only at the end. At the end:

(a) every acknowledged event is stored and has its alert; (b) every notification was delivered at
least once; (c) a key is delivered again only across a crash that caught it in flight: never twice by
one process, never after a crash by which it was already marked sent, and so at most 1 + the crashes;
(e) SQLite's integrity_check is ok; (f) no log line was lost or counted twice.
"""

from __future__ import annotations

import bisect
import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from alerts.crashpoints import POINTS
from tests.peers.server import ServerProcess
from tests.peers.slack import TOKEN, SlackPeer
from tests.peers.smtp import SmtpPeer

pytestmark = pytest.mark.crash

INTEGRATIONS = 50
EVENTS = 500
LOG_LINES = 50
RANDOM_KILLS = int(os.environ.get("ALERTS_CRASH_KILLS", "20"))
LEASE_S = 2


def service_config(db_url: str, slack: SlackPeer, smtp: SmtpPeer) -> str:
    """What every crash run configures: fast polling, a short lease, quick retries, Slack and email."""
    return f"""
[database]
url = "{db_url}"
[alerting]
group_wait = "0s"
repeat_interval = "30d"
[outbox]
poll_interval = "200ms"
lease = "{LEASE_S}s"
backoff_base = "1s"
backoff_cap = "2s"
[slack]
bot_token = "{TOKEN}"
base_url = "{slack.base_url}"
allow_loopback_base_url = true
timeout = "1s"
[email]
host = "127.0.0.1"
port = {smtp.port}
starttls = false
timeout = "1s"
[[receivers]]
name = "team"
slack = {{ channel = "#data-alerts" }}
email = {{ to = ["team@example.com"] }}
"""


def config(tmp: Path, slack: SlackPeer, smtp: SmtpPeer) -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text(service_config(f"sqlite:///{tmp}/alerts.db", slack, smtp) + f"""
[[log_sources]]
name = "taps"
paths = ["{tmp}/logs/*.log"]
follow = true
poll_interval = "200ms"
integration_regex = ["integration=(?P<integration>[\\\\w-]+)"]
[[digests]]
name = "minutely"
schedule = "* * * * *"
to = ["digest@example.com"]
skip_if_empty = false
""")
    return cfg


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.slack = SlackPeer().start()
        self.smtp = SmtpPeer().start()
        self.cfg = config(tmp, self.slack, self.smtp)
        (tmp / "logs").mkdir()
        self.log = tmp / "logs" / "tap.log"
        self.log.write_text("")
        self.server: ServerProcess | None = None
        self.acked: set[str] = set()
        self.crashes = 0
        # (Slack messages, emails) received before each crash: the deliveries of each process lifetime
        self.boundaries: list[tuple[int, int]] = []
        # per crash, the delivery keys marked sent by then: none of them may arrive again afterwards
        self.sent_by_crash: list[set[str]] = []
        self.settles = 0

    def crashed(self) -> None:
        """Count a crash and mark where its deliveries end. Bytes the dead process sent before it died
        may still be being read by a peer: a moment's wait (the next process is far slower to start)."""
        time.sleep(0.3)
        self.boundaries.append((len(self.slack.messages), len(self.smtp.messages)))
        self.crashes += 1
        self.sent_by_crash.append(sent_keys(self.tmp / "alerts.db"))

    def settle(self) -> None:
        """R5.4 (d), after a restart: within lease + 10 s every due row is delivered (the dead process's
        leases expired and the rows were claimed again) and no row is leased any more."""
        db = self.tmp / "alerts.db"
        wait_for(lambda: rows(db, QUIET_SQL) == [(0, 0)], timeout=LEASE_S + 10,
                 what=lambda: f"after crash {self.crashes}: (leased, due) = {rows(db, QUIET_SQL)}")
        self.settles += 1

    def env(self, crashpoint: str | None = None) -> dict[str, str]:
        env = {"ALERTS_TEST_BUILD": "1"}
        if crashpoint:
            env["ALERTS_CRASHPOINT"] = crashpoint
        return env

    def start(self, crashpoint: str | None = None) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if k != "ALERTS_CRASHPOINT"}
        env.update(self.env(crashpoint))
        self.server = ServerProcess(cwd=self.tmp, config=self.cfg, env=env)
        self.server.env = env  # only these variables: no inherited crash point
        return self.server.start(timeout=60)

    def alive(self) -> bool:
        return self.server is not None and self.server.proc is not None and self.server.proc.poll() is None

    def post(self, batch: list[dict]) -> bool:
        assert self.server is not None
        try:
            r = httpx.post(self.server.url + "/v1/events", json=batch, timeout=10)
        except httpx.HTTPError:
            return False
        if r.status_code == 202:
            self.acked.update(e["event_id"] for e in batch)
            return True
        raise AssertionError(f"unexpected answer {r.status_code}: {r.text}")

    def seed_digest_baseline(self) -> None:
        # The digest was first seen two minutes ago and nothing was claimed since: the current minute's
        # period is due at once. The write goes into the WAL the crash left, which must stay for the next
        # start to recover: the last connection to close folds the WAL in, unless it is read-only, so a
        # read-only one stays open until the writer has closed.
        db = self.tmp / "alerts.db"
        holder = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            holder.execute("select count(*) from digest_run").fetchall()  # opens the WAL: now a reader of it
            con = sqlite3.connect(db)
            con.execute("delete from digest_run")
            con.execute("insert into digest_run (name, period_start, manual, status, created_at) values "
                        "('minutely', datetime('now', '-2 minutes'), 0, 'baseline', datetime('now'))")
            con.commit()
            con.close()
        finally:
            holder.close()
        wal = db.with_name(db.name + "-wal")
        assert wal.exists() and wal.stat().st_size > 0, "the seed folded the WAL in: the restart has nothing to recover"

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.slack.stop()
        self.smtp.stop()


def events() -> list[dict]:
    return [{"integration_id": f"int-{i % INTEGRATIONS:02d}", "provider": "google", "event_id": f"e{i:04d}",
             "error": "invalid_grant: Token has been expired or revoked."} for i in range(EVENTS)]


def feed(h: Harness, pending: list[list[dict]], *, until_crash: bool = False, deadline: float = 60) -> None:
    """Post batches until all are acknowledged (or the server dies, with ``until_crash``)."""
    end = time.monotonic() + deadline
    while pending and time.monotonic() < end:
        if not h.alive():
            return
        if h.post(pending[0]):
            pending.pop(0)
        elif until_crash or not h.alive():
            return


def wait_for(predicate, timeout: float = 60, what=None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out" + (f": {what()}" if what else ""))


# (rows leased now, rows due and not delivered); SQLite stores naive UTC text, microseconds last
QUIET_SQL = ("select coalesce(sum(lease_until > strftime('%Y-%m-%d %H:%M:%f', 'now')), 0), "
             "coalesce(sum(status in ('pending', 'failed') and next_attempt_at <= strftime('%Y-%m-%d %H:%M:%f', "
             "'now')), 0) from notification")


def sent_keys(db: Path) -> set[str]:
    """The delivery keys (as :func:`lifetimes` names them) of the rows marked sent."""
    return {f"slack:{key}" if channel == "slack" else f"email:{ref}"
            for channel, key, ref in rows(db, "select channel, idempotency_key, external_ref from notification "
                                              "where status = 'sent'")}


def keys_since(slack: SlackPeer, smtp: SmtpPeer, since: tuple[int, int]) -> set[str]:
    """The delivery keys of the Slack messages and emails received after the first ``since`` of each."""
    keys = {"slack:" + meta["idempotency_key"] for m in slack.messages[since[0]:]
            if (meta := (m.get("metadata") or {}).get("event_payload") or {}).get("idempotency_key")}
    return keys | {"email:" + m.message["Message-ID"] for m in smtp.messages[since[1]:]}


def resent_after_marked(h: Harness) -> dict[str, list[int]]:
    """Keys delivered in a process lifetime after a crash by which they were already marked sent."""
    bad: dict[str, list[int]] = {}
    for key, lives in lifetimes(h).items():
        for crash, marked in enumerate(h.sent_by_crash):
            if key in marked and any(life > crash for life in lives):
                bad[key] = lives
                break
    return bad


def rows(db: Path, sql: str) -> list[tuple]:
    # Read-only: the last connection to close checkpoints the WAL into the database and deletes it, and
    # between a crash and the restart ours is the last one; the service must recover the WAL itself.
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def lifetimes(h: Harness) -> dict[str, list[int]]:
    """Per idempotency key, the process lifetime (number of crashes before) of each of its deliveries."""
    boundaries = getattr(h, "boundaries", [])
    slack_ends = [b[0] for b in boundaries]
    mail_ends = [b[1] for b in boundaries]
    out: dict[str, list[int]] = {}
    for i, m in enumerate(h.slack.messages):
        meta = (m.get("metadata") or {}).get("event_payload") or {}
        if meta.get("idempotency_key"):
            out.setdefault("slack:" + meta["idempotency_key"], []).append(bisect.bisect_right(slack_ends, i))
    for i, m in enumerate(h.smtp.messages):
        out.setdefault("email:" + m.message["Message-ID"], []).append(bisect.bisect_right(mail_ends, i))
    return out


def undelivered_slack(sent: list[tuple], got: Counter) -> list[str]:
    """The Slack rows marked sent (``(id, idempotency_key, kind, target)``) that never arrived, neither
    themselves nor, for rows merged into a backlog summary (R2.6), their summary."""
    summary_of: dict[int, str] = {}
    for _, key, kind, target in sent:
        if kind == "summary":
            for merged in (json.loads(target) if isinstance(target, str) else target).get("merged", []):
                summary_of[merged] = key
    return [f"{kind} {key}" for row_id, key, kind, _ in sent if got["slack:" + summary_of.get(row_id, key)] < 1]


def deliveries(h: Harness) -> Counter:
    """Deliveries per idempotency key (``slack:<key>``, ``email:<Message-ID>``)."""
    return Counter({key: len(lives) for key, lives in lifetimes(h).items()})


def test_crash_points_and_random_kills(tmp_path) -> None:
    h = Harness(tmp_path)
    try:
        all_events = events()
        batches = [all_events[i:i + 10] for i in range(0, EVENTS, 10)]
        h.start().stop()  # create the schema
        h.seed_digest_baseline()
        rng = random.Random(7)
        log_written = 0

        def append_log(n: int) -> None:
            nonlocal log_written
            with open(h.log, "a") as fh:
                for _ in range(n):
                    if log_written < LOG_LINES:
                        fh.write(f"tap CRITICAL integration=log-{log_written:02d} invalid_grant: "
                                 f"Token has been expired or revoked.\n")
                        log_written += 1

        # 1. Each crash point, armed for its first pass. Between two, an unarmed process recovers what the
        # crash left (settle) and is then killed too: a crash at a quiet moment.
        for n, point in enumerate(POINTS):
            if n:
                h.start()
                h.settle()
                h.server.kill9()
                h.crashed()
            if point == "mid_digest_claim":
                h.seed_digest_baseline()  # an earlier run may have claimed this minute already
            h.start(crashpoint=f"{point}:1")
            append_log(5)
            feed(h, batches, until_crash=True, deadline=20)
            if h.alive():  # a point the traffic so far did not reach: make the worker pass it
                wait_for(lambda: not h.alive(), timeout=45)
            assert h.server.proc.returncode == -9, f"{point}: the process did not kill itself"
            said = [line.strip() for line in h.server.lines if line.startswith(f"crashpoint {point}")]
            if said:
                print(said[-1])  # during_checkpoint: mid-copy, or as it returned when nothing was left to copy
            h.crashed()
        # 2. Random external kill -9s while traffic flows.
        for _ in range(RANDOM_KILLS):
            h.start()
            h.settle()
            append_log(3)
            stop = threading.Event()
            t = threading.Thread(target=lambda: feed(h, batches, deadline=5))
            t.start()
            time.sleep(rng.uniform(0.1, 1.2))
            h.server.kill9()
            stop.set()
            t.join()
            h.crashed()
        # 3. A last, clean run: everything left is sent and delivered.
        h.start()
        h.settle()
        append_log(LOG_LINES)
        feed(h, batches, deadline=60)
        assert batches == [], "events still unacknowledged"
        db = tmp_path / "alerts.db"
        time.sleep(LEASE_S + 1)
        wait_for(lambda: rows(db, "select count(*) from notification where status not in ('sent','cancelled')")
                 == [(0,)], timeout=90)
        wait_for(lambda: rows(db, "select count(*) from event where integration_id like 'log-%'")[0][0] >= LOG_LINES)
        time.sleep(1.5)  # let the tailer settle: a duplicate would show now

        # (a) every acknowledged event is stored, and its integration has an alert
        stored = {r[0] for r in rows(db, "select event_id from event where event_id is not null")}
        assert h.acked <= stored
        assert rows(db, "select count(distinct integration_id) from alert where integration_id like 'int-%'") == \
            [(INTEGRATIONS,)]
        # (b) every notification was delivered at least once
        got = deliveries(h)
        notes = rows(db, "select channel, idempotency_key, kind from notification where status = 'sent'")
        assert len(notes) >= 2 * INTEGRATIONS
        sent_slack = rows(db, "select id, idempotency_key, kind, target from notification "
                              "where status = 'sent' and channel = 'slack'")
        assert undelivered_slack(sent_slack, got) == []
        firing_mails = [m for m in h.smtp.messages if m.message["X-Alerts-Kind"] == "firing"]
        assert len({m.message["Message-ID"] for m in firing_mails}) == INTEGRATIONS + LOG_LINES
        digests = [m for m in h.smtp.messages if m.message["X-Alerts-Kind"] == "digest"]
        assert digests, "the digest claimed while crashing was never sent"
        # (c) deliveries per key <= 1 + the crashes while it was in flight: a key is delivered at most once
        # per process lifetime, so each repeat has a crash between it and the delivery before
        # (a crash can catch several rows in flight at once; each of them is sent once more)
        repeated = {key: lives for key, lives in lifetimes(h).items() if len(lives) != len(set(lives))}
        assert repeated == {}, f"delivered twice by one process: {repeated}"
        assert resent_after_marked(h) == {}, "delivered again after a crash by which it was marked sent"
        assert max(got.values()) <= 1 + h.crashes
        print(f"crash harness: {h.crashes} crashes, {h.settles} settled restarts, {sum(got.values())} deliveries, "
              f"{sum(n - 1 for n in got.values())} duplicates, max {max(got.values())} per key")
        # (d) no row is still leased (and after every restart, h.settle)
        assert h.settles == h.crashes - len(POINTS) + 1  # every restart but the armed ones settled
        assert rows(db, "select count(*) from notification where lease_until > datetime('now')") == [(0,)]
        # (e) the database is intact
        assert rows(db, "pragma integrity_check") == [("ok",)]
        # (f) each log line became exactly one event
        counts = rows(db, "select integration_id, count(*) from event where integration_id like 'log-%' "
                          "group by integration_id")
        assert len(counts) == LOG_LINES and {c for _, c in counts} == {1}
    finally:
        h.stop()
