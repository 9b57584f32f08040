"""``/v1`` API: events in, alerts out, and the operations on them."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.engine import Engine
from sqlmodel import select

from alerts import crashpoints, ingest, storage
from alerts.catalog import Catalog
from alerts.config import Settings
from alerts.models import AlertState
from alerts.sources.envelope import BadPayload, decode_json
from alerts.sources.native import EventProblem, NativeEvent, parse_native
from alerts.storage import MAX_ROW_ID, Alert, Notification, get_row, session_scope
from alerts.web import webhooks
from alerts.web.problems import Problem

router = APIRouter()


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


async def get_now(request: Request) -> datetime:
    return request.app.state.clock()


# Async dependencies: FastAPI runs a plain ``def`` dependency in a worker thread (a hop per request).
SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
NowDep = Annotated[datetime, Depends(get_now)]


def token_matches(given: str, tokens: list[Any]) -> bool:
    """Whether ``given`` is one of the configured API tokens (constant time; every token is compared)."""
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(given.strip().encode(), t.get_secret_value().encode())
    return ok and bool(given.strip())


def require_content_type(request: Request, expected: str) -> None:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != expected:
        raise Problem(415, f"send the body as {expected}")


async def require_token(request: Request) -> None:
    """The admin API needs ``Authorization: Bearer <token>`` when ``server.api_tokens`` is set."""
    tokens = request.app.state.settings.server.api_tokens
    if not tokens:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not token_matches(given, tokens):
        raise Problem(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


Admin = Depends(require_token)


async def read_json(request: Request) -> tuple[Any, str]:
    """The body as strictly decoded JSON, and its sha256 (the raw body itself is never stored)."""
    require_content_type(request, "application/json")
    body = await request.body()
    try:
        return decode_json(body), hashlib.sha256(body).hexdigest()
    except BadPayload as exc:
        raise Problem(400, str(exc)) from None


EVENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/NativeEvent"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/NativeEvent"}},
                    ]
                },
                "examples": {
                    "failure": {"value": NativeEvent.model_config["json_schema_extra"]["examples"][0]},  # type: ignore[index]
                    "success": {"value": {"integration_id": "sf-prod", "status": "succeeded"}},
                },
            }
        },
    },
    "parameters": [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": text,
         "example": example}
        for name, text, example in (
            ("webhook-id", "Standard Webhooks message id [A-Za-z0-9_-]{1,128}; required when [webhooks.native] "
             "secrets are set", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
            ("webhook-timestamp", "Unix seconds; must be within the tolerance (default 5 minutes)", "1795770000"),
            ("webhook-signature", "v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'> (several, space separated)",
             "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="),
        )
    ],
}


@router.post(
    "/v1/events",
    status_code=202,
    tags=["events"],
    openapi_extra=EVENTS_BODY,
    responses={202: {"content": {"application/json": {"example": {"accepted": 1, "duplicates": 0, "alert_ids": [1]}}}}},
)
async def post_events(request: Request, settings: SettingsDep, engine: EngineDep, catalog: CatalogDep,
                      now: NowDep) -> dict[str, Any]:
    """Accept one native event or an array of them. Answers only after they are stored.

    With ``[webhooks.native] secrets`` set, the request must carry a valid Standard Webhooks
    signature (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``); the ``webhook-id`` is
    then the idempotency key of events that carry no ``event_id``.
    """
    webhook_id = await webhooks.verify_native(request)
    data, digest = await read_json(request)
    try:
        events = parse_native(data, max_batch=settings.server.max_batch)
    except EventProblem as exc:
        request.app.state.metrics.count_events("native", rejected=1)
        raise Problem(422, exc.detail, errors=exc.errors) from None
    result = await request.app.state.committer.submit(
        webhooks.with_delivery_id(events, webhook_id, many=isinstance(data, list)),
        digest,
    )
    crashpoints.hit("after_ingest_commit_before_response")
    if result.wake:  # otherwise the worker's next poll finds what is due later
        request.app.state.worker.wake.set()
    request.app.state.metrics.count_events("native", accepted=result.accepted, duplicates=result.duplicates)
    return {"accepted": result.accepted, "duplicates": result.duplicates, "alert_ids": result.alert_ids}


# -- alerts -----------------------------------------------------------------------------------


def alert_public(alert: Alert, catalog: Catalog) -> dict[str, Any]:
    entry = catalog.get(alert.code)
    auth = alert.auth_method or catalog.default_auth.get(alert.provider or "")  # the fix as its messages write it
    return {
        "id": alert.id,
        "fingerprint": alert.fingerprint,
        "integration_id": alert.integration_id,
        "integration_name": alert.integration_name,
        "provider": alert.provider,
        "auth_method": alert.auth_method,
        "account_id": alert.account_id,
        "code": alert.code,
        "base_code": entry.base_code if entry else alert.code,
        "severity": alert.severity,
        "state": alert.state,
        "count": alert.count,
        "first_seen": _iso(alert.first_seen),
        "last_seen": _iso(alert.last_seen),
        "last_error": alert.last_error,
        "reauthorize_url": alert.reauthorize_url,
        "labels": alert.labels or {},
        "silenced": alert.silenced,
        "acknowledged_at": _iso(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
        "resolved_at": _iso(alert.resolved_at),
        "resolved_by": alert.resolved_by,
        "first_notified_at": _iso(alert.first_notified_at),
        "remediation": (
            {"title": entry.title, "cause": entry.cause, "solution": entry.solution_for(auth),
             "action": entry.action_for(auth), "causes": list(entry.causes), "docs": entry.docs}
            if entry else None
        ),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _cursor(alert_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{alert_id}".encode()).decode().rstrip("=")


def _uncursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind != "id" or not value.isdigit() or not 0 < int(value) <= MAX_ROW_ID:
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "cursor: not a cursor this API returned") from None


def list_alerts(engine: Engine, *, state: str | None, limit: int, before_id: int | None) -> list[Alert]:
    with session_scope(engine) as session:
        stmt = select(Alert)
        if state == "open":
            stmt = stmt.where(Alert.state != AlertState.resolved.value)
        elif state:
            stmt = stmt.where(Alert.state == state)
        if before_id is not None:
            stmt = stmt.where(Alert.id < before_id)
        return list(session.exec(stmt.order_by(sa.desc(Alert.id)).limit(limit)).all())


@router.get("/v1/alerts", tags=["alerts"], dependencies=[Admin])
def get_alerts(
    engine: EngineDep,
    catalog: CatalogDep,
    state: Annotated[str | None, Query(pattern="^(firing|acknowledged|resolved|open)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Alerts, newest first. ``state=open`` means firing or acknowledged."""
    before = _uncursor(cursor) if cursor else None
    rows = list_alerts(engine, state=state, limit=limit + 1, before_id=before)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "alerts": [alert_public(a, catalog) for a in rows],
        "next": _cursor(rows[-1].id) if more and rows else None,  # type: ignore[arg-type]
    }


def _get_alert(engine: Engine, alert_id: int) -> Alert:
    with session_scope(engine) as session:
        alert = get_row(session, Alert, alert_id)
    if alert is None:
        raise Problem(404, f"no alert {alert_id}")
    return alert


@router.get("/v1/alerts/{alert_id}", tags=["alerts"], dependencies=[Admin])
def get_alert(alert_id: int, engine: EngineDep, catalog: CatalogDep) -> dict[str, Any]:
    alert = _get_alert(engine, alert_id)
    out = alert_public(alert, catalog)
    with session_scope(engine) as session:
        rows = session.exec(
            select(Notification).where(Notification.alert_id == alert_id).order_by(Notification.id)
        ).all()
        out["notifications"] = [notification_public(n) for n in rows]
    return out


def notification_public(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id, "receiver": n.receiver, "channel": n.channel, "kind": n.kind, "status": n.status,
        "attempts": n.attempts, "next_attempt_at": _iso(n.next_attempt_at), "sent_at": _iso(n.sent_at),
        "last_error": n.last_error, "external_ref": n.external_ref,
    }


@router.post("/v1/alerts/{alert_id}/ack", tags=["alerts"], dependencies=[Admin])
def ack_alert(alert_id: int, request: Request, engine: EngineDep, settings: SettingsDep, catalog: CatalogDep,
              now: NowDep) -> dict[str, Any]:
    """Acknowledge: someone is on it; no more reminders. Resolving still notifies. The alert's Slack
    messages lose their Acknowledge button and say who acknowledged it."""
    from alerts.post_edits import owe_updates_elsewhere

    by = request.headers.get("x-alerts-user", "api")
    with session_scope(engine) as session:
        alert = get_row(session, Alert, alert_id)
        if alert is None:
            raise Problem(404, f"no alert {alert_id}")
        if alert.state == AlertState.resolved:
            raise Problem(409, f"alert {alert_id} is already resolved")
        if ingest.acknowledge_alert(session, alert, now=now, by=by):
            session.flush()
            owe_updates_elsewhere(session, alert, how="ack", by=by, settings=settings, catalog=catalog,
                                  renderer=request.app.state.renderer, now=now)
    request.app.state.worker.wake.set()
    return alert_public(_get_alert(engine, alert_id), catalog)


@router.post("/v1/alerts/{alert_id}/resolve", tags=["alerts"], dependencies=[Admin])
def resolve_alert(alert_id: int, request: Request, settings: SettingsDep, engine: EngineDep, catalog: CatalogDep,
                  now: NowDep) -> dict[str, Any]:
    """Resolve by hand; sends the resolved message to everyone who was told."""
    with session_scope(engine) as session:
        alert = get_row(session, Alert, alert_id)
        if alert is None:
            raise Problem(404, f"no alert {alert_id}")
        ingest.resolve_alert(session, alert, now=now, by=request.headers.get("x-alerts-user", "api"),
                             settings=settings, catalog=catalog)
    request.app.state.worker.wake.set()
    return alert_public(_get_alert(engine, alert_id), catalog)


@router.post("/v1/notifications/{notification_id}/requeue", tags=["alerts"], dependencies=[Admin],
             responses={200: {"content": {"application/json": {"example": {
                 "id": 7, "receiver": "data-team", "channel": "slack", "kind": "firing", "status": "pending",
                 "attempts": 0, "next_attempt_at": "2026-11-28T09:00:00Z", "sent_at": None, "last_error": None,
                 "external_ref": None}}}}})
def requeue_notification(notification_id: int, request: Request, engine: EngineDep, now: NowDep) -> dict[str, Any]:
    """Give a dead notification another round of attempts (after fixing the channel, say)."""
    from alerts import outbox

    if not outbox.requeue(engine, notification_id, now=now):
        raise Problem(409, f"notification {notification_id} does not exist or is not dead")
    request.app.state.worker.wake.set()
    with session_scope(engine) as session:
        row = get_row(session, Notification, notification_id)
        return notification_public(row)  # type: ignore[arg-type]


@router.post("/v1/notifications/requeue", tags=["alerts"], dependencies=[Admin],
             responses={200: {"content": {"application/json": {"example": {"requeued": [7, 9, 12]}}}}})
def requeue_dead_notifications(request: Request, engine: EngineDep, now: NowDep,
                               receiver: Annotated[str | None, Query(max_length=200)] = None,
                               channel: Annotated[str | None, Query(max_length=16)] = None) -> dict[str, Any]:
    """Give every dead notification (of ``receiver``, on ``channel``) another round, after a long outage."""
    from alerts import outbox

    ids = outbox.requeue_dead(engine, now=now, receiver=receiver, channel=channel)
    if ids:
        request.app.state.worker.wake.set()
    return {"requeued": ids}


# -- catalog and health ----------------------------------------------------------------------


@router.get("/v1/catalog", tags=["catalog"])
def get_catalog_entries(catalog: CatalogDep) -> dict[str, Any]:
    return {"entries": catalog_public(catalog)}


def catalog_public(catalog: Catalog) -> list[dict[str, Any]]:
    out = []
    for e in catalog.entries.values():
        item = e.public()
        item.update({"refines": e.refines, "docs": e.docs, "causes": list(e.causes), "remediation": e.remediation,
                     "patterns": [{"provider": p.provider, "regex": p.regex.pattern, "auth_method": p.auth_method,
                                   "strict": p.strict, "weak": p.weak}
                                  for p in catalog.patterns if p.code == e.code]})
        out.append(item)
    return out


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
def readyz(request: Request, engine: EngineDep) -> Any:
    """The database answers, migrations are current and the delivery worker is alive."""
    problems = []
    try:
        current = storage.current_revision(engine)
        if current != storage.head_revision():
            problems.append(f"schema at {current}, expected {storage.head_revision()}")
    except Exception as exc:  # any database failure means not ready
        problems.append(f"database: {type(exc).__name__}")
    task = request.app.state.worker_task
    if task is not None and task.done():
        problems.append("delivery worker stopped")
    # Reads may work while writes fail (a full disk, a read-only file, a hung server): what the last
    # commits and worker ticks met says so (found by a fault review: ready while every event got 503).
    committer = getattr(request.app.state, "committer", None)
    if committer is not None and committer.failing_since is not None:
        try:  # no traffic may come to clear it (a balancer stopped sending): see for ourselves
            storage.write_probe(engine)
        except Exception:  # noqa: BLE001 - still failing: said below
            problems.append(f"ingest failing since {committer.failing_since:%H:%M:%S}: {committer.failure}")
        else:
            committer.failing_since = committer.failure = None
    worker = request.app.state.worker
    if task is not None and worker.failing_since is not None:
        problems.append(f"delivery worker failing since {worker.failing_since:%H:%M:%S}: {worker.failure}")
    if problems:
        raise Problem(503, "; ".join(problems))
    return {"status": "ready"}
