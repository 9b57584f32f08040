"""``POST /v1/webhooks/stitch/{token}``: Stitch's post-load webhook as a success signal.

Stitch posts one request per table each time data is loaded (``User-Agent: StitchLoadingWebhook``,
body ``{"integration_name": "shopify", "tables": [{"max_time_extracted": …}, …], …}``); it signs
nothing, so the URL's last segment is the secret (one of ``[webhooks.stitch] secrets``, compared in
constant time). A load proves the integration's credentials work again: it resolves the open alerts
of that integration — matched by integration id, by the Stitch source name the poller recorded
(label ``stitch_source``) or by display name — that were last seen *before* the loaded data was
extracted (an older load says nothing about a newer failure). A load that matches no open alert is
acknowledged and stores nothing (``ignored: 1``).

The steps and refusals are those of :mod:`alerts.web.webhooks` (415, 401 before parsing, 400, 422).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlmodel import select

from alerts import ingest
from alerts.catalog import Catalog
from alerts.config import Settings
from alerts.ingest import IngestResult
from alerts.models import AlertState, AuthErrorEvent, EventStatus, as_utc
from alerts.sources import signing
from alerts.sources.stitch import PostLoad, parse_post_load
from alerts.sources.vendor import AdapterError
from alerts.storage import Alert, session_scope
from alerts.web.guard import Refusal
from alerts.web.webhooks import _authenticate, _decode, _doc, _json_body, _now

router = APIRouter(tags=["webhooks"])

EXAMPLE = {
    "version": "1.0",
    "minimum_sdc_batched_at": "2026-11-28T09:45:08.026Z",
    "integration_name": "shopify",
    "new_version": False,
    "source_root_table_name": "orders",
    "destination_root_table_name": "orders",
    "table_version": 0,
    "tables": [{"source_table_name": "orders", "destination_table_name": "orders", "num_rows": 100,
                "num_rows_rejected": 0, "max_time_extracted": "2026-11-28T09:43:09.030Z"}],
}
STITCH_DOC = _doc({"post_load": {"summary": "a table of an integration was loaded", "value": EXAMPLE}},
                  ok={"accepted": 1, "duplicates": 0, "alert_ids": [1], "ignored": 0})


@router.post("/v1/webhooks/stitch/{token}", summary="Stitch post-load webhooks (a load resolves)", **STITCH_DOC)
async def stitch_webhook(request: Request, token: str) -> JSONResponse:
    """A load of an integration's data resolves its open alerts. ``token`` is one of
    ``[webhooks.stitch] secrets``; Stitch signs nothing, so the URL is the secret: never log it."""
    body = await _json_body(request)
    _authenticate(request, "stitch", lambda keys: signing.match_token(token, keys))
    return await _post_load(request, body)


@router.post("/v1/webhooks/stitch", include_in_schema=False)
async def stitch_webhook_without_token(request: Request) -> JSONResponse:
    body = await _json_body(request)
    _authenticate(request, "stitch", lambda keys: signing.match_token(None, keys))
    return await _post_load(request, body)


@router.post("/v1/webhooks/stitch/{rest:path}", include_in_schema=False)  # "a/b", "": not a token
async def stitch_webhook_other_path(request: Request, rest: str) -> JSONResponse:
    """The answer of a wrong token (401), not a 405 that would tell this source exists (R1.8)."""
    await _json_body(request)
    raise Refusal.unauthorized("unknown_source")


async def _post_load(request: Request, body: bytes) -> JSONResponse:
    try:
        load = parse_post_load(_decode(body))
    except AdapterError as exc:
        raise Refusal(422, str(exc), reason="invalid_payload") from None
    app = request.app
    result, ignored = await run_in_threadpool(
        resolve_loaded, load, engine=app.state.engine, settings=app.state.settings, catalog=app.state.catalog,
        now=_now(request), body_sha256=hashlib.sha256(body).hexdigest(),
    )
    app.state.worker.wake.set()
    return JSONResponse({"accepted": result.accepted, "duplicates": result.duplicates,
                         "alert_ids": result.alert_ids, "ignored": ignored})


def _matches(alert: Alert, name: str) -> bool:
    """An alert of a Stitch integration (label ``pipeline = stitch``) that this load names.

    Another tool's connector with the same name (a Fivetran "shopify") is never resolved by a Stitch load.
    """
    wanted = name.casefold()
    if str((alert.labels or {}).get("pipeline", "")).casefold() != "stitch":
        return False
    return (
        alert.integration_id.casefold() == wanted
        or str((alert.labels or {}).get("stitch_source", "")).casefold() == wanted
        or (alert.integration_name or "").casefold() == wanted
    )


def resolve_loaded(
    load: PostLoad, *, engine: Engine, settings: Settings, catalog: Catalog, now: datetime, body_sha256: str
) -> tuple[IngestResult, int]:
    """One success event per integration whose open alert the load answers; ``(result, ignored)``."""
    result = IngestResult()
    extracted = as_utc(load.extracted_at) if load.extracted_at else now
    with session_scope(engine) as session:
        open_alerts = session.exec(
            select(Alert).where(Alert.state != AlertState.resolved.value).limit(10_000)
        ).all()
        targets = sorted({
            a.integration_id for a in open_alerts
            if _matches(a, load.integration_name) and extracted > as_utc(a.last_seen)
        })
        for i, integration_id in enumerate(targets):
            event = AuthErrorEvent(
                integration_id=integration_id,
                status=EventStatus.succeeded,
                source="stitch",
                occurred_at=extracted,
                event_id=f"stitch-load-{body_sha256[:48]}" + (f"-{i}" if i else ""),
                labels={"pipeline": "stitch"},
            )
            ingest.apply_event(session, event, settings=settings, catalog=catalog, now=now, result=result,
                               body_sha256=body_sha256)
    return result, 0 if targets else 1
