#!/usr/bin/env python3
"""Stitch poller cost: one poll of an account with many sources, against the local Connect API peer.

An account with N sources (default 1000; 100 extractions a page, as Stitch pages them), of which F
(default 100) have a failed extraction that is an authentication failure. Measures, on SQLite:

1. the first poll: every page, the sources list, F events and F alerts in one transaction;
2. a steady-state poll (nothing new: each failed job is already stored), which is what runs every
   ``poll_interval`` almost all the time;
3. the same with one short description per poll that needs its extraction log read and scanned.

    python bench/bench_stitch.py [--sources 1000] [--failed 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts import storage  # noqa: E402
from alerts.catalog import load_catalog  # noqa: E402
from alerts.config import load_settings  # noqa: E402
from alerts.stitch_poller import StitchPoller  # noqa: E402
from tests.peers.stitch import CLIENT_ID, TOKEN, extraction, source, stitch_server  # noqa: E402

LOG = (ROOT / "tests" / "data" / "stitch" / "extraction.log").read_text()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--failed", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    now = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp, stitch_server() as (url, state):
        for i in range(args.sources):
            sid = 100000 + i
            state.sources.append(source(sid, f"hubspot_{i}", f"HubSpot {i}", "platform.hubspot"))
            failed = i < args.failed
            state.set_extraction(extraction(
                sid, f"job-{i}", completed=now - timedelta(minutes=10), tap_exit=1 if failed else 0,
                tap_description="401 Client Error: Unauthorized for url: https://api.hubapi.com/crm/v3/objects"
                if failed else None))
        settings = load_settings(None, database={"url": f"sqlite:///{tmp}/alerts.db"},
                                 stitch={"client_id": CLIENT_ID, "token": TOKEN, "base_url": url,
                                         "allow_loopback_base_url": True})
        engine = storage.make_engine(settings.database_url)
        storage.upgrade(engine)
        poller = StitchPoller(engine=engine, settings=settings, catalog=load_catalog(), clock=lambda: now)
        loop = asyncio.new_event_loop()

        def timed(at: datetime) -> tuple[float, object]:
            t0 = time.perf_counter()
            result = loop.run_until_complete(poller.poll_once(at))
            return time.perf_counter() - t0, result

        first, result = timed(now)
        print(f"first poll: {args.sources} sources, {args.failed} new failures: {first * 1000:.0f} ms "
              f"({result.accepted} events, {len(result.alert_ids)} alerts)")  # type: ignore[attr-defined]
        steady = [timed(now + timedelta(minutes=5 * (r + 1)))[0] for r in range(args.rounds)]
        print(f"steady-state poll (nothing new): median {statistics.median(steady) * 1000:.0f} ms "
              f"over {args.rounds} polls")
        with_log = []
        for r in range(args.rounds):
            sid = 100000 + args.failed + r
            job = f"short-{r}"
            item = extraction(sid, job, completed=now, tap_exit=1, tap_description="Tap failed with code 1")
            state.set_extraction(item)
            state.logs[item["job_name"]] = LOG
            with_log.append(timed(now + timedelta(hours=1, minutes=5 * r))[0])
        print(f"poll with one extraction log to read and scan: median {statistics.median(with_log) * 1000:.0f} ms")
        loop.run_until_complete(poller.aclose())
        loop.close()
        engine.dispose()


if __name__ == "__main__":
    main()
