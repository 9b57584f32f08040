"""``alerts serve`` as a real process: webhook secrets from a TOML file, the start-up warning on a
public address, and the Airbyte path token absent from everything the process logs (R4.4)."""

from __future__ import annotations

import pytest

from tests import webhook_kit as kit
from tests.peers.server import ServerProcess

CONFIG = f"""
[alerting]
group_wait = "0s"

[webhooks.airbyte]
secrets = [{{ value = "{kit.AIRBYTE}", not_after = 2099-01-01T00:00:00Z }}]

[webhooks.fivetran]
secrets = ["{kit.FIVETRAN}"]
"""


def test_serve_logs_no_path_token_and_warns_about_unsigned_native_events(tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    server = ServerProcess(cwd=tmp_path, config=config, env={"ALERTS_SERVER__HOST": "0.0.0.0"}).start()
    try:
        with server.client() as http:
            ok = http.post(f"/v1/webhooks/airbyte/{kit.AIRBYTE}", content=kit.load("airbyte_failed_sync.json"),
                           headers=kit.JSON)
            assert ok.status_code == 200 and ok.json()["accepted"] == 1
            bad = http.post(f"/v1/webhooks/airbyte/{kit.AIRBYTE}x", content=b"{}", headers=kit.JSON)
            assert bad.status_code == 401
            broken = http.post(f"/v1/webhooks/airbyte/{kit.AIRBYTE}", content=b"{", headers=kit.JSON)
            assert broken.status_code == 400
            signed = kit.fivetran(http, kit.load("fivetran_test_event.json"))
            assert signed.status_code == 200 and signed.json()["test"] is True
            server.wait_for(lambda: sum('"/v1/webhooks/airbyte/{token}"' in line for line in server.lines) >= 3)
    finally:
        server.stop()
    output = "".join(server.lines)
    assert kit.AIRBYTE not in output and kit.FIVETRAN not in output
    records = server.log_records()
    warnings = [r for r in records if r.get("level") == "warning" and r.get("logger") == "alerts.webhooks"]
    assert any("accepts UNSIGNED events on 0.0.0.0" in r["msg"] for r in warnings)
    statuses = sorted(r["status"] for r in records if r.get("route") == "/v1/webhooks/airbyte/{token}")
    assert statuses == [200, 400, 401]


def test_removing_an_old_secret_takes_effect_without_a_restart(tmp_path) -> None:
    """R1.4: the running process watches its config file; the old secret stops working, the current one
    keeps working, and an invalid edit changes nothing (and says so in the log)."""
    config = tmp_path / "config.toml"
    config.write_text(f'[webhooks.fivetran]\nsecrets = ["{kit.FIVETRAN_OLD}", "{kit.FIVETRAN}"]\n')
    body = kit.load("fivetran_test_event.json")
    server = ServerProcess(cwd=tmp_path, config=config).start()
    try:
        with server.client() as http:
            assert kit.fivetran(http, body, secret=kit.FIVETRAN_OLD).status_code == 200
            assert kit.fivetran(http, body).status_code == 200
            config.write_text(f'[webhooks.fivetran]\nsecrets = ["{kit.FIVETRAN}"]\n')
            server.wait_for(lambda: kit.fivetran(http, body, secret=kit.FIVETRAN_OLD).status_code == 401)
            assert kit.fivetran(http, body).status_code == 200
            pid = server.proc.pid
            config.write_text('[webhooks.fivetran]\nsecrets = ["too short"\n')  # invalid TOML
            server.wait_for(lambda: any("is invalid; the secrets in force stay" in line for line in server.lines))
            assert kit.fivetran(http, body).status_code == 200
            assert kit.fivetran(http, body, secret=kit.FIVETRAN_OLD).status_code == 401
            assert server.proc.pid == pid and server.proc.poll() is None  # the same process throughout
    finally:
        server.stop()
    reloaded = [r for r in server.log_records() if r.get("msg", "").startswith("configuration reloaded")]
    assert [r["changed"] for r in reloaded] == [["webhooks.fivetran.secrets"]]
    output = "".join(server.lines)
    assert kit.FIVETRAN not in output and kit.FIVETRAN_OLD not in output


def test_reload_swaps_secrets_in_place_and_nothing_on_an_invalid_file(tmp_path) -> None:
    from alerts.config import ConfigError, load_settings, reload_secrets

    config = tmp_path / "config.toml"
    config.write_text(f'[slack]\nsigning_secret = "{"a" * 32}"\n[webhooks.pagerduty]\nsecrets = ["{kit.PAGERDUTY}"]\n')
    settings = load_settings(config)
    held = settings.slack  # what a request handler holds sees the change
    config.write_text(f'[slack]\nsigning_secret = "{"b" * 32}"\n[webhooks.pagerduty]\nsecrets = ["{kit.PAGERDUTY}"]\n'
                      '[server]\nport = 9999\n')
    assert reload_secrets(settings) == ["slack.signing_secret"]
    assert held.signing_secret.get_secret_value() == "b" * 32
    assert settings.server.port != 9999  # not a secret: needs a restart
    config.write_text('[slack]\nsigning_secret = "short"\n[webhooks.pagerduty]\nsecrets = []\n')
    with pytest.raises(ConfigError, match="signing_secret"):
        reload_secrets(settings)
    assert held.signing_secret.get_secret_value() == "b" * 32
    assert [s.value.get_secret_value() for s in settings.webhooks.pagerduty.secrets] == [kit.PAGERDUTY]
