"""``alerts serve`` as a real process: webhook secrets from a TOML file, the start-up warning on a
public address, and the Airbyte path token absent from everything the process logs (R4.4)."""

from __future__ import annotations

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
