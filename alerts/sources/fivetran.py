"""Fivetran webhook events → events (``POST /v1/webhooks/fivetran``).

- ``sync_end`` with ``data.status`` ``FAILURE`` / ``FAILURE_WITH_TASK`` is a failure whose text is
  ``data.reason``; ``SUCCESSFUL`` is a success. A ``data.taskType`` of ``reconnect`` means Fivetran
  asks for the connector to be re-authorized: when the reason text classifies as nothing, the
  failure counts as ``invalid_grant``.
- ``connection_failure`` / ``connection_successful`` likewise.
- ``test_event`` (sent when the webhook is created; no ``sync_id``, ``created`` not a time) is
  acknowledged and opens nothing. Every other event type is acknowledged and ignored.

``connector_id`` (or the newer ``connection_id``) is the integration id, ``connector_name`` its
name and ``connector_type`` the provider. Fivetran signs no timestamp, so ``created`` must lie
within [now − 24 h, now + 5 min] (R1.6). The idempotency key is the hash of
``(connector_id, sync_id, event, created)`` (R1.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from alerts.models import AuthErrorEvent, EventStatus
from alerts.sources.vendor import (
    AdapterError,
    Batch,
    Item,
    Stale,
    guess_provider,
    hashed_id,
    ident,
    obj,
    parse_time,
    text,
)

PAST = timedelta(hours=24)
FUTURE = timedelta(minutes=5)
FAILED = {"FAILURE", "FAILURE_WITH_TASK"}
AUTH_TASKS = {"reconnect"}
SIGNATURE_HEADER = "x-fivetran-signature-256"

EXAMPLES: dict[str, dict[str, Any]] = {
    "sync_end_failure": {
        "summary": "sync_end that needs the connector re-authorized",
        "value": {
            "event": "sync_end",
            "created": "2026-11-28T08:58:34.386Z",
            "connector_type": "salesforce",
            "connector_id": "mystified_presiding",
            "connector_name": "salesforce_prod",
            "sync_id": "96ea2b8d-c8fd-4a64-9e7e-5c3e2c5c4b3e",
            "destination_group_id": "deck_enjoy",
            "data": {
                "status": "FAILURE_WITH_TASK",
                "reason": "invalid_grant: expired access/refresh token",
                "taskType": "reconnect",
            },
        },
    },
    "sync_end_success": {
        "summary": "sync_end that succeeded (resolves the alert)",
        "value": {
            "event": "sync_end",
            "created": "2026-11-28T09:30:02.120Z",
            "connector_type": "salesforce",
            "connector_id": "mystified_presiding",
            "connector_name": "salesforce_prod",
            "sync_id": "1b4e3c02-7f1e-4f0b-a5d1-0c2b7f7e9a11",
            "destination_group_id": "deck_enjoy",
            "data": {"status": "SUCCESSFUL"},
        },
    },
    "test_event": {
        "summary": "sent by Fivetran when the webhook is created",
        "value": {
            "event": "test_event",
            "created": "timestamp",
            "connector_type": "_connector_type",
            "connector_id": "_connector_1",
            "group_id": "_destination_1",
        },
    },
}


def parse(data: Any, *, now: datetime, aliases: Mapping[str, str]) -> Batch:
    """Map one Fivetran webhook body; raise :class:`AdapterError` (422) or :class:`Stale` (401)."""
    if not isinstance(data, dict):
        raise AdapterError("a Fivetran webhook body is a JSON object")
    kind = text(data.get("event"), limit=100)
    if kind is None:
        raise AdapterError("event: missing or not a string")
    if kind == "test_event":
        return Batch(test=True)
    created_raw = data.get("created")
    created = parse_time(created_raw)
    if created is None:
        raise AdapterError("created: not an RFC 3339 time")
    if not now - PAST <= created <= now + FUTURE:
        raise Stale("created is outside [now - 24h, now + 5m]")

    details = obj(data.get("data"))
    status = (text(details.get("status"), limit=50) or "").upper()
    if kind == "sync_end" and status == "SUCCESSFUL" or kind == "connection_successful":
        outcome = EventStatus.succeeded
    elif kind == "sync_end" and status in FAILED or kind == "connection_failure":
        outcome = EventStatus.failed
    else:
        return Batch(ignored=1)

    connector_id = ident(data.get("connector_id")) or ident(data.get("connection_id"))
    if connector_id is None:
        raise AdapterError("connector_id: missing or not a string")
    task = text(details.get("taskType"), limit=100)
    error = None
    if outcome == EventStatus.failed:
        error = (
            text(details.get("reason"))
            or text(details.get("message"))
            or text(details.get("error"))
            or (f"Fivetran asks for the task '{task}'" if task else f"Fivetran {kind} ({status or 'no status'})")
        )
    labels: dict[str, str] = {}
    if task:
        labels["fivetran_task"] = task
    group = ident(data.get("destination_group_id")) or ident(data.get("group_id"))
    if group:
        labels["fivetran_group"] = group
    event = AuthErrorEvent(
        integration_id=connector_id,
        status=outcome,
        error=error,
        source="fivetran",
        integration_name=text(data.get("connector_name"), limit=200) or text(data.get("connection_name"), limit=200),
        provider=guess_provider(text(data.get("connector_type"), limit=100), aliases),
        occurred_at=created,
        event_id=hashed_id("fivetran", connector_id, ident(data.get("sync_id")), kind, str(created_raw)),
        labels=labels,
    )
    fallback = "invalid_grant" if outcome == EventStatus.failed and (task or "").lower() in AUTH_TASKS else None
    return Batch(items=[Item(event, fallback_code=fallback)])
