"""What the webhook tests share: secrets, the documented payloads, and senders that sign like the vendors do."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from alerts.sources.signing import sign_fivetran, sign_standard
from alerts.storage import Alert, Event, Notification
from tests.helpers import rows

DATA = Path(__file__).parent / "data" / "webhooks"

NATIVE = "whsec_" + base64.b64encode(b"native-secret-0123456789abcdef!!").decode()
NATIVE_OLD = "whsec_" + base64.b64encode(b"native-secret-OLD-456789abcdef!!").decode()
FIVETRAN = "fivetran-webhook-secret-000000000001"
FIVETRAN_OLD = "fivetran-webhook-secret-OLD-00000001"
AIRBYTE = "airbyte-path-token-CANARY-0000000001"
ALERTMANAGER = "alertmanager-bearer-token-00000000001"
PAGERDUTY = "R0UT1NGKEY0F32CHARACTERS00000001"

JSON = {"content-type": "application/json"}


def hooks(**overrides: Any) -> dict[str, Any]:
    """A ``webhooks`` settings section with a secret for every source."""
    section: dict[str, Any] = {
        "native": {"secrets": [NATIVE]},
        "fivetran": {"secrets": [FIVETRAN]},
        "airbyte": {"secrets": [AIRBYTE]},
        "alertmanager": {"secrets": [ALERTMANAGER]},
        "pagerduty": {"secrets": [PAGERDUTY]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value
    return section


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def load_json(name: str) -> Any:
    return json.loads(load(name))


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def fivetran(client: Any, body: bytes, *, secret: str = FIVETRAN, headers: dict[str, str] | None = None) -> Any:
    h = {**JSON, "X-Fivetran-Signature-256": sign_fivetran(secret, body), **(headers or {})}
    return client.post("/v1/webhooks/fivetran", content=body, headers=h)


def airbyte(client: Any, body: bytes, *, token: str = AIRBYTE) -> Any:
    return client.post(f"/v1/webhooks/airbyte/{token}", content=body, headers=JSON)


def alertmanager(client: Any, body: bytes, *, token: str = ALERTMANAGER) -> Any:
    return client.post("/v1/webhooks/alertmanager", content=body, headers={**JSON, "Authorization": f"Bearer {token}"})


def pagerduty(client: Any, body: bytes | dict[str, Any], *, key: str = PAGERDUTY) -> Any:
    data = json.loads(body) if isinstance(body, bytes) else dict(body)
    data["routing_key"] = key
    return client.post("/v1/webhooks/pagerduty", content=dumps(data), headers=JSON)


def native(client: Any, body: bytes, *, msg_id: str = "msg_1", timestamp: int | None = None,
           secret: str = NATIVE, signature: str | None = None) -> Any:
    ts = int(client.app.state.clock().timestamp()) if timestamp is None else timestamp
    sig = signature if signature is not None else sign_standard(secret, msg_id, ts, body)
    headers = {**JSON, "webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}
    return client.post("/v1/events", content=body, headers=headers)


def counts(engine: Any) -> tuple[int, int, int]:
    """(events, alerts, notifications) stored."""
    return len(rows(engine, Event)), len(rows(engine, Alert)), len(rows(engine, Notification))


def is_problem(response: Any, status: int) -> bool:
    return response.status_code == status and response.headers["content-type"] == "application/problem+json"
