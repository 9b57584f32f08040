"""Crash harness on PostgreSQL (R5.5): three replicas share one database; one is killed with
``kill -9`` in the middle of its work (twice, once at a crash point inside a claim), and every
backend of the service is terminated with ``pg_terminate_backend`` while traffic flows. Afterwards
every acknowledged event has its alert and every notification went out, at most once per crash extra.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

import httpx
import pytest
import sqlalchemy as sa

from tests.crash.test_crash_harness import (
    INTEGRATIONS,
    LEASE_S,
    deliveries,
    events,
    keys_since,
    service_config,
    undelivered_slack,
    wait_for,
)
from tests.peers.postgres import BASE, fresh_schema
from tests.peers.server import ServerProcess
from tests.peers.slack import SlackPeer
from tests.peers.smtp import SmtpPeer

pytestmark = [pytest.mark.crash, pytest.mark.postgres]


def test_three_replicas_survive_kills_and_terminated_backends(tmp_path) -> None:
    with fresh_schema() as schema_url:
        app_name = f"alerts-crash-{uuid.uuid4().hex[:8]}"
        url = f"{schema_url}&application_name={app_name}"
        slack, smtp = SlackPeer().start(), SmtpPeer().start()
        cfg = tmp_path / "config.toml"
        cfg.write_text(service_config(url, slack, smtp))

        base_env = {k: v for k, v in os.environ.items() if k != "ALERTS_CRASHPOINT"}

        def start(crashpoint: str | None = None) -> ServerProcess:
            env = {**base_env, "ALERTS_TEST_BUILD": "1"}
            if crashpoint:
                env["ALERTS_CRASHPOINT"] = crashpoint
            return ServerProcess(cwd=tmp_path, config=cfg, env=env).start(timeout=60)

        replicas = [start(), start(), start("after_claim_commit:1")]
        acked: set[str] = set()
        lock = threading.Lock()
        pending = [events()[i:i + 10] for i in range(0, 500, 10)]
        rng = random.Random(11)
        crashes = 0

        def feeder() -> None:
            while True:
                with lock:
                    if not pending:
                        return
                    batch = pending.pop(0)
                live = [r for r in replicas if r.proc and r.proc.poll() is None]
                target = rng.choice(live) if live else None
                ok = False
                if target is not None:
                    try:
                        ok = httpx.post(target.url + "/v1/events", json=batch, timeout=10).status_code == 202
                    except httpx.HTTPError:
                        ok = False
                with lock:
                    if ok:
                        acked.update(e["event_id"] for e in batch)
                    else:
                        pending.append(batch)
                if not ok:
                    time.sleep(0.05)

        def q(sql: str):
            with eng.connect() as c:
                return c.exec_driver_sql(sql).all()

        marked: list[tuple[set[str], tuple[int, int]]] = []

        def snapshot() -> None:
            """The keys marked sent now, and where the peers' records stand: none may arrive again later."""
            time.sleep(0.3)  # bytes a killed replica sent may still be being read
            # marks first: a row is marked only once its message arrived, so it arrived before ``counts``.
            # Only rows claimed once: a row whose lease ran out while it was being sent may be in flight at
            # another replica (R2.3 allows that repeat); a row marked sent cannot be claimed again.
            sent = q("select channel, idempotency_key, external_ref from notification where status = 'sent' "
                     "and attempts = 1")
            counts = (len(slack.messages), len(smtp.messages))
            marked.append(({f"slack:{k}" if ch == "slack" else f"email:{ref}" for ch, k, ref in sent}, counts))

        eng = sa.create_engine(schema_url, pool_pre_ping=True)  # not the service's application_name: not terminated
        threads = [threading.Thread(target=feeder) for _ in range(3)]
        try:
            for t in threads:
                t.start()
            # the armed replica kills itself at its first claim; kill another one from outside
            wait_for(lambda: replicas[2].proc.poll() is not None, timeout=60)
            crashes += 1
            snapshot()
            time.sleep(rng.uniform(0.2, 0.8))
            replicas[1].kill9()
            crashes += 1
            snapshot()
            admin = sa.create_engine(BASE)
            with admin.begin() as conn:  # every backend of the service dies mid-transaction
                conn.exec_driver_sql("select pg_terminate_backend(pid) from pg_stat_activity "
                                     f"where application_name = '{app_name}'")
            admin.dispose()
            snapshot()
            replicas[1] = start()
            replicas[2] = start()
            for t in threads:
                t.join(120)
            assert not pending, "events still unacknowledged"
            time.sleep(LEASE_S + 1)
            wait_for(lambda: q("select count(*) from notification where status not in ('sent','cancelled')")
                     == [(0,)], timeout=90)
            stored = {r[0] for r in q("select event_id from event")}
            assert acked <= stored
            assert q("select count(*) from alert") == [(INTEGRATIONS,)]
            got = deliveries(type("H", (), {"slack": slack, "smtp": smtp})())
            assert q("select count(*) from notification where channel = 'slack' and status != 'sent'") == [(0,)]
            assert undelivered_slack(q("select id, idempotency_key, kind, target from notification "
                                       "where channel = 'slack'"), got) == []
            firing = {m.message["Message-ID"] for m in smtp.messages if m.message["X-Alerts-Kind"] == "firing"}
            assert len(firing) == INTEGRATIONS
            # per key at most one extra delivery per incident (two kills + the terminated backends)
            assert max(got.values()) <= 1 + crashes + 1
            # and never again once marked sent (R2.3: only a crash between sending and marking repeats one)
            again = [sorted(sent & keys_since(slack, smtp, counts)) for sent, counts in marked]
            assert again == [[] for _ in marked], again
            assert q("select count(*) from notification where lease_until > now()") == [(0,)]
        finally:
            eng.dispose()
            for r in replicas:
                r.stop()
            slack.stop()
            smtp.stop()
