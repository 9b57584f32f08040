"""PagerDuty Events API v2 bodies → events (``POST /v1/webhooks/pagerduty``).

Many tools can already emit PagerDuty events, so the receiver accepts their ``enqueue`` body:
``{routing_key, event_action, dedup_key, payload: {summary, source, severity, timestamp, component,
group, class, custom_details}, links, images, client, client_url}``.

- ``trigger`` is a failure. The integration id is ``payload.custom_details.integration_id``, else the
  ``dedup_key``, else ``payload.source``; the error text is ``custom_details.error``, else
  ``payload.summary``; the provider is ``custom_details.provider``, else ``payload.component``.
  ``custom_details`` may also carry ``integration_name``, ``auth_method``, ``account_id``,
  ``error_code`` and ``reauthorize_url``. The ``dedup_key`` is kept as the label
  ``pagerduty_dedup_key`` so a later ``resolve`` finds the alert.
- ``resolve`` is a success for the integration whose alert carries that ``dedup_key`` (else the
  integration named by the ``dedup_key`` itself); ``acknowledge`` acknowledges that alert.

The ``routing_key`` is the credential (checked by the web layer before this runs). PagerDuty
events carry no delivery id: the idempotency key is the sha256 of the body.
"""

from __future__ import annotations

from typing import Any

from alerts.models import AuthErrorEvent, AuthMethod, EventStatus
from alerts.sources.vendor import AdapterError, Batch, Item, body_id, ident, obj, parse_time, text

DEDUP_LABEL = "pagerduty_dedup_key"
AUTH_METHODS = {m.value for m in AuthMethod}

EXAMPLES: dict[str, dict[str, Any]] = {
    "trigger": {
        "summary": "a trigger naming the integration in custom_details",
        "value": {
            "routing_key": "R0UT1NGKEY0F32CHARACTERS00000000",
            "event_action": "trigger",
            "dedup_key": "sf-prod",
            "payload": {
                "summary": "Salesforce sync failed: invalid_grant: expired access/refresh token",
                "source": "airflow.example.com",
                "severity": "error",
                "timestamp": "2026-11-28T08:58:00.000+0000",
                "component": "salesforce",
                "group": "elt",
                "class": "auth",
                "custom_details": {"integration_id": "sf-prod", "integration_name": "Salesforce (prod)",
                                   "auth_method": "oauth2"},
            },
            "client": "Airflow",
            "client_url": "https://airflow.example.com",
        },
    },
    "resolve": {
        "summary": "resolve by dedup_key",
        "value": {"routing_key": "R0UT1NGKEY0F32CHARACTERS00000000", "event_action": "resolve", "dedup_key": "sf-prod"},
    },
}


def routing_key(data: Any) -> str | None:
    """The credential inside the body (``routing_key``), or ``None``."""
    if isinstance(data, dict) and isinstance(data.get("routing_key"), str):
        return data["routing_key"]
    return None


def parse(data: Any, *, body: bytes) -> Batch:
    """Map one Events API v2 body; raise :class:`AdapterError` (422) when it is not one."""
    if not isinstance(data, dict):
        raise AdapterError("a PagerDuty event is a JSON object")
    action = data.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        raise AdapterError("event_action: must be trigger, acknowledge or resolve")
    dedup = ident(data.get("dedup_key"), limit=255)
    event_id = body_id("pagerduty", body)
    if action != "trigger":
        if dedup is None:
            raise AdapterError(f"dedup_key: required to {action}")
        event = AuthErrorEvent(integration_id=dedup[:200], status=EventStatus.succeeded, source="pagerduty",
                               event_id=event_id, labels={DEDUP_LABEL: dedup})
        return Batch(items=[Item(event, action="acknowledge" if action == "acknowledge" else "ingest")])

    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise AdapterError("payload: required to trigger")
    summary = text(payload.get("summary"))
    if summary is None:
        raise AdapterError("payload.summary: required to trigger")
    details = obj(payload.get("custom_details"))
    integration_id = ident(details.get("integration_id")) or dedup or ident(payload.get("source"))
    if integration_id is None:
        raise AdapterError("payload.custom_details.integration_id, dedup_key or payload.source: one is required")
    auth_method = text(details.get("auth_method"), limit=20)
    labels = {DEDUP_LABEL: dedup} if dedup else {}
    event = AuthErrorEvent(
        integration_id=integration_id[:200],
        status=EventStatus.failed,
        error=text(details.get("error")) or summary,
        source="pagerduty",
        integration_name=text(details.get("integration_name"), limit=200),
        provider=text(details.get("provider"), limit=100) or text(payload.get("component"), limit=100),
        auth_method=auth_method if auth_method in AUTH_METHODS else None,
        error_code=text(details.get("error_code"), limit=100),
        account_id=ident(details.get("account_id")),
        occurred_at=parse_time(payload.get("timestamp")),
        event_id=event_id,
        labels=labels,
        reauthorize_url=text(details.get("reauthorize_url"), limit=2000),
    )
    return Batch(items=[Item(event)])
