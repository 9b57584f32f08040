"""Log line rules (alerts/sources/logs.py): decoding, timestamps, and whom a line belongs to."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from alerts.config import ConfigError, LogSource, load_settings
from alerts.sources.logs import Ident, LineRules, decode_line, parse_timestamp, rules_for, stem


def rules(**kw) -> LineRules:
    return LineRules.from_source(LogSource(name=kw.pop("name", "t"), paths=["/x/*.log"], **kw))


@pytest.mark.parametrize(
    ("line", "integration"),
    [
        pytest.param("2022-09-19T13:53:43.054384Z [info     ] INFO Starting sync cmd_type=elb consumer=False "
                     "name=tap-github producer=True stdio=stderr string_id=tap-github", "tap-github",
                     id="meltano console output names the plugin"),
        pytest.param("[2023-07-23, 03:52:47] {taskinstance.py:1144} INFO - Dependencies all met for "
                     "dep_context=non-requeueable deps ti=<TaskInstance: tutorial_dag.load "
                     "manual__2023-07-22T22:22:25.891267+00:00 [queued]>", "tutorial_dag",
                     id="airflow task instance: the dag is the integration"),
        pytest.param("[2024-01-15, 10:00:02 UTC] {taskinstance.py:1400} INFO - Marking task as FAILED. "
                     "dag_id=hubspot_daily, task_id=extract, execution_date=20240115T100000", "hubspot_daily",
                     id="airflow's failure summary"),
        pytest.param("level=error integration=sf-prod msg=\"sync failed\"", "sf-prod", id="key=value"),
        pytest.param('ts=1 connector_id="warehouse_pg" err="x"', "warehouse_pg", id="quoted key=value"),
        pytest.param("2019-04-18 13:49:12,582Z    tap - CRITICAL 401 Client Error", None,
                     id="singer/stitch output does not name the tap"),
    ],
)
def test_builtin_rules_find_the_integration_in_common_formats(line: str, integration: str | None) -> None:
    own = LineRules.default().parse(line.encode()).own
    assert (own.integration_id if own else None) == integration


def test_a_configured_regex_replaces_the_builtin_rules_and_fills_provider_and_account() -> None:
    r = rules(integration_regex=[r"\[(?P<provider>\w+)/(?P<account>\d+)/(?P<integration>[\w-]+)\]"])
    own = r.parse(b"ERROR [salesforce/42/sf-prod] INVALID_SESSION_ID").own
    assert own == Ident("sf-prod", provider="salesforce", account_id="42")
    # the built-in Meltano rule is gone
    assert r.parse(b"x string_id=tap-github").own is None


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        pytest.param("/var/log/taps/tap-hubspot.log", "{integration}.log", "tap-hubspot", id="basename"),
        pytest.param("/var/log/taps/tap-hubspot.log.1", "{integration}.log", "tap-hubspot", id="rotated copy"),
        pytest.param("/logs/dag_id=ads/run_id=m1/task_id=load/attempt=1.log", "dag_id={integration}/**", "ads",
                     id="airflow log path"),
        pytest.param("/srv/xero/acme.log", "{provider}/{integration}.log", "acme", id="provider from a directory"),
        pytest.param("/var/log/other.txt", "{integration}.log", "other", id="no match: the file's own name"),
    ],
)
def test_filename_pattern(path: str, pattern: str, expected: str) -> None:
    ident = rules(filename_pattern=pattern, integration_regex=[]).fallback(path)
    assert ident.integration_id == expected
    if pattern.startswith("{provider}"):
        assert ident.provider == "xero"


def test_fixed_integration_id_is_used_when_nothing_else_names_one() -> None:
    r = rules(integration_id="stitch-hubspot", integration_regex=[])
    assert r.fallback("/var/log/tap.log") == Ident("stitch-hubspot", via="fixed")
    assert LineRules.default().fallback("/var/log/tap-stripe.log.2.gz") == Ident("tap-stripe", via="default")
    assert LineRules.default().fallback("-").integration_id == "stdin"


def test_json_fields_default_to_meltano_and_structlog_names() -> None:
    line = json.dumps({"event": "CRITICAL 401 Client Error: Unauthorized", "level": "info", "string_id": "tap-x",
                       "timestamp": "2024-05-01T12:00:00.5Z", "cmd_type": "elb"}).encode()
    rec = LineRules.default("json").parse(line)
    assert rec.is_json and rec.texts == ["CRITICAL 401 Client Error: Unauthorized"]
    assert rec.own == Ident("tap-x")
    assert rec.level == "info"
    assert rec.occurred_at == datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)


def test_json_field_paths_are_configurable_and_dotted() -> None:
    r = rules(format="json", message_field=["log.msg"], integration_field="ctx.pipeline", timestamp_field="t")
    rec = r.parse(json.dumps({"log": {"msg": "boom"}, "ctx": {"pipeline": "pg-prod", "provider": "x"},
                              "t": 1714564800}).encode())
    assert rec.texts == ["boom"] and rec.own == Ident("pg-prod")
    assert rec.occurred_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_json_source_reads_a_non_json_line_as_text() -> None:
    rec = LineRules.default("json").parse(b"Traceback (most recent call last):")
    assert not rec.is_json and rec.texts == ["Traceback (most recent call last):"]


def test_invalid_utf8_is_replaced_never_dropped() -> None:
    assert decode_line(b"invalid_grant \xff\xfe caf\xc3\xa9\r") == "invalid_grant \ufffd\ufffd café"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-15T10:00:01.123+02:00 x", datetime(2024, 1, 15, 8, 0, 1, 123000, tzinfo=UTC)),
        ("[2024-01-15, 10:00:01 UTC] {x.py:1} INFO", datetime(2024, 1, 15, 10, 0, 1, tzinfo=UTC)),
        ("2019-04-18 13:49:12,582Z    tap - CRITICAL", datetime(2019, 4, 18, 13, 49, 12, 582000, tzinfo=UTC)),
        ("[2025-04-07T22:56:26.912+0200] {taskinstance.py:2614}", datetime(2025, 4, 7, 20, 56, 26, 912000, tzinfo=UTC)),
        ("no time here", None),
        ("2024-13-45 99:99:99 impossible", None),
    ],
)
def test_timestamps(text: str, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


def test_naive_timestamps_use_the_source_timezone() -> None:
    r = rules(timezone="Europe/Berlin")
    assert r.parse(b"2024-01-15 10:00:00 ERROR x").occurred_at == datetime(2024, 1, 15, 9, 0, tzinfo=UTC)


def test_rules_for_picks_the_source_whose_glob_matches(tmp_path) -> None:
    a = LogSource(name="a", paths=[str(tmp_path / "meltano" / "*.log")])
    b = LogSource(name="b", paths=[str(tmp_path / "*.jsonl")])
    assert rules_for(str(tmp_path / "meltano" / "x.log"), [a, b]) is a
    assert rules_for(str(tmp_path / "y.jsonl"), [a, b]) is b
    assert rules_for(str(tmp_path / "z.txt"), [a, b]) is None
    assert stem("/a/b/tap-x.jsonl") == "tap-x"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"name": "a", "paths": []}, "paths"),
        ({"name": "a", "paths": ["x"], "integration_regex": "no group"}, "named group (?P<integration>"),
        ({"name": "a", "paths": ["x"], "integration_regex": "(?P<integration>["}, "invalid regex"),
        ({"name": "a", "paths": ["x"], "filename_pattern": "x.log"}, "{integration}"),
        ({"name": "a", "paths": ["x"], "timezone": "Mars/Base"}, "unknown IANA timezone"),
        ({"name": "a", "paths": ["x"], "format": "xml"}, "format"),
    ],
)
def test_log_source_config_errors_name_the_key(source: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, log_sources=[source])
    assert "log_sources[0]" in str(exc.value) and message in str(exc.value)


def test_duplicate_source_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate"):
        load_settings(None, log_sources=[{"name": "a", "paths": ["x"]}, {"name": "a", "paths": ["y"]}])
