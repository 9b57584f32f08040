"""``/v1/silences``: quiet what you already know about."""

from __future__ import annotations

import difflib
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlmodel import select

from alerts import ingest, silences
from alerts.durations import bounded_utc, parse_duration
from alerts.models import as_utc
from alerts.redact import clean_field, clean_id, visible
from alerts.storage import Silence, get_row, session_scope
from alerts.web.api import Admin, CatalogDep, EngineDep, NowDep, SettingsDep, read_json
from alerts.web.problems import Problem

router = APIRouter(tags=["silences"])


class SilenceCreate(BaseModel):
    """Silence alerts matching every given matcher. Give ``ends_at`` or ``duration`` (e.g. ``24h``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"integration": "sf-*", "provider": "salesforce", "duration": "24h",
                                         "author": "alice", "comment": "Salesforce maintenance window"}]},
    )

    integration: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None  # "*": every one
    provider: Annotated[str, StringConstraints(max_length=100)] | None = None
    code: Annotated[str, StringConstraints(max_length=100)] | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    duration: str | None = Field(None, description="How long from starts_at, e.g. 30m, 24h, 7d")
    author: Annotated[str, StringConstraints(max_length=200)] = ""
    comment: Annotated[str, StringConstraints(max_length=1000)] = ""

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("needs a timezone (RFC 3339)")
        return bounded_utc(v) if v is not None else v  # 1970 to 9000: room for a lifetime or duration

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v


def create_silence(engine: Any, *, body: SilenceCreate, now: datetime, settings: Any, catalog: Any) -> Silence:
    if body.integration is None and not body.provider and not body.code:  # an empty matcher is no request to mute all
        raise Problem(422, 'give at least one of integration, provider, code ("integration": "*" silences every '
                           "integration)")
    starts = as_utc(body.starts_at) if body.starts_at else now
    if body.ends_at is not None:
        ends = as_utc(body.ends_at)
    elif body.duration is not None:
        ends = starts + parse_duration(body.duration)
    else:
        raise Problem(422, "give ends_at or duration")
    if ends <= starts or ends <= now:
        raise Problem(422, "ends_at must be after starts_at and in the future")
    if ends - starts > timedelta(days=366):
        raise Problem(422, "a silence lasts at most a year")
    if body.code and catalog.get(body.code) is None:  # a typo would silence nothing, and say nothing
        near = difflib.get_close_matches(body.code, list(catalog.entries), n=1)
        raise Problem(422, f"code: no catalog code {body.code!r}" + (f" (did you mean {near[0]}?)" if near else
                                                                   " (alerts catalog lists them)"))
    integration = clean_id(body.integration, 200) if body.integration is not None else "*"
    if not visible(integration):  # "\u0000" or "\u202e" would clean to nothing: not "every integration"
        raise Problem(422, 'integration: needs a visible character ("*" silences every integration)')
    row = Silence(
        integration=integration,  # a glob over ids, cleaned as ids are
        provider=catalog.canonical_provider(body.provider),
        code=body.code or None,
        starts_at=starts,
        ends_at=ends,
        author=clean_field(body.author, 200) or "",
        comment=clean_field(body.comment, 1000) or "",
    )
    with session_scope(engine) as session:
        session.add(row)
    ingest.refresh_silences(engine, settings=settings, catalog=catalog, now=now)
    return row


def expire_silence(engine: Any, silence_id: int, *, now: datetime, settings: Any, catalog: Any) -> Silence:
    with session_scope(engine) as session:
        row = get_row(session, Silence, silence_id)
        if row is None:
            raise Problem(404, f"no silence {silence_id}")
        if as_utc(row.ends_at) > now:
            row.ends_at = max(now, as_utc(row.starts_at))
    ingest.refresh_silences(engine, settings=settings, catalog=catalog, now=now)
    return row


def list_silences(engine: Any, *, now: datetime, include_expired: bool) -> list[Silence]:
    with session_scope(engine) as session:
        stmt = select(Silence)
        if not include_expired:
            stmt = stmt.where(Silence.ends_at > now)
        return list(session.exec(stmt.order_by(Silence.id)).all())


@router.post("/v1/silences", status_code=201, dependencies=[Admin],
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/SilenceCreate"},
                 "example": SilenceCreate.model_config["json_schema_extra"]["examples"][0]}}}})  # type: ignore[index]
async def post_silence(request: Request, engine: EngineDep, settings: SettingsDep, catalog: CatalogDep,
                       now: NowDep) -> dict[str, Any]:
    data, _ = await read_json(request)
    try:
        body = SilenceCreate.model_validate(data)
    except Exception as exc:
        errors = getattr(exc, "errors", lambda: [])()
        first = errors[0] if errors else {"loc": [], "msg": str(exc)}
        where = ".".join(str(p) for p in first.get("loc", [])) or "body"
        raise Problem(422, f"{where}: {first.get('msg')}") from None
    row = await run_in_threadpool(create_silence, engine, body=body, now=now, settings=settings, catalog=catalog)
    request.app.state.worker.wake.set()
    return silences.public(row, now=now)


@router.get("/v1/silences", dependencies=[Admin])
def get_silences(engine: EngineDep, now: NowDep,
                 state: Annotated[str, Query(pattern="^(active|all)$")] = "active") -> dict[str, Any]:
    """Silences in effect or yet to start (``state=all`` includes expired ones)."""
    rows = list_silences(engine, now=now, include_expired=state == "all")
    return {"silences": [silences.public(r, now=now) for r in rows]}


@router.delete("/v1/silences/{silence_id}", dependencies=[Admin])
def delete_silence(silence_id: int, request: Request, engine: EngineDep, settings: SettingsDep, catalog: CatalogDep,
                   now: NowDep) -> dict[str, Any]:
    """Expire a silence now; alerts it covered that are still firing send one message."""
    row = expire_silence(engine, silence_id, now=now, settings=settings, catalog=catalog)
    request.app.state.worker.wake.set()
    return silences.public(row, now=now)
