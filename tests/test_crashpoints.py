"""Crash points (R5.3): armed only in test builds, and ``during_checkpoint`` kills mid-checkpoint."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    from alerts.storage import make_engine, checkpoint
    url = sys.argv[1]
    engine = make_engine(url)
    with engine.connect() as conn:  # a WAL with frames to copy, left there by autocheckpoint=off
        raw = conn.connection.driver_connection
        raw.execute("PRAGMA wal_autocheckpoint=0")
        raw.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        raw.execute("BEGIN")
        raw.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 500,) for _ in range(20000)])
        raw.execute("COMMIT")
    print("checkpointing", flush=True)
    checkpoint(engine)
    print("survived", flush=True)
""")


def run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    db = tmp_path / "c.db"
    return subprocess.run([sys.executable, "-c", SCRIPT, f"sqlite:///{db}"], capture_output=True, text=True,
                          env={**env, "PATH": "/usr/bin:/bin"}, cwd=Path(__file__).resolve().parent.parent,
                          timeout=60)


def test_during_checkpoint_kills_while_the_database_file_is_written(tmp_path) -> None:
    got = run(tmp_path, {"ALERTS_TEST_BUILD": "1", "ALERTS_CRASHPOINT": "during_checkpoint:1"})
    assert got.returncode == -9, got.stderr
    assert "checkpointing" in got.stdout and "survived" not in got.stdout
    assert "killed while c.db is being written" in got.stderr
    con = sqlite3.connect(tmp_path / "c.db")  # recovery: the WAL still holds every committed row
    try:
        assert con.execute("pragma integrity_check").fetchall() == [("ok",)]
        assert con.execute("select count(*) from t").fetchone() == (20000,)
    finally:
        con.close()


@pytest.mark.parametrize("env", [
    {"ALERTS_CRASHPOINT": "during_checkpoint:1"},  # not a test build: a stray variable kills nothing
    {"ALERTS_TEST_BUILD": "1", "ALERTS_CRASHPOINT": "during_checkpoint:2"},  # armed for a later pass
    {"ALERTS_TEST_BUILD": "1", "ALERTS_CRASHPOINT": "no_such_point:1"},
])
def test_unarmed_checkpoint_completes(tmp_path, env) -> None:
    got = run(tmp_path, env)
    assert got.returncode == 0, got.stderr
    assert "survived" in got.stdout
    con = sqlite3.connect(tmp_path / "c.db")
    try:
        assert con.execute("select count(*) from t").fetchone() == (20000,)
    finally:
        con.close()
