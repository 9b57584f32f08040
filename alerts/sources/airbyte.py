"""Airbyte sync notifications → events (``POST /v1/webhooks/airbyte/{token}``).

Airbyte's webhook notification body is ``{"data": {workspace, connection, source, destination,
jobId, startedAt, finishedAt, …, errorMessage, errorType, errorOrigin, success}}`` where each of
workspace/connection/source/destination is ``{id, name, url}``.

- ``success: false`` is a failure of the side named by ``errorOrigin`` (the destination when it says
  ``destination``, else the source): its ``id`` is the integration id, its ``name`` the name, its
  settings ``url`` the reauthorize link (it still has to pass the ``[links]`` allowed-hosts check),
  and ``errorMessage`` the text that is classified.
- ``success: true`` is a success for both the source and the destination (both sets of credentials
  worked), which resolves their alerts.
- Other notifications (no boolean ``success``) are acknowledged and ignored.

Airbyte signs nothing, so the endpoint authenticates by a secret token in the URL path. The
idempotency key is the hash of ``(workspace, connection, jobId, outcome, side)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alerts.models import AuthErrorEvent, EventStatus
from alerts.sources.vendor import (
    AdapterError,
    Batch,
    Item,
    body_id,
    guess_provider,
    hashed_id,
    ident,
    obj,
    parse_time,
    text,
)

_WS = "b510e39b-e9e2-4833-9a3a-963e51d35fb4"
_COMMON = {
    "workspace": {"id": _WS, "name": "Workspace1", "url": f"https://cloud.airbyte.com/workspaces/{_WS}"},
    "connection": {
        "id": "64d901a1-2520-4d91-93c8-9df438668ff0",
        "name": "Salesforce → Snowflake",
        "url": f"https://cloud.airbyte.com/workspaces/{_WS}/connections/64d901a1-2520-4d91-93c8-9df438668ff0",
    },
    "source": {
        "id": "c0655b08-1511-4e72-b7da-24c5d54de532",
        "name": "Salesforce",
        "url": f"https://cloud.airbyte.com/workspaces/{_WS}/source/c0655b08-1511-4e72-b7da-24c5d54de532",
    },
    "destination": {
        "id": "5621c38f-8048-4abb-85ca-b34ff8d9a298",
        "name": "Snowflake",
        "url": f"https://cloud.airbyte.com/workspaces/{_WS}/destination/5621c38f-8048-4abb-85ca-b34ff8d9a298",
    },
    "jobId": 9988,
    "startedAt": "2026-11-28T08:00:00Z",
    "finishedAt": "2026-11-28T08:05:00Z",
    "bytesEmitted": 1000,
    "bytesCommitted": 90,
    "recordsEmitted": 89,
    "recordsCommitted": 45,
    "bytesEmittedFormatted": "1000 B",
    "bytesCommittedFormatted": "90 B",
    "durationInSeconds": 300,
    "durationFormatted": "5 min 0 sec",
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "failed_sync": {
        "summary": "a sync that failed on the source's credentials",
        "value": {"data": {
            **_COMMON,
            "errorMessage": "Failure in source: invalid_grant: expired access/refresh token",
            "errorType": "config_error",
            "errorOrigin": "source",
            "success": False,
        }},
    },
    "successful_sync": {
        "summary": "a sync that succeeded (resolves the source's and destination's alerts)",
        "value": {"data": {**_COMMON, "jobId": 9989, "success": True}},
    },
}


def parse(data: Any, *, body: bytes, aliases: Mapping[str, str]) -> Batch:
    """Map one Airbyte notification body; raise :class:`AdapterError` (422) when it is not one."""
    if not isinstance(data, dict):
        raise AdapterError("an Airbyte notification body is a JSON object")
    details = data.get("data")
    if not isinstance(details, dict):
        if "text" in data:
            raise AdapterError("data: missing; this is Airbyte's Slack-format notification, use the webhook one")
        raise AdapterError("data: missing or not an object")
    success = details.get("success")
    if not isinstance(success, bool):
        return Batch(ignored=1)
    workspace = obj(details.get("workspace"))
    connection = obj(details.get("connection"))
    sides = {"source": obj(details.get("source")), "destination": obj(details.get("destination"))}
    job = ident(details.get("jobId"))
    finished = parse_time(details.get("finishedAt"))

    def key(role: str) -> str:
        if job is None:
            return body_id("airbyte", body + role.encode())
        return hashed_id("airbyte", ident(workspace.get("id")), ident(connection.get("id")), job,
                         "succeeded" if success else "failed", role)

    labels: dict[str, str] = {}
    conn_name = text(connection.get("name"), limit=200)
    if conn_name:
        labels["airbyte_connection"] = conn_name

    if success:
        items = []
        for role in ("source", "destination"):
            uid = ident(sides[role].get("id"))
            if uid:
                items.append(Item(AuthErrorEvent(
                    integration_id=uid, status=EventStatus.succeeded, source="airbyte",
                    integration_name=text(sides[role].get("name"), limit=200),
                    occurred_at=finished, event_id=key(role), labels=dict(labels),
                )))
        if not items:
            raise AdapterError("data.source.id: missing")
        return Batch(items=items)

    origin = (text(details.get("errorOrigin"), limit=50) or "").lower()
    role = "destination" if origin == "destination" and ident(sides["destination"].get("id")) else "source"
    side = sides[role]
    uid = ident(side.get("id"))
    if uid is None:
        raise AdapterError(f"data.{role}.id: missing")
    error_type = text(details.get("errorType"), limit=100)
    if error_type:
        labels["airbyte_error_type"] = error_type
    name = text(side.get("name"), limit=200)
    return Batch(items=[Item(AuthErrorEvent(
        integration_id=uid,
        status=EventStatus.failed,
        error=text(details.get("errorMessage")) or text(details.get("failureReason")) or "Airbyte sync failed",
        source="airbyte",
        integration_name=name,
        provider=guess_provider(name, aliases, passthrough=False),
        occurred_at=finished,
        event_id=key(role),
        labels=labels,
        reauthorize_url=text(side.get("url"), limit=2000),
    ))])
