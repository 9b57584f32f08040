"""``/v1/tokens``: refresh-token metadata, so `alerts` can warn before a token expires."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, StringConstraints, TypeAdapter, ValidationError, field_validator
from sqlmodel import select

from alerts import tokens
from alerts.durations import bounded_utc
from alerts.redact import sanitize, visible
from alerts.storage import Token, session_scope
from alerts.web.api import Admin, CatalogDep, EngineDep, NowDep, SettingsDep, read_json
from alerts.web.problems import Problem

router = APIRouter(tags=["tokens"])


class TokenInfo(BaseModel):
    """What is known about one integration's refresh token. Never send the token itself."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"integration_id": "ga4-marketing", "provider": "google", "issued_at": "2026-11-25T09:00:00Z",
         "scopes": ["https://www.googleapis.com/auth/analytics.readonly"]},
        {"integration_id": "xero-books", "provider": "xero", "last_used_at": "2026-11-20T02:00:00Z"},
        {"integration_id": "sf-prod", "expires_at": "2027-01-01T00:00:00Z"},
    ]})

    integration_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    integration_name: Annotated[str, StringConstraints(max_length=1000)] | None = None
    provider: Annotated[str, StringConstraints(max_length=200)] | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    scopes: list[Annotated[str, StringConstraints(max_length=500)]] | None = None
    reauthorize_url: Annotated[str, StringConstraints(max_length=2000)] | None = None

    @field_validator("issued_at", "expires_at", "last_used_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("needs a timezone (RFC 3339)")
        return bounded_utc(v) if v is not None else v  # 1970 to 9000: room for a lifetime or duration

    @field_validator("integration_id")
    @classmethod
    def _visible(cls, v: str) -> str:
        if not visible(sanitize(v, limit=200)):
            raise ValueError("needs a visible character (it names the integration in every message)")
        return v


_many = TypeAdapter(list[TokenInfo])


@router.post("/v1/tokens", status_code=202, dependencies=[Admin], openapi_extra={"requestBody": {
    "required": True, "content": {"application/json": {
        "schema": {"oneOf": [{"$ref": "#/components/schemas/TokenInfo"},
                             {"type": "array", "items": {"$ref": "#/components/schemas/TokenInfo"}}]},
        "example": TokenInfo.model_config["json_schema_extra"]["examples"][0]}}}})  # type: ignore[index]
async def post_tokens(request: Request, engine: EngineDep, settings: SettingsDep, catalog: CatalogDep,
                      now: NowDep) -> dict[str, Any]:
    """Record token lifetimes (one object or an array). A newer ``issued_at`` resolves an expiry warning."""
    data, _ = await read_json(request)
    try:
        items = _many.validate_python(data if isinstance(data, list) else [data])
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = err["loc"] if isinstance(data, list) else err["loc"][1:]  # one object: no array index to name
        where = ".".join(str(p) for p in loc) or "body"
        raise Problem(422, f"{where}: {err['msg']}") from None
    if len(items) > settings.server.max_batch:
        raise Problem(422, f"at most {settings.server.max_batch} tokens per request")

    def store() -> list[dict[str, Any]]:
        with session_scope(engine) as session:
            rows = [tokens.upsert(session, data=i.model_dump(), settings=settings, catalog=catalog, now=now)
                    for i in items]
            out = [tokens.public(t, settings=settings, catalog=catalog, now=now) for t in rows]
        tokens.check(engine, settings=settings, catalog=catalog, now=now)
        return out

    out = await run_in_threadpool(store)
    request.app.state.worker.wake.set()
    return {"tokens": out}


@router.get("/v1/tokens", dependencies=[Admin])
def get_tokens(engine: EngineDep, settings: SettingsDep, catalog: CatalogDep, now: NowDep) -> dict[str, Any]:
    """Every known token with its expiry (reported, or from the provider's documented lifetime)."""
    with session_scope(engine) as session:
        rows = session.exec(select(Token).order_by(Token.integration_id)).all()
        return {"tokens": [tokens.public(t, settings=settings, catalog=catalog, now=now) for t in rows]}
