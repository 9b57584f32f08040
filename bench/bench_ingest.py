#!/usr/bin/env python3
"""Ingest load benchmark: `alerts serve` (SQLite and PostgreSQL) against Prometheus Alertmanager.

Same machine, same run, same load generator (wrk, 64 connections, 10 s, loopback): events cycle over
10,000 integrations (so dedup matters), one per request and in batches of 100. Alertmanager gets the
equivalent alerts on POST /api/v2/alerts with a null receiver. Each target first gets one event per
integration (the warm-up; --cold skips it), so the measured 10 s are the steady state both services
live in: repeats of failures they know. A third target, bench/floor_app.py, is the least a durable
Python endpoint can do per event on the same stack. Reports events/s, p50/p99 latency, server CPU per
event and peak RSS, and each figure's ratio to Alertmanager. Finally a fixed-count run from an empty
database (100,000 events) checks that exactly 10,000 alerts exist.

    python bench/bench_ingest.py [--duration 10] [--connections 64] [--workers 2] [--no-postgres]

Needs Debian's `wrk` and `prometheus-alertmanager` (apt-get install -y wrk prometheus-alertmanager).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
INTEGRATIONS = 10_000
ERROR = "invalid_grant: Token has been expired or revoked."

LUA_NATIVE = r"""
local counter = 0
local batch = tonumber(os.getenv("BATCH") or "1")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local parts = {}
  for i = 1, batch do
    counter = counter + 1
    parts[i] = string.format('{"integration_id":"int-%05d","provider":"google","error":"%s"}',
                             counter % 10000, "invalid_grant: Token has been expired or revoked.")
  end
  local body = parts[1]
  if batch > 1 then body = "[" .. table.concat(parts, ",") .. "]" end
  return wrk.format(nil, "/v1/events", nil, body)
end
"""

LUA_AM = r"""
local counter = 0
local batch = tonumber(os.getenv("BATCH") or "1")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local parts = {}
  for i = 1, batch do
    counter = counter + 1
    parts[i] = string.format('{"labels":{"alertname":"AuthFailure","integration_id":"int-%05d","provider":"google"},"annotations":{"error":"%s"}}',
                             counter % 10000, "invalid_grant: Token has been expired or revoked.")
  end
  return wrk.format(nil, "/api/v2/alerts", nil, "[" .. table.concat(parts, ",") .. "]")
end
"""

AM_CONFIG = """
route:
  receiver: "null"
  group_by: ["integration_id"]
receivers:
  - name: "null"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def pids_of(root_pid: int) -> list[int]:
    out = [root_pid]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == root_pid:
                out.append(int(p.name))
    return out


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def peak_rss_mib(pids: list[int]) -> float:
    peak = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return peak


def parse_wrk(text: str) -> dict[str, float]:
    def ms(value: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s|m)", value)
        if not m:
            return float("nan")
        n, unit = float(m.group(1)), m.group(2)
        return n * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else ""}


def warm_up(url: str, alertmanager: bool) -> None:
    """One event (alert) for each of the 10,000 integrations, so that the measured run is the steady state
    both services spend their lives in: repeats of failures they already know (dedup)."""
    with httpx.Client(base_url=url, timeout=120) as http:
        for r in range(INTEGRATIONS // 1000):
            ids = [f"int-{r * 1000 + i:05d}" for i in range(1000)]
            if alertmanager:
                body = [{"labels": {"alertname": "AuthFailure", "integration_id": i, "provider": "google"},
                         "annotations": {"error": ERROR}} for i in ids]
                http.post("/api/v2/alerts", json=body).raise_for_status()
            else:
                http.post("/v1/events", json=[{"integration_id": i, "provider": "google", "error": ERROR}
                                              for i in ids]).raise_for_status()


def run_wrk(url: str, lua: Path, *, batch: int, duration: int, connections: int, pids: list[int]) -> dict:
    cpu0 = cpu_seconds(pids)
    env = {**os.environ, "BATCH": str(batch)}
    proc = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua), url],
                          capture_output=True, text=True, env=env, timeout=duration + 60)
    cpu = cpu_seconds(pids) - cpu0
    result = parse_wrk(proc.stdout)
    result["events_per_s"] = result["rps"] * batch
    events = result["events_per_s"] * duration
    result["cpu_ms_per_event"] = 1000 * cpu / events if events else float("nan")
    result["peak_rss_mib"] = peak_rss_mib(pids)
    return result


class Alerts:
    def __init__(self, workdir: Path, db_url: str, workers: int, synchronous: str = "FULL") -> None:
        self.port = free_port()
        cfg = workdir / "config.toml"
        cfg.write_text(f'[database]\nurl = "{db_url}"\nsynchronous = "{synchronous}"\n'
                       '[alerting]\ngroup_wait = "1h"\n[log]\nlevel = "WARNING"\n')
        self.proc = subprocess.Popen([sys.executable, "-m", "alerts", "serve", "--config", str(cfg), "--port",
                                      str(self.port), "--workers", str(workers)], cwd=workdir,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.port}/healthz")
        time.sleep(1.0)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:  # a worker still draining wrk's connections: no need to wait
            for pid in pids_of(self.proc.pid):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            self.proc.wait(5)


class Alertmanager:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        (workdir / "am.yml").write_text(AM_CONFIG)
        self.proc = subprocess.Popen(["prometheus-alertmanager", f"--config.file={workdir / 'am.yml'}",
                                      f"--storage.path={workdir / 'am-data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.port}/-/ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def pg_schema_url(name: str) -> str | None:
    base = os.environ.get("ALERTS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        import sqlalchemy as sa

        eng = sa.create_engine(base)
        with eng.begin() as c:
            c.exec_driver_sql(f"drop schema if exists {name} cascade")
            c.exec_driver_sql(f"create schema {name}")
        eng.dispose()
    except Exception as exc:  # noqa: BLE001
        print(f"postgres unavailable: {exc}", file=sys.stderr)
        return None
    # random_page_cost 1.1, as PostgreSQL is configured on SSDs (the default 4 prices spinning disks and
    # makes the planner scan the whole alert table rather than look 100 fingerprints up in its index).
    return f"{base}?options=-csearch_path%3D{name}%20-crandom_page_cost%3D1.1"


class Floor:
    """bench/floor_app.py: the least a durable Python endpoint does per event (see its docstring)."""

    def __init__(self, workdir: Path, workers: int) -> None:
        self.port = free_port()
        env = {**os.environ, "DB": str(workdir / "floor.db"), "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.floor_app:app", "--port", str(self.port),
                                      "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
                                     cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.port}/ready")
        time.sleep(1.0)

    stop = Alerts.stop


def commit_stats(url: str) -> dict[str, float]:
    """Means of the ingest transaction metrics of the worker that answers the scrape (warm-up included)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    v = {(s.name, s.labels.get("phase", "")): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    n = v.get(("alerts_ingest_transaction_requests_count", ""), 0) or float("nan")
    out = {"requests_per_txn": v.get(("alerts_ingest_transaction_requests_sum", ""), 0) / n,
           "events_per_txn": v.get(("alerts_ingest_transaction_events_sum", ""), 0) / n}
    for phase in ("wait", "work", "commit"):
        out[f"{phase}_ms"] = 1000 * v.get(("alerts_ingest_transaction_seconds_sum", phase), 0) / n
    return out


def fixed_count(url: str, total: int = 100_000, batch: int = 100) -> float:
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as http:
        for r in range(total // batch):
            body = [{"integration_id": f"int-{(r * batch + i) % INTEGRATIONS:05d}", "provider": "google",
                     "error": ERROR} for i in range(batch)]
            resp = http.post("/v1/events", json=body)
            resp.raise_for_status()
    return time.perf_counter() - start


def analyze(db_url: str) -> None:
    """ANALYZE, as autovacuum would have by now (this machine's PostgreSQL runs with autovacuum off)."""
    import sqlalchemy as sa

    eng = sa.create_engine(db_url)
    with eng.begin() as c:
        c.exec_driver_sql("ANALYZE")
    eng.dispose()


def count_alerts(db_url: str) -> int:
    import sqlalchemy as sa

    eng = sa.create_engine(db_url)
    with eng.connect() as c:
        n = c.exec_driver_sql("select count(*) from alert").scalar_one()
    eng.dispose()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--no-alertmanager", action="store_true")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--cold", action="store_true", help="no warm-up: the run starts with no alerts at all")
    ap.add_argument("--normal", action="store_true",
                    help="also SQLite with synchronous=NORMAL: what the fsync of each commit costs")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lua_native, lua_am = work / "native.lua", work / "am.lua"
        lua_native.write_text(LUA_NATIVE)
        lua_am.write_text(LUA_AM)
        # name -> (start a server in a directory, its wrk script, its kind of warm-up, its database URL)
        targets: list[tuple[str, Any, Path, str]] = []
        if not args.no_alertmanager and shutil.which("prometheus-alertmanager"):
            targets.append(("alertmanager", lambda d, url: Alertmanager(d), lua_am, "alertmanager"))
        if not args.no_floor:
            targets.append(("floor (bare durable endpoint)", lambda d, url: Floor(d, args.workers), lua_native, "native"))
        if not args.no_sqlite:
            targets.append(("alerts, SQLite", lambda d, url: Alerts(d, url, args.workers), lua_native, "sqlite"))
        if args.normal:
            targets.append(("alerts, SQLite, synchronous=NORMAL",
                            lambda d, url: Alerts(d, url, args.workers, "NORMAL"), lua_native, "sqlite"))
        if not args.no_postgres and pg_schema_url("bench_ingest"):
            targets.append(("alerts, PostgreSQL", lambda d, url: Alerts(d, url, args.workers), lua_native, "postgres"))
        for name, start, lua, kind in targets:
            for batch in (1, 100):
                d = work / f"{len(results)}"
                d.mkdir()
                db_url = f"sqlite:///{d}/alerts.db" if kind == "sqlite" else pg_schema_url("bench_ingest") or ""
                server = start(d, db_url)
                try:
                    if not args.cold:
                        warm_up(f"http://127.0.0.1:{server.port}", alertmanager=kind == "alertmanager")
                        if kind == "postgres":
                            analyze(db_url)
                    pids = pids_of(server.proc.pid)
                    r = run_wrk(f"http://127.0.0.1:{server.port}", lua, batch=batch, duration=args.duration,
                                connections=args.connections, pids=pids)
                    if kind != "alertmanager" and not name.startswith("floor"):
                        r.update(commit_stats(f"http://127.0.0.1:{server.port}"))
                finally:
                    server.stop()
                r.update(target=name, batch=batch)
                results.append(r)
                print(f"{name:30} batch {batch:3}: {r['events_per_s']:10.0f} events/s  p50 {r['p50_ms']:7.1f} ms  "
                      f"p99 {r['p99_ms']:7.1f} ms  cpu {r['cpu_ms_per_event']:.3f} ms/event  "
                      f"rss {r['peak_rss_mib']:.0f} MiB  non-2xx {r['non2xx']} {r['socket_errors']}", flush=True)
                if "requests_per_txn" in r:
                    print(f"{'':30}   one worker's transactions: {r['requests_per_txn']:.1f} requests, "
                          f"{r['events_per_txn']:.0f} events each; wait {r['wait_ms']:.2f} ms, work "
                          f"{r['work_ms']:.2f} ms, commit {r['commit_ms']:.2f} ms (means)", flush=True)
        # Fixed count from an empty database: 100,000 events over 10,000 integrations -> exactly 10,000 alerts.
        for name, start, _, kind in targets:
            if kind not in ("sqlite", "postgres") or "NORMAL" in name:
                continue
            d = work / f"fixed-{kind}"
            d.mkdir()
            db_url = f"sqlite:///{d}/alerts.db" if kind == "sqlite" else pg_schema_url("bench_ingest") or ""
            server = start(d, db_url)
            try:
                secs = fixed_count(f"http://127.0.0.1:{server.port}")
            finally:
                server.stop()
            n = count_alerts(db_url)
            print(f"fixed count, {name}: 100000 events in {secs:.1f} s ({100000 / secs:.0f}/s), alerts = {n} "
                  f"({'OK' if n == INTEGRATIONS else 'WRONG'})")
    am = {r["batch"]: r for r in results if r["target"] == "alertmanager"}
    if am:
        print("\n| target | batch | events/s | ratio to Alertmanager | p50 ms | p99 ms | CPU ms/event | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            ratio = r["events_per_s"] / am[r["batch"]]["events_per_s"] if r["batch"] in am else float("nan")
            print(f"| {r['target']} | {r['batch']} | {r['events_per_s']:.0f} | {ratio:.2f}× | {r['p50_ms']:.1f} | "
                  f"{r['p99_ms']:.1f} | {r['cpu_ms_per_event']:.3f} | {r['peak_rss_mib']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
