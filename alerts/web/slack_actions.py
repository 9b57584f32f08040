"""``POST /v1/slack/actions``: the Acknowledge and Silence 24 h buttons of Slack alert messages.

Set the Slack app's *Interactivity Request URL* to ``{public_url}/v1/slack/actions`` and put the app's
signing secret in ``[slack] signing_secret``. Every request runs these steps, cheapest first; each
refusal changes nothing:

1. A client with too many recent 401s → 429 (the same per-IP limiter as ``/v1/webhooks/…``, R1.8);
   a body over ``server.max_body_bytes`` → 413, before any HMAC is computed.
2. ``Content-Type`` other than ``application/x-www-form-urlencoded`` (what Slack sends) → 415.
3. Authenticate the exact bytes received, before parsing (R1.1, R1.3, R1.7)::

       X-Slack-Signature = "v0=" + hex(HMAC-SHA256(signing_secret, "v0:{X-Slack-Request-Timestamp}:{body}"))

   compared in constant time; the timestamp must match ``^[0-9]{1,10}$`` and lie within
   ``[slack] tolerance`` (default 300 s) of the app's clock in either direction, else 401
   ``timestamp_out_of_tolerance``. Any other failure is the one plain 401. **With no signing secret
   configured every request gets 401** (and messages carry no Acknowledge/Silence buttons).
4. Decode ``payload=…`` (``urllib.parse``, strict UTF-8, strict JSON, R3.2) → 400 if malformed;
   only ``block_actions`` with exactly one action is understood (400 otherwise).
5. ``team.id`` other than ``[slack] team_id`` (when set) → 403; an ``action_id`` outside the
   allow-list → 403. Allowed: ``alerts_ack``, ``alerts_silence_24h`` and ``reauthorize`` (a link
   button; Slack reports its clicks too, and they are answered 200 and change nothing).
6. One transaction: a ledger row (an ``event`` with source ``slack`` and ``event_id`` =
   ``slack:sha256(alert_id|action|user_id)``, UNIQUE like any event id, R1.5) — if it exists the click
   is a repeat and nothing happens; else the state change (acknowledge; or a 24 h silence on the
   alert's integration, authored by the Slack user) and the outbox rows (kind ``action``) that update
   the clicked message — and the alert's first message in that channel — in place.
7. 200 with an empty body at once (Slack wants an answer within 3 s). The worker sends the update.

Why the outbox and not ``chat.update`` from a background task: the update is then a notification
like every other — written in the same transaction as the state change, so it exists if and only
if the change does (R2.1), sent by the one delivery loop with its 429 pause, backoff and dead
letters, surviving a restart, and visible in the delivery log. A background task would be lost on
a crash and bypass the rate limits.

``response_url`` is never used: every update goes through ``chat.update`` with the bot token, so a
payload cannot make this server send a request anywhere (R1.7 allows only https://hooks.slack.com).
With only an incoming webhook (no bot token) a click still acknowledges or silences, but the
message cannot be edited.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alerts import ingest, silences
from alerts.catalog import Catalog
from alerts.config import Settings
from alerts.models import AlertState
from alerts.post_edits import ACTIONS, SILENCE_FOR, owe_updates
from alerts.redact import sanitize
from alerts.render import Renderer
from alerts.sources.envelope import BadPayload, decode_json
from alerts.sources.signing import TIMESTAMP, Unauthenticated
from alerts.storage import Alert, Event, Silence, session_scope
from alerts.web.guard import Refusal
from alerts.web.problems import BodyTooLarge

log = logging.getLogger("alerts.slack_actions")

router = APIRouter(tags=["slack"])

SOURCE = "slack"
FORM = "application/x-www-form-urlencoded"

_SIGNATURE = re.compile(r"v0=[0-9a-fA-F]{64}")
_SLACK_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ALERT_ID = re.compile(r"[0-9]{1,18}")
_CHANNEL_ID = re.compile(r"[A-Z0-9]{1,32}")
_MESSAGE_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")


# -- authenticity (pure) ------------------------------------------------------------------------


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Slack-Signature`` Slack puts on ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "v0=" + hmac.new(key, f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()


def verify(headers: Mapping[str, str], body: bytes, secret: bytes, *, now: datetime, tolerance: timedelta) -> None:
    """Check Slack's ``v0`` signature over the exact ``body`` bytes, then the timestamp window.

    Total: whatever the headers hold, this returns or raises :class:`Unauthenticated` (a fixed reason).
    """
    stamp = headers.get("x-slack-request-timestamp")
    given = headers.get("x-slack-signature")
    if stamp is None or given is None:
        raise Unauthenticated("missing_header")
    stamp, given = stamp.strip(), given.strip()
    if not TIMESTAMP.fullmatch(stamp) or not _SIGNATURE.fullmatch(given):
        raise Unauthenticated("malformed_header")
    expected = sign(secret, stamp, body).encode("ascii")
    if not hmac.compare_digest(expected, given.lower().encode("ascii")):
        raise Unauthenticated("bad_signature")
    if abs(now.timestamp() - int(stamp)) > tolerance.total_seconds():
        raise Unauthenticated("timestamp_out_of_tolerance")


# -- the payload (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Click:
    """One verified ``block_actions`` interaction: who clicked what, where."""

    action_id: str
    alert_id: int | None
    team_id: str | None
    user_id: str
    user: str  # "@alice": how the message and the alert name the person
    message_ref: str | None  # "C0123:1764320400.000100", the message the button is in


def parse_click(body: bytes) -> Click:
    """The click in a form-encoded ``payload=<json>`` body; :class:`BadPayload` (→ 400) if malformed.

    An ``action_id`` outside :data:`ACTIONS` is returned as it is (the caller refuses it with 403).
    """
    try:
        text = body.decode("utf-8", errors="strict")
        form = parse_qs(text, keep_blank_values=True, strict_parsing=True, errors="strict", max_num_fields=20)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise BadPayload(f"not a form-encoded body ({type(exc).__name__})") from None
    payloads = form.get("payload") or []
    if len(payloads) != 1:
        raise BadPayload("the body needs exactly one payload field")
    data = decode_json(payloads[0].encode("utf-8", errors="surrogatepass"))
    if not isinstance(data, dict):
        raise BadPayload("payload is not a JSON object")
    if data.get("type") != "block_actions":
        raise BadPayload("only block_actions interactions are understood")
    actions = data.get("actions")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        raise BadPayload("payload.actions must hold exactly one action")
    action_id = actions[0].get("action_id")
    if not isinstance(action_id, str) or not 0 < len(action_id) <= 255:
        raise BadPayload("payload.actions[0].action_id is missing")
    alert_id = None
    if ACTIONS.get(action_id):
        value = actions[0].get("value")
        if not isinstance(value, str) or not _ALERT_ID.fullmatch(value):
            raise BadPayload("payload.actions[0].value is not an alert id")
        if actions[0].get("block_id") != f"alert-{value}":  # our buttons sit in the block of their alert
            raise BadPayload("payload.actions[0].block_id does not belong to that alert")
        alert_id = int(value)
    user = data.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not _SLACK_ID.fullmatch(user["id"]):
        raise BadPayload("payload.user.id is missing")
    team = data.get("team")
    team_id = team.get("id") if isinstance(team, dict) else None
    if team_id is not None and not isinstance(team_id, str):
        raise BadPayload("payload.team.id is not a string")
    return Click(action_id=action_id, alert_id=alert_id, team_id=team_id, user_id=user["id"],
                 user=_user_label(user), message_ref=_message_ref(data))


def _user_label(user: dict[str, Any]) -> str:
    for key in ("username", "name"):
        value = user.get(key)
        if isinstance(value, str):
            name = (sanitize(value, limit=80) or "").strip().lstrip("@").strip()
            if name:
                return "@" + " ".join(name.split())
    return "@" + user["id"]


def _message_ref(data: dict[str, Any]) -> str | None:
    """``channel:ts`` of the message the click came from (``container``, else ``channel`` + ``message``)."""
    container, channel_obj, message = (_obj(data.get(k)) for k in ("container", "channel", "message"))
    channel = container.get("channel_id") or channel_obj.get("id")
    ts = container.get("message_ts") or message.get("ts")
    if isinstance(channel, str) and isinstance(ts, str) and _CHANNEL_ID.fullmatch(channel) \
            and _MESSAGE_TS.fullmatch(ts):
        return f"{channel}:{ts}"
    return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- applying a click ---------------------------------------------------------------------------


@dataclass
class Outcome:
    duplicate: bool = False
    changed: bool = False  # the alert's state changed (acknowledged, or newly silenced)
    updates: int = 0  # outbox rows that will update a message in place
    integration_id: str | None = None


def ledger_key(alert_id: int, action: str, user_id: str) -> str:
    """The ``event_id`` that makes a click count once: sha256(alert_id|action|user_id).

    The ``:`` keeps it apart from every sender's ids (native ``event_id``s are ``[A-Za-z0-9_-]``,
    vendor keys ``<vendor>-<hex>``), so no event can take a click's place.
    """
    return "slack:" + hashlib.sha256(f"{alert_id}|{action}|{user_id}".encode()).hexdigest()


def apply_click(
    engine: Engine,
    click: Click,
    *,
    settings: Settings,
    catalog: Catalog,
    renderer: Renderer,
    now: datetime,
    body_sha256: str,
) -> Outcome:
    """Record the click, change the alert and owe the in-place updates, in one transaction."""
    action = ACTIONS[click.action_id]
    assert action is not None and click.alert_id is not None
    out = Outcome()
    with session_scope(engine) as s:
        alert = s.exec(select(Alert).where(Alert.id == click.alert_id).with_for_update()).first()
        if alert is None:
            raise Refusal(404, f"no alert {click.alert_id}", reason="not_found")
        out.integration_id = alert.integration_id
        key = ledger_key(alert.id, action, click.user_id)  # type: ignore[arg-type]
        if not _record(s, key, alert=alert, action=action, now=now, body_sha256=body_sha256):
            out.duplicate = True
            return out
        if alert.state == AlertState.resolved:
            return out  # fixed meanwhile; its message already says so
        if action == "ack":
            out.changed = ingest.acknowledge_alert(s, alert, now=now, by=click.user)
        elif not alert.silenced:
            s.add(Silence(integration=silences.glob_escape(alert.integration_id), provider=None, code=None,
                          starts_at=now, ends_at=now + SILENCE_FOR, author=click.user,
                          comment=f"silenced from Slack (alert {alert.id})"))
            alert.silenced = True
            s.add(alert)
            out.changed = True
        s.flush()
        out.updates = owe_updates(s, alert, message_ref=click.message_ref, key=key, settings=settings,
                                  catalog=catalog, renderer=renderer, now=now)
    if action == "silence" and out.changed:  # other open alerts of the integration are covered too
        ingest.refresh_silences(engine, settings=settings, catalog=catalog, now=now)
    return out


def _record(s: Session, key: str, *, alert: Alert, action: str, now: datetime, body_sha256: str) -> bool:
    """Insert the ledger row; ``False`` if this (alert, action, user) was seen before."""
    table = Event.__table__  # type: ignore[attr-defined]
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).values(
        event_id=key, source=SOURCE, integration_id=alert.integration_id, status=action,
        provider=alert.provider, auth_method=alert.auth_method, code=alert.code, error=None,
        occurred_at=now, received_at=now, alert_id=alert.id, body_sha256=body_sha256,
    ).on_conflict_do_nothing(index_elements=["event_id"], index_where=sa.text("event_id IS NOT NULL")
                             ).returning(table.c.id)
    return s.execute(stmt).first() is not None


# -- the route ----------------------------------------------------------------------------------


def _renderer(request: Request) -> Renderer:
    state = request.app.state
    renderer = getattr(state, "slack_actions_renderer", None)
    if renderer is None:
        renderer = state.slack_actions_renderer = Renderer(user_dir=state.settings.templates.dir, interactive=True)
    return renderer


async def _form_body(request: Request) -> bytes:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != FORM:
        raise Refusal(415, f"send the body as {FORM}", reason="unsupported_media_type")
    try:
        return await request.body()
    except BodyTooLarge:
        limit = request.app.state.settings.server.max_body_bytes
        raise Refusal(413, f"body larger than {limit} bytes", reason="body_too_large") from None


async def _handle(request: Request) -> Response:
    state = request.app.state
    settings: Settings = state.settings
    body = await _form_body(request)
    secret = settings.slack.signing_secret
    if secret is None:
        state.webhook_guard.warn_once_a_minute("closed:slack", "Slack action refused: no signing secret configured",
                                               source=SOURCE, hint="set [slack] signing_secret")
        raise Refusal.unauthorized("not_configured")
    now = state.clock()
    try:
        verify(request.headers, body, secret.get_secret_value().encode(), now=now, tolerance=settings.slack.tolerance)
    except Unauthenticated as exc:
        raise Refusal.unauthorized(exc.reason) from None
    try:
        click = parse_click(body)
    except BadPayload as exc:
        raise Refusal(400, str(exc), reason="bad_payload") from None
    if settings.slack.team_id is not None and click.team_id != settings.slack.team_id:
        raise Refusal(403, "this Slack workspace is not allowed", reason="wrong_team")
    if click.action_id not in ACTIONS:
        raise Refusal(403, "unknown action", reason="unknown_action")
    if click.alert_id is None:  # a link button (Reauthorize): Slack wants its click answered, nothing else
        return Response(status_code=200)
    outcome = await run_in_threadpool(
        apply_click, state.engine, click, settings=settings, catalog=state.catalog, renderer=_renderer(request),
        now=now, body_sha256=hashlib.sha256(body).hexdigest(),
    )
    if outcome.updates or outcome.changed:
        state.worker.wake.set()
    metrics = getattr(state, "metrics", None)
    if metrics is not None:
        metrics.count_events(SOURCE, accepted=0 if outcome.duplicate else 1, duplicates=1 if outcome.duplicate else 0)
    log.info("slack action", extra={"alert_id": click.alert_id, "integration_id": outcome.integration_id,
                                    "action": click.action_id, "user": click.user, "duplicate": outcome.duplicate,
                                    "changed": outcome.changed, "updates": outcome.updates})
    return Response(status_code=200)


_EXAMPLE_PAYLOAD = {
    "type": "block_actions", "user": {"id": "U0ALICE", "username": "alice", "team_id": "T0123ABCD"},
    "team": {"id": "T0123ABCD", "domain": "acme"},
    "container": {"type": "message", "channel_id": "C0123ABCD", "message_ts": "1764320405.000100"},
    "actions": [{"type": "button", "action_id": "alerts_ack", "block_id": "alert-1", "value": "1",
                 "action_ts": "1764320460.000200"}],
}
_DOC = {
    "openapi_extra": {
        "requestBody": {"required": True, "content": {FORM: {
            "schema": {"type": "object", "required": ["payload"],
                       "properties": {"payload": {"type": "string", "description": "Slack's block_actions JSON"}}},
            "example": {"payload": json.dumps(_EXAMPLE_PAYLOAD, separators=(",", ":"))},
        }}},
        "parameters": [
            {"name": "X-Slack-Request-Timestamp", "in": "header", "required": True, "schema": {"type": "string"},
             "description": "Unix seconds; within [slack] tolerance (default 5 minutes) of the server's clock"},
            {"name": "X-Slack-Signature", "in": "header", "required": True, "schema": {"type": "string"},
             "description": "v0=<hex HMAC-SHA256 of 'v0:{timestamp}:{body}' with [slack] signing_secret>"},
        ],
    },
    "responses": {
        200: {"description": "done (or a repeated click: nothing changed); the message is updated in place"},
        400: {"description": "signed, but not a block_actions payload this server understands"},
        401: {"description": "not signed with the signing secret, or timestamp_out_of_tolerance"},
        403: {"description": "another Slack workspace ([slack] team_id), or an action_id not allowed"},
        404: {"description": "no such alert"},
        413: {"description": "body too large"},
        415: {"description": "not application/x-www-form-urlencoded"},
        429: {"description": "too many unauthorized requests from this address"},
    },
}


@router.post("/v1/slack/actions", summary="Slack interactivity: Acknowledge / Silence 24 h buttons",
             response_class=Response, **_DOC)
async def slack_actions(request: Request) -> Response:
    """Clicks on the buttons of Slack alert messages (the Slack app's Interactivity Request URL)."""
    guard = request.app.state.webhook_guard
    client = request.client.host if request.client else "-"
    wait = guard.limiter.retry_after(client, guard.now())
    if wait is not None:
        guard.refused(SOURCE, "rate_limited")
        raise Refusal(429, "too many unauthorized requests from this address; try again later",
                      reason="rate_limited", headers={"Retry-After": str(wait)})
    try:
        return await _handle(request)
    except Refusal as exc:
        guard.refused(SOURCE, exc.reason)
        if exc.status == 401:
            guard.limiter.record(client, guard.now())
        raise


__all__ = ["ACTIONS", "Click", "apply_click", "parse_click", "router", "sign", "verify"]
