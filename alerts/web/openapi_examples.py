"""Response examples for every operation in ``/openapi.json`` that does not carry its own.

Routes that document their bodies themselves (``POST /v1/events``, the webhooks) keep theirs; the
rest get a realistic example here, filled in when the schema is first generated. A test compares
each example's keys with a real response, so an example that drifts from the API fails the suite.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

_REMEDIATION = {
    "title": "Authorization expired or revoked",
    "cause": "Token expired or revoked",
    "solution": "Reauthorize the integration: sign in again with an account that has access.",
    "action": "reauthorize",
    "causes": ["the user de-authorized the app, which revokes all of its tokens at once"],
    "docs": "https://datatracker.ietf.org/doc/html/rfc6749#section-5.2",
}

ALERT: dict[str, Any] = {
    "id": 1,
    "fingerprint": "3f2bf46f81a5024258e4fc41a7ff9122",
    "integration_id": "sf-prod",
    "integration_name": "Salesforce (prod)",
    "provider": "salesforce",
    "auth_method": "oauth2",
    "account_id": None,
    "code": "invalid_grant",
    "base_code": "invalid_grant",
    "severity": "critical",
    "state": "firing",
    "count": 50,
    "first_seen": "2026-11-28T09:00:00Z",
    "last_seen": "2026-11-28T09:25:00Z",
    "last_error": "invalid_grant: expired access/refresh token",
    "reauthorize_url": "https://etl.example.com/connections/sf-prod/reauthorize",
    "labels": {"team": "revops"},
    "silenced": False,
    "acknowledged_at": None,
    "acknowledged_by": None,
    "resolved_at": None,
    "resolved_by": None,
    "first_notified_at": "2026-11-28T09:00:05Z",
    "remediation": _REMEDIATION,
}

NOTIFICATION = {
    "id": 1, "receiver": "data-team", "channel": "slack", "kind": "firing", "status": "sent", "attempts": 1,
    "next_attempt_at": "2026-11-28T09:00:05Z", "sent_at": "2026-11-28T09:00:05Z", "last_error": None,
    "external_ref": "1764320405.000100",
}

SILENCE = {
    "id": 1, "integration": "sf-*", "provider": None, "code": None, "starts_at": "2026-11-28T09:00:00Z",
    "ends_at": "2026-11-28T11:00:00Z", "author": "alice", "comment": "rotating the key", "state": "active",
}

_SPREAD = {"count": 4, "median_seconds": 5400.0, "p90_seconds": 14400.0}

STATS = {
    "window_days": 30,
    "alerts": {"firing": 1, "acknowledged": 0, "resolved": 4},
    "time_to_fix": {"overall": _SPREAD, "by_provider": {"salesforce": _SPREAD}, "by_code": {"invalid_grant": _SPREAD}},
    "time_to_acknowledge": {"count": 2, "median_seconds": 600.0, "p90_seconds": 900.0},
    "time_to_first_message": {"count": 5, "median_seconds": 5.0, "p90_seconds": 5.0},
}

CATALOG_ENTRY = {
    "code": "invalid_grant", "base_code": "invalid_grant", "title": "Authorization expired or revoked",
    "cause": "The OAuth grant (refresh token) expired or was revoked.",
    "solution": "Reauthorize the integration: sign in again with an account that has access.",
    "action": "reauthorize", "severity": "critical", "refines": None,
    "docs": "https://datatracker.ietf.org/doc/html/rfc6749#section-5.2",
    "causes": ["the user de-authorized the app, which revokes all of its tokens at once"],
    "remediation": {"oauth2": "Reauthorize the integration: sign in again with an account that has access."},
    "patterns": [{"provider": None, "regex": "\\binvalid_grant\\b", "auth_method": None}],
}

TOKEN = {
    "integration_id": "sf-prod", "integration_name": "Salesforce (prod)", "provider": "salesforce",
    "issued_at": "2026-09-01T08:00:00Z", "last_used_at": "2026-11-28T08:00:00Z", "expires_at": "2026-12-01T08:00:00Z",
    "expires_in_seconds": 256800, "expiry_source": "reported", "scopes": ["api", "refresh_token"], "warned_days": [7.0],
}

JSON = "application/json"
EXAMPLES: dict[tuple[str, str], tuple[str, str, Any]] = {
    ("get", "/v1/alerts"): ("200", JSON, {"alerts": [ALERT], "next": "aWQ6MQ"}),
    ("get", "/v1/alerts/{alert_id}"): ("200", JSON, {**ALERT, "notifications": [NOTIFICATION]}),
    ("post", "/v1/alerts/{alert_id}/ack"): ("200", JSON, {**ALERT, "state": "acknowledged",
                                                          "acknowledged_at": "2026-11-28T09:30:00Z",
                                                          "acknowledged_by": "alice"}),
    ("post", "/v1/alerts/{alert_id}/resolve"): ("200", JSON, {**ALERT, "state": "resolved",
                                                              "resolved_at": "2026-11-28T10:30:00Z",
                                                              "resolved_by": "alice"}),
    ("get", "/v1/catalog"): ("200", JSON, {"entries": [CATALOG_ENTRY]}),
    ("get", "/v1/silences"): ("200", JSON, {"silences": [SILENCE]}),
    ("post", "/v1/silences"): ("201", JSON, SILENCE),
    ("delete", "/v1/silences/{silence_id}"): ("200", JSON, {**SILENCE, "ends_at": "2026-11-28T09:30:00Z",
                                                            "state": "expired"}),
    ("get", "/v1/stats"): ("200", JSON, STATS),
    ("get", "/v1/tokens"): ("200", JSON, {"tokens": [TOKEN]}),
    ("get", "/healthz"): ("200", JSON, {"status": "ok"}),
    ("get", "/readyz"): ("200", JSON, {"status": "ready"}),
    ("post", "/v1/slack/actions"): ("200", "text/plain", ""),  # Slack wants an empty 200 within 3 s
    ("get", "/metrics"): ("200", "text/plain", '# TYPE alerts_webhook_refusals_total counter\n'
                          'alerts_webhook_refusals_total{reason="bad_signature",source="fivetran"} 3.0\n'),
}


def has_example(operation: dict[str, Any]) -> bool:
    text = json.dumps(operation)
    return '"example"' in text or '"examples"' in text


def add_examples(app: FastAPI) -> None:
    """Fill in :data:`EXAMPLES` for operations without an example when the schema is generated."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        for (method, path), (status, ctype, example) in EXAMPLES.items():
            operation = schema.get("paths", {}).get(path, {}).get(method)
            if operation is None or has_example(operation):
                continue
            response = operation.setdefault("responses", {}).setdefault(status, {"description": "OK"})
            response.setdefault("content", {}).setdefault(ctype, {})["example"] = example
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
