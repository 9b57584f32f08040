"""``alerts scan`` as a user runs it: a real process, its stdout, stderr and exit status."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LOG = (
    "2024-05-01T12:00:00Z [info     ] INFO Starting sync cmd_type=elb name=tap-hubspot string_id=tap-hubspot\n"
    "2024-05-01T12:00:01Z [info     ] CRITICAL 401 Client Error: Unauthorized for url: https://api.hubapi.com/x "
    "cmd_type=elb name=tap-hubspot string_id=tap-hubspot\n"
    "2024-05-01T12:00:02Z [info     ] INFO 429 Too Many Requests cmd_type=elb string_id=tap-hubspot\n"
    "2024-05-01 12:00:03 INFO run integration=sf-prod access_token=abcdefghijklmnop\n"
    "Traceback (most recent call last):\n"
    '  File "tap.py", line 3, in <module>\n'
    "simple_salesforce.exceptions.SalesforceAuthenticationFailed: INVALID_SESSION_ID: Session expired or invalid "
    "(refresh_token=5Aep861TSESvWeug_xvFHRBTTbf)\n"
)


def alerts(*args: str, cwd: Path, input: bytes | None = None, config: str | None = None) -> subprocess.CompletedProcess:
    if config is not None:
        (cwd / "config.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTS_")}
    r = subprocess.run([sys.executable, "-m", "alerts", *args], cwd=cwd, capture_output=True, input=input,
                       env=env, timeout=120)
    r.stdout, r.stderr = r.stdout.decode(), r.stderr.decode()
    return r


DB = 'url = "sqlite:///var/alerts.db"\n'


def test_scan_json_lines_follow_the_contract_and_exit_0(tmp_path: Path) -> None:
    (tmp_path / "tap.log").write_text(LOG)
    r = alerts("scan", "tap.log", "--dry-run", "--json", cwd=tmp_path, config=f"[database]\n{DB}")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["path"], x["line_no"], x["integration_id"], x["code"]) for x in rows] == [
        ("tap.log", 2, "tap-hubspot", "access_token_expired"),
        ("tap.log", 7, "sf-prod", "access_token_expired"),
    ]
    assert rows[1]["integration_from"] == "context"
    assert "5Aep861TSESvWeug" not in r.stdout and "[REDACTED]" in rows[1]["text"]  # never print a secret
    assert "2 findings" in r.stderr
    assert not (tmp_path / "var" / "alerts.db").exists()  # --dry-run touches no database


def test_scan_ingests_findings_like_webhook_events_and_a_rescan_counts_nothing_twice(tmp_path: Path) -> None:
    (tmp_path / "tap.log").write_text(LOG)
    config = f"[database]\n{DB}[alerting]\ngroup_wait = \"0s\"\n"
    r = alerts("scan", "tap.log", cwd=tmp_path, config=config)
    assert r.returncode == 0, r.stderr
    assert "ingested 2 events (0 already seen), 2 alerts" in r.stderr
    listed = alerts("list", "--json", cwd=tmp_path)
    alerts_ = sorted((a["integration_id"], a["code"], a["count"], a["state"])
                     for a in map(json.loads, listed.stdout.splitlines()))
    assert alerts_ == [("sf-prod", "access_token_expired", 1, "firing"),
                       ("tap-hubspot", "access_token_expired", 1, "firing")]
    one = json.loads(listed.stdout.splitlines()[0])
    assert "5Aep861TSESvWeug" not in json.dumps(one)
    again = alerts("scan", "tap.log", cwd=tmp_path)
    assert "ingested 0 events (2 already seen)" in again.stderr
    with open(tmp_path / "tap.log", "a") as fh:  # the file changed: its findings are new observations
        fh.write("ERROR integration=sf-prod invalid_grant: expired access/refresh token\n")
    third = alerts("scan", "tap.log", "--json", cwd=tmp_path)
    assert third.returncode == 0
    counts = {a["integration_id"]: (a["code"], a["count"])
              for a in map(json.loads, alerts("list", "--json", cwd=tmp_path).stdout.splitlines())}
    assert counts["sf-prod"] == ("invalid_grant", 3)  # escalated to the more severe code


def test_gzip_stdin_and_several_files(tmp_path: Path) -> None:
    (tmp_path / "a.log.gz").write_bytes(gzip.compress(LOG.encode()))
    (tmp_path / "b.log").write_text("ERROR invalid_grant\n")
    r = alerts("scan", "a.log.gz", "-", "b.log", "--dry-run", "--json", cwd=tmp_path, input=LOG.encode(),
               config=f"[database]\n{DB}")
    assert r.returncode == 0, r.stderr
    got = [(x["path"], x["line_no"], x["integration_id"]) for x in map(json.loads, r.stdout.splitlines())]
    assert got == [("a.log.gz", 2, "tap-hubspot"), ("a.log.gz", 7, "sf-prod"), ("-", 2, "tap-hubspot"),
                   ("-", 7, "sf-prod"), ("b.log", 1, "b")]


def test_source_rules_from_the_config_apply_to_matching_paths(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "stitch-42.jsonl").write_text(
        json.dumps({"message": "tap - CRITICAL 401 Client Error: Unauthorized", "job": {"source": "hs-eu"}}) + "\n")
    config = (f"[database]\n{DB}\n[[log_sources]]\nname = \"stitch\"\npaths = [\"logs/*.jsonl\"]\nformat = \"json\"\n"
              "integration_field = \"job.source\"\nprovider = \"hubspot\"\nauth_method = \"oauth2\"\n")
    r = alerts("scan", "logs/stitch-42.jsonl", "--dry-run", "--json", cwd=tmp_path, config=config)
    row = json.loads(r.stdout)
    assert (row["integration_id"], row["provider"], row["auth_method"], row["code"]) == \
        ("hs-eu", "hubspot", "oauth2", "access_token_expired")
    r = alerts("scan", "-", "--integration", "fixed-id", "--dry-run", "--json", cwd=tmp_path,
               input=b"CRITICAL invalid_grant string_id=tap-x\n")
    assert json.loads(r.stdout)["integration_id"] == "fixed-id"


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        pytest.param(lambda p: None, ["missing.log"], "missing.log: No such file or directory", id="missing"),
        pytest.param(lambda p: (p / "dir").mkdir(), ["dir"], "dir: is a directory", id="directory"),
        pytest.param(lambda p: (p / "bad.gz").write_bytes(b"\x1f\x8b\x08\x00garbage"), ["bad.gz"], "bad.gz:",
                     id="corrupt gzip"),
    ],
)
def test_unreadable_input_is_one_clear_line_and_exit_1(tmp_path: Path, setup, args: list[str], message: str) -> None:
    setup(tmp_path)
    (tmp_path / "ok.log").write_text("ERROR invalid_grant\n")
    r = alerts("scan", *args, "--dry-run", cwd=tmp_path, config=f"[database]\n{DB}")
    assert r.returncode == 1
    err = r.stderr
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_permission_denied_is_reported(tmp_path: Path) -> None:
    secret = tmp_path / "secret.log"
    secret.write_text("x\n")
    secret.chmod(0)
    r = alerts("scan", "secret.log", "--dry-run", cwd=tmp_path, config=f"[database]\n{DB}")
    assert r.returncode == 1 and "Permission denied" in r.stderr


def test_both_engines_report_the_same_findings(tmp_path: Path) -> None:
    from alerts.scan import available_engines

    (tmp_path / "tap.log").write_text(LOG * 50)
    outputs = {e: alerts("scan", "tap.log", "--dry-run", "--json", "--engine", e, cwd=tmp_path,
                         config=f"[database]\n{DB}").stdout for e in available_engines()}
    assert len(set(outputs.values())) == 1 and len(next(iter(outputs.values())).splitlines()) == 100
