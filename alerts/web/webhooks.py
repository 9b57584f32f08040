"""``/v1/webhooks/…``: Fivetran, Airbyte, Alertmanager and PagerDuty senders, and signed native events.

Every route runs the same steps, cheapest first, and each refusal stores nothing:

1. (:class:`~alerts.web.guard.GuardMiddleware`) a client with too many recent 401s → 429;
   (:class:`~alerts.web.problems.BodyLimit`) a body over ``server.max_body_bytes`` → 413.
2. ``Content-Type`` other than ``application/json`` → 415.
3. Authenticate over the exact bytes received, before parsing (R1.1): HMAC signature, path token,
   bearer token or routing key against ``[webhooks.<kind>] secrets`` → 401 (one body for every
   failure; ``timestamp_out_of_tolerance`` is the only named one). With no secret configured, a
   vendor endpoint refuses everything unless ``allow_unsigned = true``.
4. Strict JSON decoding (R3.2) → 400; the vendor's shape (:mod:`alerts.sources`) → 422.
5. Ingest in one transaction; answer 2xx only after the commit. A replay (same idempotency key) is
   answered 2xx and counted as a duplicate, not processed twice.

``install(app)`` wires this module into an app: routes, the guard middleware, the refusal handler
and the start-up warnings.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.convertors import Convertor, register_url_convertor

from alerts import ingest
from alerts.catalog import Catalog
from alerts.config import Settings, WebhookSource, is_loopback_host
from alerts.ingest import IngestResult
from alerts.models import AlertState, AuthErrorEvent, EventStatus
from alerts.render import Renderer
from alerts.sources import airbyte, alertmanager, fivetran, pagerduty, signing
from alerts.sources.envelope import BadPayload, decode_json
from alerts.sources.native import RESERVED_ID_PREFIXES
from alerts.sources.vendor import AdapterError, Batch, Stale
from alerts.storage import Alert, session_scope
from alerts.web.guard import KINDS, Guard, GuardMiddleware, Refusal, refusal_response
from alerts.web.openapi_examples import add_examples
from alerts.web.problems import BodyTooLarge

log = logging.getLogger("alerts.webhooks")

router = APIRouter(tags=["webhooks"])

# Hosts the vendors' own links live on; allowed for links those adapters build or receive.
VENDOR_HOSTS = {"fivetran": ("fivetran.com",), "airbyte": ("cloud.airbyte.com",)}


# -- the steps every route shares -------------------------------------------------------------------


def _now(request: Request) -> datetime:
    return request.app.state.clock()


def _guard(request: Request) -> Guard:
    return request.app.state.webhook_guard


async def _json_body(request: Request) -> bytes:
    """The raw body of an ``application/json`` request (415 otherwise; 413 over the cap)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise Refusal(415, "send the body as application/json", reason="unsupported_media_type")
    try:
        return await request.body()
    except BodyTooLarge:
        limit = request.app.state.settings.server.max_body_bytes
        raise Refusal(413, f"body larger than {limit} bytes", reason="body_too_large") from None


def _decode(body: bytes) -> Any:
    try:
        return decode_json(body)
    except BadPayload as exc:
        raise Refusal(400, str(exc), reason="bad_json") from None


def _keys(request: Request, kind: str) -> list[tuple[int, bytes]] | None:
    """The secrets in force for ``kind``; ``None`` when the endpoint is open (no secrets, allow_unsigned)."""
    source: WebhookSource = getattr(request.app.state.settings.webhooks, kind)
    if not source.secrets:
        if source.allow_unsigned:
            return None
        _guard(request).warn_once_a_minute(
            f"closed:{kind}", "webhook refused: no secrets configured",
            source=kind, hint=f"set [webhooks.{kind}] secrets (or allow_unsigned = true)",
        )
        raise Refusal.unauthorized("not_configured")
    keys = signing.candidates(source.secrets, now=_now(request))
    if not keys:
        _guard(request).warn_once_a_minute(
            f"expired:{kind}", "webhook refused: every configured secret is past its not_after", source=kind,
        )
    return keys


def _authenticate(request: Request, kind: str, check: Any) -> None:
    """Run ``check(keys)`` (→ :class:`~alerts.sources.signing.Verified`) unless the endpoint is open."""
    keys = _keys(request, kind)
    if keys is None:
        return
    try:
        verified = check(keys)
    except signing.Unauthenticated as exc:
        raise Refusal.unauthorized(exc.reason) from None
    _guard(request).matched(kind, verified.index)


def _ingest_settings(settings: Settings, kind: str) -> Settings:
    """``settings`` with the vendor's own link hosts allowed (cached per settings object)."""
    hosts = VENDOR_HOSTS.get(kind)
    if not hosts:
        return settings
    hit = _DERIVED.get(kind)
    if hit is not None and hit[0] is settings:
        return hit[1]
    links = settings.links.model_copy(update={"allowed_hosts": [*settings.links.allowed_hosts, *hosts]})
    derived = settings.model_copy(update={"links": links})
    _DERIVED[kind] = (settings, derived)
    return derived


_DERIVED: dict[str, tuple[Settings, Settings]] = {}


def apply_batch(
    batch: Batch,
    *,
    engine: Engine,
    settings: Settings,
    catalog: Catalog,
    now: datetime,
    body_sha256: str,
    renderer: Renderer | None = None,
) -> IngestResult:
    """Store a vendor batch: its events in one ingest transaction (the rules of ``POST /v1/events``).

    PagerDuty ``resolve``/``acknowledge`` name an alert by ``dedup_key``: those are looked up first,
    and acknowledgements (a state change, not an event) are applied in their own short transaction —
    which also owes the alert's Slack posts an edit (no Acknowledge button, "Acknowledged by …"), as
    an acknowledgement from the API does (needs ``renderer``).
    """
    from alerts.post_edits import owe_updates_elsewhere

    acked = IngestResult()
    events: list[AuthErrorEvent] = []
    lookups = [item for item in batch.items if _by_dedup_key(item.event)]
    targets: dict[int, list[str]] = {}
    if lookups:
        with session_scope(engine) as session:
            for item in lookups:
                ev = item.event
                targets[id(item)] = _dedup_targets(session, ev.labels[pagerduty.DEDUP_LABEL], ev.integration_id)
                if item.action == "acknowledge":
                    for alert in _open_alerts(session, targets[id(item)]):
                        by = f"{ev.source} acknowledge"
                        if ingest.acknowledge_alert(session, alert, now=now, by=by):
                            acked.accepted += 1
                            if renderer is not None:
                                session.flush()
                                owe_updates_elsewhere(session, alert, how="ack", by=by, settings=settings,
                                                      catalog=catalog, renderer=renderer, now=now)
                        acked.add_alert(alert.id)
    for item in batch.items:
        if item.action == "acknowledge":
            continue
        event = item.event
        if item.fallback_code and not event.error_code and catalog.classify(
            event.error, catalog.canonical_provider(event.provider), event.auth_method
        ) is None:
            event.error_code = item.fallback_code
        for i, integration_id in enumerate(targets.get(id(item), [event.integration_id])):
            one = event if i == 0 else _copy(event, integration_id, suffix=i)
            one.integration_id = integration_id
            events.append(one)
    result = ingest.ingest(events, engine=engine, settings=settings, catalog=catalog, now=now,
                           body_sha256=body_sha256) if events else IngestResult()
    _remember_dedup_keys(engine, events, result)
    result.accepted += acked.accepted
    for alert_id in acked.alert_ids:
        result.add_alert(alert_id)
    return result


def _remember_dedup_keys(engine: Engine, events: list[AuthErrorEvent], result: IngestResult) -> None:
    """A PagerDuty trigger that counted into an alert already open (opened by another source, or by a
    trigger without that key) leaves its ``dedup_key`` on it too, so the ``resolve`` or ``acknowledge``
    naming that key finds it (found by a README walk-through: they matched nothing and said accepted)."""
    keys = {e.integration_id: e.labels[pagerduty.DEDUP_LABEL] for e in events if e.source == "pagerduty"
            and e.status == EventStatus.failed and pagerduty.DEDUP_LABEL in e.labels}
    if not keys or not result.alert_ids:
        return
    with session_scope(engine) as session:
        for alert in session.exec(select(Alert).where(Alert.id.in_(result.alert_ids),  # type: ignore[union-attr]
                                                      Alert.state != AlertState.resolved.value)).all():
            key = keys.get(alert.integration_id)
            if key is not None and (alert.labels or {}).get(pagerduty.DEDUP_LABEL) != key:
                alert.labels = {**(alert.labels or {}), pagerduty.DEDUP_LABEL: key}
                session.add(alert)


def _by_dedup_key(event: AuthErrorEvent) -> bool:
    return (event.source == "pagerduty" and pagerduty.DEDUP_LABEL in event.labels
            and event.status == EventStatus.succeeded)


def _copy(event: AuthErrorEvent, integration_id: str, *, suffix: int) -> AuthErrorEvent:
    return AuthErrorEvent(**{**event.__dict__, "integration_id": integration_id,
                             "event_id": f"{event.event_id}-{suffix}" if event.event_id else None,
                             "labels": dict(event.labels)})


def _open_alerts(session: Session, integration_ids: list[str]) -> list[Alert]:
    stmt = select(Alert).where(Alert.integration_id.in_(integration_ids), Alert.state != AlertState.resolved.value)
    return list(session.exec(stmt).all())


def _dedup_targets(session: Session, dedup_key: str, default: str) -> list[str]:
    """The integrations whose open alert was triggered with ``dedup_key`` (else the key itself)."""
    stmt = select(Alert).where(Alert.state != AlertState.resolved.value).limit(10_000)
    found = sorted({a.integration_id for a in session.exec(stmt).all()
                    if (a.labels or {}).get(pagerduty.DEDUP_LABEL) == dedup_key})
    return found or [default]


async def _store(request: Request, kind: str, batch: Batch, body: bytes) -> IngestResult:
    app = request.app
    result = await run_in_threadpool(
        apply_batch, batch, engine=app.state.engine, settings=_ingest_settings(app.state.settings, kind),
        catalog=app.state.catalog, now=_now(request), body_sha256=hashlib.sha256(body).hexdigest(),
        renderer=app.state.renderer,
    )
    app.state.worker.wake.set()
    metrics = getattr(app.state, "metrics", None)
    if metrics is not None and hasattr(metrics, "count_events"):
        metrics.count_events(kind, accepted=result.accepted, duplicates=result.duplicates)
    return result


def _answer(result: IngestResult, batch: Batch, status: int = 200, **extra: Any) -> JSONResponse:
    return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates, "alert_ids": result.alert_ids,
                         "ignored": batch.ignored, **extra}, status_code=status)


def _adapt(fn: Any, *args: Any, **kw: Any) -> Batch:
    try:
        return fn(*args, **kw)
    except AdapterError as exc:
        raise Refusal(422, str(exc), reason="invalid_payload") from None
    except Stale:
        raise Refusal.unauthorized("timestamp_out_of_tolerance") from None


def _aliases(request: Request) -> Mapping[str, str]:
    return request.app.state.catalog.aliases


# -- OpenAPI ------------------------------------------------------------------------------------------

ACCEPTED = {"accepted": 1, "duplicates": 0, "alert_ids": [1], "ignored": 0}
UNAUTHORIZED_EXAMPLE = {"type": "about:blank", "title": "Unauthorized", "status": 401,
                        "detail": "missing or invalid credentials"}


def _doc(examples: dict[str, Any], *, headers: list[dict[str, Any]] = (), ok: dict[str, Any] | None = None,
         status: int = 200) -> dict[str, Any]:
    problem = {"application/problem+json": {"example": UNAUTHORIZED_EXAMPLE}}
    return {
        "openapi_extra": {
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"type": "object", "additionalProperties": True}, "examples": examples}}},
            "parameters": list(headers),
        },
        "responses": {
            status: {"description": "stored (or acknowledged as a duplicate)",
                     "content": {"application/json": {"example": ok or ACCEPTED}}},
            401: {"description": "not authenticated (or timestamp_out_of_tolerance)", "content": problem},
            413: {"description": "body too large"},
            415: {"description": "not application/json"},
            422: {"description": "not the shape this sender sends"},
            429: {"description": "too many unauthorized requests from this address"},
        },
    }


def _header(name: str, description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": {"type": "string"},
            "description": description}


FIVETRAN_DOC = _doc(fivetran.EXAMPLES, headers=[_header(
    "X-Fivetran-Signature-256", "hex HMAC-SHA256 of the body with the webhook secret", required=True)])
AIRBYTE_DOC = _doc(airbyte.EXAMPLES)
ALERTMANAGER_DOC = _doc(alertmanager.EXAMPLES, headers=[_header(
    "Authorization", "Bearer <token> from [webhooks.alertmanager] secrets (Alertmanager http_config.authorization)",
    required=True)])
PAGERDUTY_DOC = _doc(pagerduty.EXAMPLES, status=202,
                     ok={"status": "success", "message": "Event processed", "dedup_key": "sf-prod"})


# -- routes -------------------------------------------------------------------------------------------


@router.post("/v1/webhooks/fivetran", summary="Fivetran webhook events", **FIVETRAN_DOC)
async def fivetran_webhook(request: Request) -> JSONResponse:
    """Fivetran ``sync_end`` / ``connection_failure`` / ``connection_successful`` / ``test_event``.

    Signed with ``X-Fivetran-Signature-256``; ``created`` must lie within the last 24 hours.
    """
    body = await _json_body(request)
    header = request.headers.get(fivetran.SIGNATURE_HEADER)
    _authenticate(request, "fivetran", lambda keys: signing.verify_fivetran(header, body, keys))
    batch = _adapt(fivetran.parse, _decode(body), now=_now(request), aliases=_aliases(request))
    if batch.test:
        return JSONResponse({"accepted": 0, "duplicates": 0, "alert_ids": [], "ignored": 0, "test": True})
    _fivetran_links(request.app.state.settings, batch)
    return _answer(await _store(request, "fivetran", batch, body), batch)


def _fivetran_links(settings: Settings, batch: Batch) -> None:
    """Failures get the connector's Fivetran page as their link, unless config names a better one.

    At send time :mod:`alerts.fivetran_links` swaps it for a fresh Connect Card link when
    ``[fivetran]`` API credentials are configured.
    """
    for item in batch.items:
        ev = item.event
        if ev.status != EventStatus.failed or ev.reauthorize_url:
            continue
        reg = settings.integration(ev.integration_id)
        if (reg and reg.reauthorize_url) or settings.links.reauthorize or settings.links.providers.get(ev.provider or ""):
            continue
        ev.reauthorize_url = settings.fivetran.dashboard_url.replace("{integration_id}", quote(ev.integration_id, safe=""))


@router.post("/v1/webhooks/airbyte/{token}", summary="Airbyte sync notifications", **AIRBYTE_DOC)
async def airbyte_webhook(request: Request, token: str) -> JSONResponse:
    """Airbyte's webhook notification (failed and successful syncs). ``token`` is one of
    ``[webhooks.airbyte] secrets``; Airbyte signs nothing, so the URL is the secret: never log it."""
    body = await _json_body(request)
    _authenticate(request, "airbyte", lambda keys: signing.match_token(token, keys))
    return await _airbyte(request, body)


@router.post("/v1/webhooks/airbyte", include_in_schema=False)
async def airbyte_webhook_without_token(request: Request) -> JSONResponse:
    body = await _json_body(request)
    _authenticate(request, "airbyte", lambda keys: signing.match_token(None, keys))
    return await _airbyte(request, body)


async def _airbyte(request: Request, body: bytes) -> JSONResponse:
    batch = _adapt(airbyte.parse, _decode(body), body=body, aliases=_aliases(request))
    return _answer(await _store(request, "airbyte", batch, body), batch)


@router.post("/v1/webhooks/alertmanager", summary="Prometheus Alertmanager / Grafana webhook (v4)",
             **ALERTMANAGER_DOC)
async def alertmanager_webhook(request: Request) -> JSONResponse:
    """One event per alert; labels name the integration (``[webhooks.alertmanager] labels``)."""
    body = await _json_body(request)
    token = signing.bearer_token(request.headers.get("authorization"))
    _authenticate(request, "alertmanager", lambda keys: signing.match_token(token, keys))
    config = request.app.state.settings.webhooks.alertmanager
    batch = _adapt(alertmanager.parse, _decode(body), config=config)
    return _answer(await _store(request, "alertmanager", batch, body), batch)


@router.post("/v1/webhooks/pagerduty", summary="PagerDuty Events API v2 bodies", **PAGERDUTY_DOC)
async def pagerduty_webhook(request: Request) -> JSONResponse:
    """``trigger`` opens, ``resolve`` resolves, ``acknowledge`` acknowledges. The ``routing_key`` in
    the body is the credential, so this is the one route that must decode before it authenticates;
    a body that does not decode is refused as unauthenticated."""
    body = await _json_body(request)
    keys = _keys(request, "pagerduty")
    try:
        data = decode_json(body)
    except BadPayload as exc:
        if keys is not None:
            raise Refusal.unauthorized("undecodable") from None
        raise Refusal(400, str(exc), reason="bad_json") from None
    if keys is not None:
        try:
            verified = signing.match_token(pagerduty.routing_key(data), keys)
        except signing.Unauthenticated as exc:
            raise Refusal.unauthorized(exc.reason) from None
        _guard(request).matched("pagerduty", verified.index)
    batch = _adapt(pagerduty.parse, data, body=body)
    result = await _store(request, "pagerduty", batch, body)
    event = batch.items[0].event
    return JSONResponse({"status": "success", "message": "Event processed",
                         "dedup_key": event.labels.get(pagerduty.DEDUP_LABEL, event.integration_id),
                         "accepted": result.accepted, "duplicates": result.duplicates,
                         "alert_ids": result.alert_ids}, status_code=202)


class _UnknownSource(Convertor):
    """A path segment that is not one of the known kinds (so the catch-all never shadows them)."""

    regex = "(?!(?:" + "|".join(KINDS) + ")(?:/|$))[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("alerts_unknown_source", _UnknownSource())


@router.post("/v1/webhooks/{kind:alerts_unknown_source}", include_in_schema=False)
@router.post("/v1/webhooks/{kind:alerts_unknown_source}/{rest:path}", include_in_schema=False)
@router.post("/v1/webhooks/fivetran/{rest:path}", include_in_schema=False)
@router.post("/v1/webhooks/airbyte/{rest:path}", include_in_schema=False)  # after /airbyte/{token}: "a/b", ""
@router.post("/v1/webhooks/alertmanager/{rest:path}", include_in_schema=False)
@router.post("/v1/webhooks/pagerduty/{rest:path}", include_in_schema=False)
async def unknown_source(request: Request) -> JSONResponse:
    """The same answer as a bad signature: an unknown source learns nothing (R1.8)."""
    await _json_body(request)
    raise Refusal.unauthorized("unknown_source")


@router.api_route("/v1/webhooks/{rest:path}", methods=["GET", "PUT", "PATCH", "DELETE", "OPTIONS"],
                  include_in_schema=False)
async def wrong_method(request: Request) -> JSONResponse:
    """Webhooks are POSTed; any other method gets 405 without echoing the path (it may hold a token)."""
    raise Refusal(405, "webhooks are sent with POST", reason="method_not_allowed", headers={"Allow": "POST"})


# -- native events (POST /v1/events) ------------------------------------------------------------------


async def verify_native(request: Request) -> str | None:
    """Check the Standard Webhooks signature of a ``POST /v1/events`` request.

    Returns the verified ``webhook-id`` (the idempotency key), or ``None`` when no native secret is
    configured (unsigned events are accepted then, and the server warns at start-up on a
    non-loopback address). Raises :class:`~alerts.web.guard.Refusal`.
    """
    source = request.app.state.settings.webhooks.native
    if not source.secrets:
        return None
    body = await _json_body(request)
    keys = signing.candidates(source.secrets, now=_now(request))
    try:
        verified = signing.verify_standard(request.headers, body, keys, now=_now(request), tolerance=source.tolerance)
    except signing.Unauthenticated as exc:
        raise Refusal.unauthorized(exc.reason) from None
    _guard(request).matched("native", verified.index)
    return verified.message_id


def with_delivery_id(events: list[AuthErrorEvent], message_id: str | None, *, many: bool) -> list[AuthErrorEvent]:
    """Events without their own ``event_id`` take the delivery's ``webhook-id`` (``<id>#<n>`` in an array:
    ``#`` is no character of an ``event_id`` a sender writes, so no later delivery's id can be one of these)."""
    if message_id:
        if message_id.startswith(RESERVED_ID_PREFIXES):  # as for an event_id: not another source's id
            message_id = "native-" + message_id
        for i, ev in enumerate(events):
            if not ev.event_id:
                ev.event_id = f"{message_id}#{i}" if many else message_id
    return events


# -- wiring -------------------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Add the webhook routes, the guard middleware and the refusal handler to ``app``."""
    settings: Settings = app.state.settings
    registry = getattr(getattr(app.state, "metrics", None), "registry", None)
    guard = Guard(clock=lambda: app.state.clock(),
                  limit=lambda: app.state.settings.webhooks.max_unauthorized_per_minute, registry=registry)
    app.state.webhook_guard = guard
    app.add_exception_handler(Refusal, refusal_response)  # type: ignore[arg-type]
    app.add_middleware(GuardMiddleware, guard=guard)
    app.include_router(router)
    add_examples(app)
    startup_warnings(settings)


def startup_warnings(settings: Settings) -> list[str]:
    """Warn about endpoints that accept unauthenticated requests; return the messages (for tests)."""
    out = []
    hooks = settings.webhooks
    if not hooks.native.secrets and not is_loopback_host(settings.server.host):
        out.append(f"POST /v1/events accepts UNSIGNED events on {settings.server.host}: "
                   "set [webhooks.native] secrets to require Standard Webhooks signatures")
    for kind in KINDS:
        source: WebhookSource = getattr(hooks, kind)
        if not source.secrets and source.allow_unsigned:
            out.append(f"/v1/webhooks/{kind} accepts UNAUTHENTICATED requests (allow_unsigned = true)")
    if settings.slack.signing_secret is not None and settings.slack.team_id is None:
        out.append("Slack buttons are accepted from ANY workspace the Slack app is installed in: "
                   "set [slack] team_id to accept only yours (R1.7)")
    for message in out:
        log.warning(message)
    return out
