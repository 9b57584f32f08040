from __future__ import annotations

from datetime import timedelta

import pytest

from alerts.config import ConfigError, load_settings
from alerts.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("0s", timedelta(0), id="zero"),
        pytest.param("30s", timedelta(seconds=30), id="seconds"),
        pytest.param("5m", timedelta(minutes=5), id="minutes"),
        pytest.param("4h", timedelta(hours=4), id="hours"),
        pytest.param("1h30m", timedelta(hours=1, minutes=30), id="compound"),
        pytest.param("7d", timedelta(days=7), id="days"),
        pytest.param("2w", timedelta(weeks=2), id="weeks"),
    ],
)
def test_durations_parse_like_alertmanager(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("bad", ["4 hourz", "h", "-5m", "1.5h", "", "5 m", "forever"])
def test_bad_durations_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_toml_file_env_override_and_defaults(tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[alerting]\nrepeat_interval = "2h"\ngroup_wait = "10s"\n[server]\nport = 9999\n')
    monkeypatch.setenv("ALERTS_ALERTING__REPEAT_INTERVAL", "1h30m")
    s = load_settings(cfg)
    assert s.alerting.repeat_interval == timedelta(hours=1, minutes=30)  # env beats file
    assert s.alerting.group_wait == timedelta(seconds=10)  # file beats default
    assert s.server.port == 9999
    assert s.database_url == "sqlite:///var/alerts.db"  # default


def test_config_found_through_env_then_cwd(tmp_path, monkeypatch) -> None:
    (tmp_path / "config.toml").write_text("[server]\nport = 1111\n")
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 2222\n")
    assert load_settings().server.port == 1111
    monkeypatch.setenv("ALERTS_CONFIG", str(other))
    assert load_settings().server.port == 2222
    assert load_settings(tmp_path / "config.toml").server.port == 1111


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        pytest.param('[alerting]\nrepeat_interval = "4 hourz"\n', "alerting.repeat_interval", id="bad-duration"),
        pytest.param("[email]\nprot = 25\n", "email.prot: unknown key", id="unknown-key"),
        pytest.param("[nosuch]\nx = 1\n", "nosuch: unknown key", id="unknown-section"),
        pytest.param('[server]\npublic_url = "ftp://example.com"\n', "server.public_url", id="bad-url"),
        pytest.param('[server]\nport = "eighty"\n', "server.port", id="bad-int"),
        pytest.param("[server\n", "invalid TOML", id="broken-toml"),
    ],
)
def test_config_errors_name_the_key(tmp_path, toml: str, names: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    message = str(info.value)
    assert names in message
    assert message.startswith("config error:")
    assert "\n" not in message


def test_secrets_never_in_repr_or_dump(tmp_path) -> None:
    canaries = {
        "slack": {"bot_token": "xoxb-CANARY-slack-000000001"},
        "email": {"host": "smtp.example.com", "password": "CANARY-smtp-password"},
        "database": {"url": "postgresql+psycopg://u:CANARY-db-pass@db.example.com/alerts"},
        "server": {"api_tokens": ["CANARY-api-token-0000000000000"]},
    }
    s = load_settings(None, **canaries)
    dumped = repr(s) + s.model_dump_json() + str(s.redacted_dump())
    for needle in ("CANARY-slack", "CANARY-smtp", "CANARY-db", "CANARY-api"):
        assert needle not in dumped
    assert s.slack.bot_token.get_secret_value() == "xoxb-CANARY-slack-000000001"


def test_the_lease_must_outlast_two_send_timeouts(tmp_path) -> None:
    """R2.2: lease >= 2x the send timeout, or a slow send is claimed and sent again by another worker."""
    cfg = tmp_path / "config.toml"
    email = '[email]\nhost = "smtp.example.com"\n'
    cfg.write_text('[outbox]\nlease = "50s"\n' + email)  # [email] timeout is 30 s
    with pytest.raises(Exception, match=r"^config error: outbox.lease: 50s must be at least twice the slowest send timeout \(30s"):
        load_settings(cfg)
    cfg.write_text('[outbox]\nlease = "60s"\n' + email)
    assert load_settings(cfg).outbox.lease.total_seconds() == 60
    # only channels in use count: Slack alone (10 s) is fine with 45 s
    cfg.write_text('[outbox]\nlease = "45s"\n[slack]\nwebhook_url = "https://hooks.slack.com/services/T0/B0/x"\n')
    assert load_settings(cfg).outbox.lease.total_seconds() == 45


def test_a_misspelt_environment_section_is_an_error_not_ignored(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ALERTS_ALERTNG__REPEAT_INTERVAL", "1h")
    with pytest.raises(ConfigError, match=r"ALERTS_ALERTNG__REPEAT_INTERVAL: there is no \[alertng\] section"):
        load_settings(None)
    monkeypatch.delenv("ALERTS_ALERTNG__REPEAT_INTERVAL")
    monkeypatch.setenv("ALERTS_ALERTING__REPEAT_INTERVAL", "1h")
    assert load_settings(None).alerting.repeat_interval == timedelta(hours=1)


def test_files_and_folders_the_config_names_must_exist(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"email.ca_file: no such file: .*missing.pem"):
        load_settings(None, email={"ca_file": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError, match=r"templates.dir: no such directory: .*nowhere"):
        load_settings(None, templates={"dir": str(tmp_path / "nowhere")})
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "tpl").mkdir()
    s = load_settings(None, email={"ca_file": str(tmp_path / "ca.pem")}, templates={"dir": str(tmp_path / "tpl")})
    assert (s.email.ca_file, s.templates.dir) == (str(tmp_path / "ca.pem"), str(tmp_path / "tpl"))
