"""Following log files (alerts/tail.py): rotation, truncation, partial lines, restarts — with real
files and a real SQLite database. Each ``poll_once()`` is one round of what ``alerts serve`` does."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from alerts.catalog import Catalog
from alerts.config import Settings
from alerts.scan import available_engines
from alerts.storage import LogOffset
from alerts.tail import LogTailer
from tests.helpers import alerts, events

FAIL_SF = b"ERROR integration=sf-prod invalid_grant: expired access/refresh token\n"
FAIL_HS = b"CRITICAL integration=hs-eu 401 Client Error: Unauthorized for url: https://api.hubapi.com/x\n"
NOISE = b"INFO synced 200 rows of contacts\n"


@pytest.fixture(params=available_engines())
def scan_engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def make_tailer(make_settings: Callable[..., Settings], engine: Any, catalog: Catalog, clock: Any, logs: Path,
                scan_engine: str) -> Callable[..., LogTailer]:
    made: list[LogTailer] = []

    def make(**source: Any) -> LogTailer:
        spec = {"name": "taps", "paths": [str(logs / "*.log")], "follow": True, **source}
        settings = make_settings(log_sources=[spec])
        tailer = LogTailer(engine=engine, settings=settings, catalog=catalog, clock=clock, scan_engine=scan_engine)
        made.append(tailer)
        return tailer

    yield make
    for t in made:
        t.close()


def offsets(engine: Any) -> dict[str, LogOffset]:
    with Session(engine) as s:
        return {Path(r.path).name: r for r in s.exec(select(LogOffset)).all()}


def failures(engine: Any) -> list[tuple[str, str]]:
    return [(e.integration_id, e.code) for e in events(engine) if e.code]


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def test_appended_failures_become_alerts_with_the_offset_in_the_same_commit(make_tailer, logs, engine) -> None:
    log = logs / "app.log"
    log.write_bytes(NOISE + FAIL_SF)
    tailer = make_tailer()
    assert tailer.poll_once() == 1
    assert [(a.integration_id, a.code, a.count) for a in alerts(engine)] == [("sf-prod", "invalid_grant", 1)]
    assert offsets(engine)["app.log"].offset == log.stat().st_size
    append(log, NOISE * 3 + FAIL_SF)
    assert tailer.poll_once() == 1
    assert alerts(engine)[0].count == 2
    assert tailer.poll_once() == 0  # nothing new: nothing read twice
    assert offsets(engine)["app.log"].offset == log.stat().st_size


def test_a_partial_last_line_waits_for_its_newline(make_tailer, logs, engine) -> None:
    log = logs / "app.log"
    log.write_bytes(NOISE + FAIL_SF.rstrip(b"\n"))
    tailer = make_tailer()
    assert tailer.poll_once() == 0
    assert offsets(engine)["app.log"].offset == len(NOISE)  # the held line is not committed
    append(log, b"   (attempt 3)\n")
    assert tailer.poll_once() == 1
    assert events(engine)[0].error.endswith("(attempt 3)")


def test_rename_rotation_reads_the_old_file_to_its_end(make_tailer, logs, engine) -> None:
    log = logs / "app.log"
    log.write_bytes(NOISE)
    tailer = make_tailer()
    tailer.poll_once()
    old_inode = log.stat().st_ino
    append(log, FAIL_SF + FAIL_HS.rstrip(b"\n"))  # written just before rotation, last line unfinished
    os.rename(log, logs / "app.log.1")  # not matched by *.log
    log.write_bytes(b"ERROR integration=new-one invalid_grant\n")
    assert tailer.poll_once() == 3
    assert sorted(failures(engine)) == [("hs-eu", "access_token_expired"), ("new-one", "invalid_grant"),
                                        ("sf-prod", "invalid_grant")]
    row = offsets(engine)["app.log"]
    assert row.inode == log.stat().st_ino != old_inode and row.offset == log.stat().st_size
    assert tailer.poll_once() == 0


def test_rotated_names_inside_the_glob_are_the_same_file_not_a_new_one(make_tailer, logs, engine) -> None:
    log = logs / "app.log"
    log.write_bytes(FAIL_SF)
    tailer = make_tailer(paths=[str(logs / "app.log*")])
    assert tailer.poll_once() == 1
    os.rename(log, logs / "app.log.1")
    append(logs / "app.log.1", FAIL_HS)  # a late write through the old descriptor
    log.write_bytes(NOISE)
    assert tailer.poll_once() == 1  # only the late line: app.log.1 is not re-read from 0
    assert sorted(offsets(engine)) == ["app.log", "app.log.1"]
    # and a restart agrees
    fresh = make_tailer(paths=[str(logs / "app.log*")])
    assert fresh.poll_once() == 0
    assert len(failures(engine)) == 2


def test_copytruncate_restarts_at_zero(make_tailer, logs, engine) -> None:
    log = logs / "app.log"
    log.write_bytes(NOISE * 5 + FAIL_SF)
    tailer = make_tailer()
    assert tailer.poll_once() == 1
    shutil.copy(log, logs / "app.log.1")
    with open(log, "r+b") as fh:  # logrotate's copytruncate
        fh.truncate(0)
    append(log, FAIL_HS)
    assert tailer.poll_once() == 1
    assert failures(engine)[-1] == ("hs-eu", "access_token_expired")
    assert offsets(engine)["app.log"].offset == len(FAIL_HS)


def test_truncated_and_regrown_past_the_offset_is_still_seen_as_new(make_tailer, logs, engine) -> None:
    log = logs / "app.log"
    log.write_bytes(NOISE + FAIL_SF)
    tailer = make_tailer()
    tailer.poll_once()
    log.write_bytes(b"2024-05-02 new run\n" + NOISE * 4 + FAIL_HS)  # truncated and rewritten between polls
    assert tailer.poll_once() == 1
    assert failures(engine) == [("sf-prod", "invalid_grant"), ("hs-eu", "access_token_expired")]


def test_restart_mid_file_neither_misses_nor_repeats(make_tailer, logs, engine) -> None:
    log = logs / "app.log"
    log.write_bytes(FAIL_SF + b"INFO run started integration=pg-main\n" + b"Traceback (most recent call last):\n")
    first = make_tailer()
    assert first.poll_once() == 1
    append(log, b'  File "db.py", line 1\npsycopg.OperationalError: FATAL:  password authentication fai')
    first.poll_once()
    first.close()  # the service stops with a line half written
    append(log, b"led for user \"etl\"\n" + FAIL_HS)
    second = make_tailer()
    assert second.poll_once() == 2
    # the traceback, completed after the restart, still belongs to the integration named before it
    assert failures(engine) == [("sf-prod", "invalid_grant"), ("pg-main", "invalid_credentials"),
                                ("hs-eu", "access_token_expired")]
    assert json.loads(offsets(engine)["app.log"].context)["integration_id"] == "hs-eu"
    assert make_tailer().poll_once() == 0


def test_offset_and_events_commit_together_or_not_at_all(make_tailer, logs, engine, monkeypatch) -> None:
    from alerts import tail

    log = logs / "app.log"
    log.write_bytes(FAIL_SF + FAIL_HS)
    tailer = make_tailer()
    real = tail.apply_event
    calls = []

    def crash_on_second(session, event, **kw):
        calls.append(event.integration_id)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return real(session, event, **kw)

    monkeypatch.setattr(tail, "apply_event", crash_on_second)
    with pytest.raises(RuntimeError):
        tailer.poll_once()
    assert events(engine) == [] and offsets(engine) == {}  # the first event was rolled back with the offset
    monkeypatch.setattr(tail, "apply_event", real)
    assert tailer.poll_once() == 2  # the same tailer reads again what it could not commit
    assert len(events(engine)) == 2 and offsets(engine)["app.log"].offset == log.stat().st_size


def test_new_files_matching_the_glob_are_picked_up_and_gz_is_not_followed(make_tailer, logs, engine) -> None:
    tailer = make_tailer()
    assert tailer.poll_once() == 0
    (logs / "tap-stripe.log").write_bytes(b"ERROR invalid api key provided\n")
    (logs / "old.log.gz").write_bytes(b"\x1f\x8b garbage")
    assert tailer.poll_once() == 1
    assert failures(engine) == [("tap-stripe", "invalid_api_key")]
    assert sorted(offsets(engine)) == ["tap-stripe.log"]


def test_a_line_without_newline_keeps_memory_bounded(make_tailer, logs, engine) -> None:
    log = logs / "app.log"
    with open(log, "wb") as fh:
        for _ in range(16):
            fh.write(b"q" * (1 << 20))  # 16 MiB and no newline yet
    tailer = make_tailer()
    tailer.poll_once()
    [f] = tailer._files["taps"].values()
    assert f.scanner.pending == 16 << 20 and len(f.scanner._carry) <= 64 * 1024
    assert offsets(engine).get("app.log") is None or offsets(engine)["app.log"].offset == 0
    append(log, b"\n" + FAIL_SF)
    assert tailer.poll_once() == 1
    assert offsets(engine)["app.log"].offset == log.stat().st_size


def test_read_from_end_skips_what_was_there_at_first_start(make_tailer, logs, engine) -> None:
    log = logs / "app.log"
    log.write_bytes(FAIL_SF + b"half a li")
    tailer = make_tailer(read_from="end")
    assert tailer.poll_once() == 0
    append(log, b"ne invalid_grant\n" + FAIL_HS)
    assert tailer.poll_once() == 1  # the fragment of the old line is skipped, the new line is read
    assert failures(engine) == [("hs-eu", "access_token_expired")]


def test_json_source_with_field_rules(make_tailer, logs, engine, catalog) -> None:
    log = logs / "meltano.log"
    lines = [{"event": "CRITICAL invalid_grant: Token has been expired or revoked.", "string_id": "tap-google-ads",
              "timestamp": "2026-11-28T08:59:00Z", "level": "info"},
             {"event": "INFO done", "string_id": "tap-google-ads"}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    tailer = make_tailer(format="json", labels={"team": "growth"})
    assert tailer.poll_once() == 1
    [a] = alerts(engine)
    assert (a.integration_id, a.provider, a.code) == \
        ("tap-google-ads", catalog.canonical_provider("tap-google-ads"), "invalid_grant")
    assert a.labels["team"] == "growth" and a.labels["log_source"] == "taps"
    assert a.first_seen.isoformat() == "2026-11-28T08:59:00+00:00"


def test_alerts_serve_follows_logs_and_a_kill_9_loses_and_repeats_nothing(tmp_path: Path) -> None:
    import sqlite3

    from tests.peers.server import ServerProcess

    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_bytes(NOISE + FAIL_SF + FAIL_HS)
    config = tmp_path / "config.toml"
    config.write_text(
        '[database]\nurl = "sqlite:///var/alerts.db"\n[alerting]\ngroup_wait = "0s"\n'
        f'[[log_sources]]\nname = "app"\npaths = ["{logs}/*.log"]\nfollow = true\npoll_interval = "100ms"\n')

    def db(sql: str) -> list[tuple]:
        con = sqlite3.connect(tmp_path / "var" / "alerts.db")
        try:
            return con.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    def caught_up() -> bool:
        return db("select offset from log_offset") == [(log.stat().st_size,)]

    server = ServerProcess(cwd=tmp_path, config=config).start()
    try:
        server.wait_for(caught_up)
        with server.client() as http:
            got = sorted((a["integration_id"], a["code"]) for a in http.get("/v1/alerts").json()["alerts"])
        assert got == [("hs-eu", "access_token_expired"), ("sf-prod", "invalid_grant")]
        server.kill9()
        append(log, FAIL_SF + b"ERROR integration=pg-main password authentication failed for user \"etl\"\n")
        server.start()
        server.wait_for(caught_up)
    finally:
        server.stop()
    assert sorted(db("select integration_id, count(*) from event group by integration_id")) == [
        ("hs-eu", 1), ("pg-main", 1), ("sf-prod", 2)]


@pytest.mark.postgres
def test_tailing_on_postgres_with_64_bit_inodes_and_offsets(make_settings, catalog, clock, logs) -> None:
    from alerts import storage
    from alerts.tail import OffsetState, save_offset
    from tests.peers.postgres import fresh_schema

    with fresh_schema() as url:
        settings = make_settings(database={"url": url},
                                 log_sources=[{"name": "taps", "paths": [str(logs / "*.log")], "follow": True}])
        engine = storage.make_engine(url)
        storage.upgrade(engine)
        with storage.session_scope(engine) as s:  # a file on XFS with a large inode, 5 GiB in
            save_offset(s, OffsetState("/big/old.log", 2**33, 2**40 + 7, 5 * 2**30), now=clock())
        (logs / "app.log").write_bytes(NOISE + FAIL_SF)
        tailer = LogTailer(engine=engine, settings=settings, catalog=catalog, clock=clock)
        try:
            assert tailer.poll_once() == 1
        finally:
            tailer.close()
        rows = offsets(engine)
        assert rows["old.log"].inode == 2**40 + 7 and rows["old.log"].offset == 5 * 2**30
        assert rows["app.log"].offset == len(NOISE + FAIL_SF)
        assert [(a.integration_id, a.code) for a in alerts(engine)] == [("sf-prod", "invalid_grant")]
        engine.dispose()


def test_a_failed_commit_while_draining_a_rotated_file_is_retried(make_tailer, logs, engine, monkeypatch) -> None:
    from alerts import tail

    log = logs / "app.log"
    log.write_bytes(NOISE)
    tailer = make_tailer()
    tailer.poll_once()
    append(log, FAIL_SF + FAIL_HS.rstrip(b"\n"))
    os.rename(log, logs / "app.log.1")
    log.write_bytes(NOISE)
    real, failures_left = tail.apply_event, [1]

    def flaky(session, event, **kw):
        if failures_left and failures_left.pop():
            raise RuntimeError("database is locked")
        return real(session, event, **kw)

    monkeypatch.setattr(tail, "apply_event", flaky)
    with pytest.raises(RuntimeError):
        tailer.poll_once()
    assert events(engine) == []
    assert tailer.poll_once() == 2  # the old file, still open, is drained again
    assert sorted(failures(engine)) == [("hs-eu", "access_token_expired"), ("sf-prod", "invalid_grant")]
    assert offsets(engine)["app.log"].inode == log.stat().st_ino
