"""The native event format of ``POST /v1/events`` (one object or an array of them)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from alerts.durations import bounded_utc
from alerts.models import AuthErrorEvent, EventStatus
from alerts.redact import sanitize, visible

EventId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
# The ids alerts makes for the events of its other sources: an event of this API naming one would claim
# it, and that source's real event would then count as its duplicate (and open nothing).
RESERVED_ID_PREFIXES = ("fivetran-", "airbyte-", "alertmanager-", "pagerduty-", "stitch-", "log-")
# Free text is sanitised and cut to size at ingest (R3.3), not rejected: only the body limit bounds it.
Text = str
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class NativeEvent(BaseModel):
    """One authentication-error (or success) event from any pipeline."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "integration_id": "sf-prod",
                    "integration_name": "Salesforce (prod)",
                    "provider": "salesforce",
                    "auth_method": "oauth2",
                    "error": "invalid_grant: expired access/refresh token",
                    "event_id": "run-2026-11-28-0930",
                },
                {"integration_id": "sf-prod", "status": "succeeded"},
            ]
        },
    )

    integration_id: ShortText
    error: Text | None = None
    status: Literal["failed", "succeeded"] = "failed"
    integration_name: Text | None = None
    provider: Annotated[str, StringConstraints(max_length=200)] | None = None
    auth_method: Literal["oauth2", "api_key", "basic"] | None = None
    error_code: Annotated[str, StringConstraints(max_length=100)] | None = None
    occurred_at: datetime | None = None
    account_id: Annotated[str, StringConstraints(max_length=1000)] | None = None
    event_id: EventId | None = None
    labels: dict[Annotated[str, StringConstraints(max_length=100)], Annotated[str, StringConstraints(max_length=1000)]] = Field(
        default_factory=dict, max_length=64
    )
    reauthorize_url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    authorized_by: Annotated[str, StringConstraints(max_length=320)] | None = None

    @field_validator("integration_id")
    @classmethod
    def _visible(cls, v: str) -> str:
        if not visible(sanitize(v, limit=200)):
            raise ValueError("integration_id needs a visible character (it names the integration in every message)")
        return v

    @field_validator("event_id")
    @classmethod
    def _not_reserved(cls, v: str | None) -> str | None:
        if v is not None and v.startswith(RESERVED_ID_PREFIXES):
            raise ValueError(f"event_id must not start with {v.split('-', 1)[0]}- (the ids alerts makes for that "
                             "source's webhooks)")
        return v

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("occurred_at needs a timezone (RFC 3339, e.g. 2026-11-28T09:30:00Z)")
        if v is not None:
            try:
                bounded_utc(v, latest=None)  # a time after now counts as now (ingest); one UTC cannot hold is no time
            except ValueError:
                raise ValueError("occurred_at is out of range (from 1970 to 9999-12-31 UTC)") from None
        return v

    def validate_failure(self) -> None:
        if self.status == "failed" and not (self.error or self.error_code):
            raise ValueError("error is required when status is 'failed'")

    def to_event(self, source: str = "native") -> AuthErrorEvent:
        return AuthErrorEvent(
            integration_id=self.integration_id,
            status=EventStatus(self.status),
            error=self.error,
            source=source,
            integration_name=self.integration_name,
            provider=self.provider,
            auth_method=self.auth_method,
            error_code=self.error_code,
            occurred_at=self.occurred_at,
            account_id=self.account_id,
            event_id=self.event_id,
            labels=dict(self.labels),
            reauthorize_url=self.reauthorize_url,
            authorized_by=self.authorized_by,
        )


class EventProblem(ValueError):
    """Which event and which field is wrong, for a problem+json answer."""

    def __init__(self, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


_one = TypeAdapter(NativeEvent)
_datetime = TypeAdapter(datetime)

# The common event, checked by hand: every key a known field, every value of the plainest valid
# form. What this does not recognise as valid goes through the model (_one), which accepts it the
# same way or says what is wrong; so the fast check only has to be conservative, never complete.
_TEXT_LIMITS = {
    "integration_id": 1000, "error": 1 << 30, "integration_name": 1 << 30, "provider": 200, "error_code": 100,
    "account_id": 1000, "reauthorize_url": 2000, "authorized_by": 320,
}
_STATUS = {"failed": EventStatus.failed, "succeeded": EventStatus.succeeded}
_AUTH_METHODS = frozenset(("oauth2", "api_key", "basic"))
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}").fullmatch
_FIELDS = frozenset(NativeEvent.model_fields)


def _fast(item: dict[str, Any], source: str) -> AuthErrorEvent | None:
    """``item`` as an event when it is plainly valid (as the model would read it), else ``None``."""
    if not _FIELDS.issuperset(item):
        return None
    for key, value in item.items():
        limit = _TEXT_LIMITS.get(key)
        if limit is not None and value is not None and (type(value) is not str or len(value) > limit):
            return None
    iid = item.get("integration_id")
    given = item.get("status", "failed")
    status = _STATUS.get(given) if type(given) is str else None
    if not iid or status is None or not (iid.isprintable() and iid.isascii() and iid.strip()):
        return None  # a blank or control-laden id: the model says what is wrong with it
    auth = item.get("auth_method")
    if auth is not None and (type(auth) is not str or auth not in _AUTH_METHODS):
        return None
    eid = item.get("event_id")
    if eid is not None and not (type(eid) is str and _EVENT_ID(eid) and not eid.startswith(RESERVED_ID_PREFIXES)):
        return None
    if status is EventStatus.failed and not (item.get("error") or item.get("error_code")):
        return None
    occurred = item.get("occurred_at")
    if occurred is not None:
        try:
            occurred = _datetime.validate_python(occurred)
        except ValidationError:
            return None
        if occurred.tzinfo is None:
            return None
        try:
            bounded_utc(occurred, latest=None)
        except ValueError:
            return None
    labels = item.get("labels")
    if labels is None:
        if "labels" in item:
            return None
        labels = {}
    elif type(labels) is not dict or len(labels) > 64 or not all(
            type(k) is str and type(v) is str and len(k) <= 100 and len(v) <= 1000 for k, v in labels.items()):
        return None
    else:
        labels = dict(labels)
    return AuthErrorEvent(
        integration_id=iid, status=status, error=item.get("error"), source=source,
        integration_name=item.get("integration_name"), provider=item.get("provider"), auth_method=auth,
        error_code=item.get("error_code"), occurred_at=occurred, account_id=item.get("account_id"),
        event_id=eid, labels=labels, reauthorize_url=item.get("reauthorize_url"),
        authorized_by=item.get("authorized_by"),
    )


def parse_native(data: Any, *, max_batch: int, source: str = "native") -> list[AuthErrorEvent]:
    """:func:`parse_events` straight to :class:`AuthErrorEvent` s, the common event checked by hand."""
    if type(data) is dict:
        event = _fast(data, source)
        if event is not None:
            return [event]
    elif type(data) is list and 0 < len(data) <= max_batch:
        events = [_fast(item, source) if type(item) is dict else None for item in data]
        if None not in events:
            return events  # type: ignore[return-value]
    return [e.to_event(source) for e in parse_events(data, max_batch=max_batch)]


def _unsurrogated(value: Any) -> Any:
    """Lone surrogates (``"\\ud800"`` in JSON) as U+FFFD, as sanitising makes them anywhere: the model
    refuses them ("unable to parse raw data as a unicode string"), and free text is cleaned, not refused."""
    if type(value) is str:
        return _SURROGATE.sub("\ufffd", value) if not value.isascii() else value
    if type(value) is dict:
        return {_unsurrogated(k): _unsurrogated(v) for k, v in value.items()}
    if type(value) is list:
        return [_unsurrogated(v) for v in value]
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_events(data: Any, *, max_batch: int) -> list[NativeEvent]:
    """One object or a non-empty array of at most ``max_batch`` objects."""
    items = data if isinstance(data, list) else [data]
    if isinstance(data, list) and not data:
        raise EventProblem("the array is empty", [{"loc": [], "msg": "expected at least one event"}])
    if len(items) > max_batch:
        raise EventProblem(
            f"too many events in one request ({len(items)} > {max_batch})",
            [{"loc": [], "msg": f"at most {max_batch} events per request"}],
        )
    out = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        prefix: list[Any] = [i] if isinstance(data, list) else []
        if not isinstance(item, dict):
            errors.append({"loc": prefix, "msg": "an event is a JSON object"})
            continue
        try:
            ev = _one.validate_python(_unsurrogated(item))
            ev.validate_failure()
        except ValidationError as exc:
            for e in exc.errors(include_url=False, include_input=False):
                errors.append({"loc": prefix + list(e["loc"]), "msg": e["msg"]})
            continue
        except ValueError as exc:
            errors.append({"loc": [*prefix, "error"], "msg": str(exc)})
            continue
        out.append(ev)
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise EventProblem(f"{where}: {first['msg']}", errors)
    return out
