"""Prometheus Alertmanager (and Grafana) webhook notifications → events (``POST /v1/webhooks/alertmanager``).

The body is Alertmanager's webhook payload (version 4): ``{version, groupKey, status, receiver,
groupLabels, commonLabels, commonAnnotations, externalURL, alerts: [{status, labels, annotations,
startsAt, endsAt, generatorURL, fingerprint}]}``. Grafana's webhook contact point sends the same
shape with extra fields.

Each alert is one event. Which labels hold the integration id, provider, auth method, account and
an explicit catalog code is configured under ``[webhooks.alertmanager] labels``; the error text is
the first of ``error_annotations`` present, the reauthorize link the ``link_annotation``. An alert
without the integration-id label is not ours and is ignored. ``status: resolved`` is a success.

Alertmanager re-sends a firing alert every ``repeat_interval``: the idempotency key is the hash of
``(fingerprint, startsAt, status)``, so a re-send is acknowledged as a duplicate and not counted.
"""

from __future__ import annotations

import hashlib
from typing import Any

from alerts.config import AlertmanagerSource
from alerts.models import AuthErrorEvent, AuthMethod, EventStatus
from alerts.sources.vendor import AdapterError, Batch, Item, hashed_id, labels_of, obj, parse_time, text

MAX_ALERTS = 1000
AUTH_METHODS = {m.value for m in AuthMethod}

EXAMPLES: dict[str, dict[str, Any]] = {
    "firing": {
        "summary": "one firing alert whose labels name the integration",
        "value": {
            "version": "4",
            "groupKey": '{}:{alertname="IntegrationAuthFailed"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "alerts-auth",
            "groupLabels": {"alertname": "IntegrationAuthFailed"},
            "commonLabels": {"alertname": "IntegrationAuthFailed", "integration_id": "hubspot-prod", "provider": "hubspot"},
            "commonAnnotations": {"description": "401 Client Error: Unauthorized for url: https://api.hubapi.com/crm/v3/objects"},
            "externalURL": "http://alertmanager.example.com:9093",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "IntegrationAuthFailed", "integration_id": "hubspot-prod",
                           "provider": "hubspot", "team": "revops"},
                "annotations": {"description": "401 Client Error: Unauthorized for url: https://api.hubapi.com/crm/v3/objects"},
                "startsAt": "2026-11-28T08:55:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=sync_auth_failures+%3E+0",
                "fingerprint": "c6a5e0d3a4b1f2e7",
            }],
        },
    },
    "resolved": {
        "summary": "the same alert resolved",
        "value": {
            "version": "4",
            "groupKey": '{}:{alertname="IntegrationAuthFailed"}',
            "truncatedAlerts": 0,
            "status": "resolved",
            "receiver": "alerts-auth",
            "groupLabels": {"alertname": "IntegrationAuthFailed"},
            "commonLabels": {"alertname": "IntegrationAuthFailed", "integration_id": "hubspot-prod", "provider": "hubspot"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager.example.com:9093",
            "alerts": [{
                "status": "resolved",
                "labels": {"alertname": "IntegrationAuthFailed", "integration_id": "hubspot-prod",
                           "provider": "hubspot", "team": "revops"},
                "annotations": {},
                "startsAt": "2026-11-28T08:55:00Z",
                "endsAt": "2026-11-28T09:20:00Z",
                "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=sync_auth_failures+%3E+0",
                "fingerprint": "c6a5e0d3a4b1f2e7",
            }],
        },
    },
}


def parse(data: Any, *, config: AlertmanagerSource) -> Batch:
    """Map one Alertmanager/Grafana webhook body; raise :class:`AdapterError` (422) when it is not one."""
    if not isinstance(data, dict):
        raise AdapterError("an Alertmanager webhook body is a JSON object")
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise AdapterError("alerts: missing or not an array")
    if len(alerts) > MAX_ALERTS:
        raise AdapterError(f"alerts: more than {MAX_ALERTS} in one notification")
    names = config.labels
    group_status = text(data.get("status"), limit=20)
    batch = Batch()
    for raw in alerts:
        alert = obj(raw)
        labels = labels_of(alert.get("labels"))
        notes = labels_of(alert.get("annotations"))
        integration_id = labels.get(names["integration_id"])
        status = text(alert.get("status"), limit=20) or group_status
        if not integration_id or status not in ("firing", "resolved"):
            batch.ignored += 1
            continue
        firing = status == "firing"
        error = next((notes[n] for n in config.error_annotations if notes.get(n)), None)
        error_code = labels.get(names["error_code"])
        if firing and not (error or error_code):
            error = labels.get("alertname") or "alert firing"
        fingerprint = text(alert.get("fingerprint"), limit=64) or hashlib.sha256(
            "\x1f".join(f"{k}={v}" for k, v in sorted(labels.items())).encode("utf-8", "surrogatepass")
        ).hexdigest()[:16]
        starts_raw = alert.get("startsAt") if isinstance(alert.get("startsAt"), str) else ""
        occurred = parse_time(starts_raw if firing else alert.get("endsAt"))
        auth_method = labels.get(names["auth_method"])
        batch.items.append(Item(AuthErrorEvent(
            integration_id=integration_id,
            status=EventStatus.failed if firing else EventStatus.succeeded,
            error=error if firing else None,
            source="alertmanager",
            integration_name=labels.get(names["integration_name"]),
            provider=(labels.get(names["provider"]) or "")[:100] or None,
            auth_method=auth_method if auth_method in AUTH_METHODS else None,
            error_code=((error_code or "")[:100] or None) if firing else None,
            account_id=labels.get(names["account_id"]),
            occurred_at=occurred,
            event_id=hashed_id("alertmanager", fingerprint, str(starts_raw)[:64], status),
            labels=labels,
            reauthorize_url=notes.get(config.link_annotation),
        )))
    return batch
