"""Golden files for rendered messages (``tests/golden/``), reviewed like code.

Regenerate after a deliberate template change with ``UPDATE_GOLDEN=1 pytest tests/test_render_golden.py``
and read the diff. The catalog entry is fixed here, so catalog wording changes do not churn these files.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.models import CatalogEntry, Severity
from alerts.render import Renderer, SampleAlert, alert_data

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

INVALID_GRANT = CatalogEntry(
    code="invalid_grant", title="Authorization expired or revoked", cause="Token expired or revoked.",
    solution="Reauthorize the integration.", action="reauthorize", severity=Severity.critical,
    causes=("the user de-authorized the app, which revokes all of its tokens at once",
            "a security policy update revoked existing sessions"),
    remediation={"oauth2": "Reauthorize the integration: sign in again with an account that has access."},
)
API_KEY = CatalogEntry(
    code="invalid_api_key", title="Invalid API key", cause="API key rotated, revoked or mistyped.",
    solution="Update the API key in the integration's settings.", action="update_api_key",
    severity=Severity.error,
)
LINK = "https://etl.example.com/connections/sf-prod/reauthorize"

CASES = {
    "firing": ("firing", INVALID_GRANT, {}),
    "reminder": ("reminder", INVALID_GRANT, {"count": 48}),
    "updated": ("updated", INVALID_GRANT, {}),
    "resolved": ("resolved", INVALID_GRANT, {"resolved_at": NOW, "state": "resolved", "acknowledged_by": "alice"}),
    "api_key_no_link": ("firing", API_KEY, {"integration_id": "stripe-billing", "integration_name": None,
                                            "provider": "stripe", "auth_method": "api_key", "code": "invalid_api_key",
                                            "severity": "error", "reauthorize_url": None,
                                            "last_error": "Invalid API Key provided: sk_live_[REDACTED]"}),
    "hostile": ("firing", INVALID_GRANT, {"integration_name": "<!channel> prod",
                                          "last_error": "invalid_grant <script>alert(1)</script> Bcc: x@y & <@U1>"}),
}


def rendered(case: str) -> dict[str, str]:
    kind, entry, fields = CASES[case]
    alert = SampleAlert(id=42, first_seen=NOW - timedelta(hours=3, minutes=20), last_seen=NOW - timedelta(minutes=4),
                        count=12, reauthorize_url=LINK, labels={"team": "revops"})
    for k, v in fields.items():
        setattr(alert, k, v)
    data = alert_data(kind=kind, alert=alert, entry=entry, dashboard_url="https://alerts.example.com", now=NOW)
    r = Renderer().alert(data)
    return {
        "slack.json": json.dumps(r.slack, indent=2, ensure_ascii=False) + "\n",
        "subject.txt": r.subject + "\n",
        "txt": r.text,
        "html": r.html,
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    for suffix, text in rendered(case).items():
        path = GOLDEN / f"{case}.{suffix}"
        if UPDATE:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            continue
        assert path.exists(), f"{path} missing: run UPDATE_GOLDEN=1 pytest {__file__}"
        assert text == path.read_text(encoding="utf-8"), f"{path.name} differs (UPDATE_GOLDEN=1 to accept)"


def test_golden_slack_payloads_are_valid_block_kit_shapes() -> None:
    for case in CASES:
        payload = json.loads((GOLDEN / f"{case}.slack.json").read_text(encoding="utf-8"))
        assert payload["text"] and 1 <= len(payload["blocks"]) <= 50
        assert payload["blocks"][0]["type"] == "header"
        for block in payload["blocks"]:
            assert block["type"] in {"header", "section", "actions", "context", "divider"}
