"""Stitch: its Connect API (the extractions poller's client) and pure mappings to events.

Stitch sends no webhook when an extraction fails; failures reach its users as emails and in its web
app. So ``alerts`` reads the Connect API (v4, ``Authorization: Bearer <token>``):

- ``GET /v4/{client_id}/extractions`` — the last extraction of every source (paginated, 100 a page,
  ``links.next``), each with ``job_name``, ``source_id``, ``source_type``/``tap_name``, ``start_time``,
  ``completion_time`` and, per phase (``discovery``, ``tap``, ``target``), an ``*_exit_status``
  (``null`` running, ``0`` success, anything else failure) and an ``*_description`` (the error);
- ``GET /v4/sources`` — the sources: ``id``, ``name``, ``display_name``, ``type`` (``platform.hubspot``),
  ``report_card.steps`` (an ``oauth`` step means the source authenticates with OAuth);
- ``GET /v4/{client_id}/extractions/{job_name}`` — ``302 Found`` to the extraction's log (on S3).

Answers: ``401`` (the token is disabled, deleted or not for this client), ``429`` (the job endpoints
allow 30 requests per 10 minutes; ``Retry-After`` is honoured), ``5xx`` (try again later). Each maps to
an exception of :class:`StitchError`::

    StitchError
    ├── Unauthorized   401/403: the API token is wrong or revoked — an alert of its own
    ├── RateLimited    429: wait ``retry_after`` before the next request
    ├── NotFound       404: no such extraction (its log expired)
    └── Unavailable    5xx, timeouts, connection errors, bodies that are not the documented shape

The mapping functions (:func:`parse_extraction`, :func:`parse_source`, :func:`failure_event` …) are
pure and tested on the documented shapes; the poll loop that composes them with the database lives
in :mod:`alerts.stitch_poller`.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from alerts.catalog import Catalog
from alerts.config import is_loopback_host
from alerts.links import stitch_source_url
from alerts.models import AuthErrorEvent, EventStatus
from alerts.netguard import NonPublicAddress, guarded_transport
from alerts.sources.vendor import AdapterError, guess_provider, ident, obj, parse_time, text

__all__ = [
    "NotFound",
    "RateLimited",
    "StitchClient",
    "StitchError",
    "Unauthorized",
    "Unavailable",
    "Extraction",
    "PostLoad",
    "Source",
    "error_lines",
    "event_id_for",
    "failure_event",
    "needs_log",
    "parse_extraction",
    "parse_post_load",
    "parse_retry_after",
    "parse_source",
    "strip_log_prefix",
    "success_event",
    "token_event",
]

STITCH_INTEGRATION = "stitch"  # the integration id of the Connect API token's own alert
MIN_DESCRIPTION = 80  # a shorter description that classifies as nothing sends us to the extraction log
MAX_LOG_BYTES = 4 * 1024 * 1024
MAX_LINE = 64 * 1024
MAX_PAGES = 100
DEFAULT_RETRY_AFTER = timedelta(seconds=60)
MAX_RETRY_AFTER = timedelta(hours=1)


class StitchError(Exception):
    """The Connect API did not give us what we asked for. The message never holds the token."""


class Unauthorized(StitchError):
    def __init__(self, status: int) -> None:
        super().__init__(f"Stitch Connect API answered {status}")
        self.status = status


class RateLimited(StitchError):
    def __init__(self, retry_after: timedelta) -> None:
        super().__init__(f"Stitch Connect API rate limit: retry after {int(retry_after.total_seconds())}s")
        self.retry_after = retry_after


class NotFound(StitchError):
    pass


class Unavailable(StitchError):
    pass


class Refused(NotFound):
    """The log's URL points where we never connect (not https, credentials in it, no public address):
    as good as gone — the description is all there is."""


def parse_retry_after(value: str | None, *, now: datetime) -> timedelta:
    """``Retry-After`` as seconds or an HTTP date, clamped to 1 s – 1 h; missing or invalid → 60 s."""
    if value:
        value = value.strip()
        wait: timedelta | None = None
        if value.isdigit() and len(value) < 10:
            wait = timedelta(seconds=int(value))
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None and when.tzinfo is not None:
                wait = when - now
        if wait is not None:
            return min(max(wait, timedelta(seconds=1)), MAX_RETRY_AFTER)
    return DEFAULT_RETRY_AFTER


# -- the documented shapes ---------------------------------------------------------------------


def _status(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


@dataclass(frozen=True)
class Extraction:
    """One extraction job, as ``GET /v4/{client_id}/extractions`` lists it."""

    job_name: str
    source_id: str
    source_type: str | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    discovery_exit_status: int | None = None
    discovery_description: str | None = None
    tap_exit_status: int | None = None
    tap_description: str | None = None
    target_exit_status: int | None = None
    target_description: str | None = None

    @property
    def finished(self) -> bool:
        return self.completion_time is not None and any(
            s is not None for s in (self.discovery_exit_status, self.tap_exit_status, self.target_exit_status)
        )

    @property
    def failed(self) -> bool:
        """The source side failed: discovery or the tap exited non-zero (a target failure is Stitch's own)."""
        return self.finished and any(s not in (None, 0) for s in (self.discovery_exit_status, self.tap_exit_status))

    @property
    def succeeded(self) -> bool:
        return (
            self.finished
            and self.tap_exit_status == 0
            and self.discovery_exit_status in (None, 0)
            and self.target_exit_status in (None, 0)
        )

    @property
    def description(self) -> str | None:
        """The error of the source phase that failed (discovery before tap)."""
        if self.discovery_exit_status not in (None, 0):
            return self.discovery_description or self.tap_description
        if self.tap_exit_status not in (None, 0):
            return self.tap_description
        return None

    @property
    def phase(self) -> str | None:
        if self.discovery_exit_status not in (None, 0):
            return "discovery"
        if self.tap_exit_status not in (None, 0):
            return "tap"
        return None


def parse_extraction(raw: Any) -> Extraction | None:
    """One extraction object, or ``None`` when it lacks a usable ``job_name`` or ``source_id``."""
    item = obj(raw)
    job = text(item.get("job_name"), limit=300)
    source = ident(item.get("source_id"))
    if not job or not source:
        return None
    return Extraction(
        job_name=job,
        source_id=source,
        source_type=text(item.get("source_type"), limit=200) or text(item.get("tap_name"), limit=200),
        start_time=parse_time(item.get("start_time")),
        completion_time=parse_time(item.get("completion_time")),
        discovery_exit_status=_status(item.get("discovery_exit_status")),
        discovery_description=text(item.get("discovery_description")),
        tap_exit_status=_status(item.get("tap_exit_status")),
        tap_description=text(item.get("tap_description")),
        target_exit_status=_status(item.get("target_exit_status")),
        target_description=text(item.get("target_description")),
    )


@dataclass(frozen=True)
class Source:
    """One source (Stitch's UI calls it an integration), as ``GET /v4/sources`` lists it."""

    id: str
    name: str | None = None  # the schema name, e.g. "shopify"; post-load webhooks say this
    display_name: str | None = None
    type: str | None = None  # e.g. "platform.hubspot"
    auth_method: str | None = None
    deleted: bool = False

    def provider(self, catalog: Catalog) -> str | None:
        return provider_of(self.type, catalog)


def provider_of(source_type: str | None, catalog: Catalog) -> str | None:
    """``platform.hubspot`` / ``tap-hubspot`` → ``hubspot``; ``platform.google_analytics`` → ``google``."""
    if not source_type:
        return None
    name = source_type.strip().lower()
    for prefix in ("platform.", "tap-", "singer-io/tap-"):
        name = name.removeprefix(prefix)
    return guess_provider(name, catalog.aliases) or catalog.canonical_provider(source_type)


def parse_source(raw: Any) -> Source | None:
    item = obj(raw)
    sid = ident(item.get("id"))
    if not sid:
        return None
    steps = obj(item.get("report_card")).get("steps")
    oauth = isinstance(steps, list) and any(obj(s).get("type") == "oauth" for s in steps)
    return Source(
        id=sid,
        name=text(item.get("name"), limit=200),
        display_name=text(item.get("display_name"), limit=200),
        type=text(item.get("type"), limit=200),
        auth_method="oauth2" if oauth else None,
        deleted=item.get("deleted_at") is not None,
    )


# -- classification ------------------------------------------------------------------------------

# "2026-11-28 08:55:05,101Z     tap - CRITICAL <message>": the timestamp, the process and the level go.
_LOG_PREFIX = re.compile(
    r"^\s*(?:\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?Z?\s+)?"
    r"(?:[\w.-]{1,40}\s+-\s+)?(?:CRITICAL|ERROR|FATAL|WARNING|INFO|DEBUG)\s+"
)
_ERROR_LINE = re.compile(r"\b(?:CRITICAL|ERROR|FATAL)\b|Exit status is:|failed with code|Error:|Exception:")


def needs_log(extraction: Extraction, catalog: Catalog, *, provider: str | None, auth_method: str | None) -> bool:
    """A failed extraction whose description is too short to say anything (``Tap failed with code 1``)."""
    description = (extraction.description or "").strip()
    if catalog.classify(description, provider, auth_method) is not None:
        return False
    return len(description) < MIN_DESCRIPTION


def error_lines(log_text: str) -> list[str]:
    """The lines of an extraction log that report errors, without their timestamp prefix."""
    out = []
    for line in log_text.splitlines():
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE]
        if _ERROR_LINE.search(line[:400]):
            stripped = strip_log_prefix(line)
            if stripped:
                out.append(stripped)
    return out


def strip_log_prefix(line: str) -> str:
    """``2026-11-28 08:55:05,101Z     tap - CRITICAL <message>`` -> ``<message>``."""
    return _LOG_PREFIX.sub("", line).strip()


# -- events ---------------------------------------------------------------------------------------


def event_id_for(job_name: str) -> str:
    """``stitch-<job_name>``: the idempotency key that makes each extraction count once, across restarts."""
    candidate = f"stitch-{job_name}"
    if len(candidate) <= 200 and re.fullmatch(r"[A-Za-z0-9._:-]+", candidate):
        return candidate
    return "stitch-" + hashlib.sha256(job_name.encode("utf-8", "surrogatepass")).hexdigest()


def _labels(source: Source | None) -> dict[str, str]:
    labels = {"pipeline": "stitch"}
    if source is not None and source.name:
        labels["stitch_source"] = source.name
    return labels


def failure_event(
    extraction: Extraction,
    source: Source | None,
    *,
    client_id: int,
    app_url: str,
    catalog: Catalog,
    error: str | None = None,
) -> AuthErrorEvent:
    """A failed extraction as an event: the integration is the Stitch source, the link its Stitch page."""
    provider = provider_of(source.type if source else None, catalog) or provider_of(extraction.source_type, catalog)
    message = error or extraction.description or f"{extraction.phase or 'extraction'} failed"
    return AuthErrorEvent(
        integration_id=extraction.source_id,
        status=EventStatus.failed,
        error=message,
        source="stitch",
        integration_name=(source.display_name or source.name) if source else None,
        provider=provider,
        auth_method=source.auth_method if source else None,
        occurred_at=extraction.completion_time,
        account_id=str(client_id),
        event_id=event_id_for(extraction.job_name),
        labels=_labels(source),
        reauthorize_url=stitch_source_url(client_id, extraction.source_id, app_url),
    )


def success_event(extraction: Extraction, source: Source | None, *, client_id: int) -> AuthErrorEvent:
    return AuthErrorEvent(
        integration_id=extraction.source_id,
        status=EventStatus.succeeded,
        source="stitch",
        integration_name=(source.display_name or source.name) if source else None,
        occurred_at=extraction.completion_time,
        account_id=str(client_id),
        event_id=event_id_for(extraction.job_name),
        labels=_labels(source),
    )


def token_event(*, client_id: int, status: int, now: datetime) -> AuthErrorEvent:
    """The Connect API refused our token: an alert on the ``stitch`` integration itself."""
    return AuthErrorEvent(
        integration_id=STITCH_INTEGRATION,
        status=EventStatus.failed,
        error=(
            f"Stitch Connect API answered {status} Unauthorized for client {client_id}: the API token in "
            "[stitch] token is wrong, was revoked or deleted, or belongs to another Stitch account. "
            "Create a new Connect API token in Stitch (Account Settings, API tokens) and put it in "
            "[stitch] token (or ALERTS_STITCH__TOKEN). Until then no Stitch extraction is watched."
        ),
        source="stitch",
        integration_name="Stitch Connect API token",
        provider="stitch",
        auth_method="api_key",
        error_code="invalid_api_key",
        occurred_at=now,
        account_id=str(client_id),
        labels={"pipeline": "stitch"},
    )


def token_ok_event(*, client_id: int, now: datetime) -> AuthErrorEvent:
    return AuthErrorEvent(
        integration_id=STITCH_INTEGRATION,
        status=EventStatus.succeeded,
        source="stitch",
        occurred_at=now,
        account_id=str(client_id),
    )


# -- post-load webhooks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PostLoad:
    """A post-load webhook (``User-Agent: StitchLoadingWebhook``): data of one table was loaded."""

    integration_name: str
    extracted_at: datetime | None  # the newest ``tables[].max_time_extracted`` (else ``minimum_sdc_batched_at``)
    tables: tuple[str, ...] = ()


def parse_post_load(data: Any) -> PostLoad:
    """The documented body: ``integration_name``, ``tables[]`` (``destination_table_name``,
    ``max_time_extracted``, ``num_rows`` …), ``minimum_sdc_batched_at``, ``version`` …"""
    if not isinstance(data, dict):
        raise AdapterError("body: a post-load webhook is a JSON object")
    name = text(data.get("integration_name"), limit=200)
    if not name:
        raise AdapterError("integration_name: required (a non-empty string)")
    tables = data.get("tables")
    if not isinstance(tables, list):
        raise AdapterError("tables: required (an array of table objects)")
    times = [t for t in (parse_time(obj(item).get("max_time_extracted")) for item in tables) if t is not None]
    names = tuple(n for n in (text(obj(item).get("destination_table_name"), limit=200) for item in tables[:100]) if n)
    return PostLoad(
        integration_name=name,
        extracted_at=max(times) if times else parse_time(data.get("minimum_sdc_batched_at")),
        tables=names,
    )


# -- the client -----------------------------------------------------------------------------------


class StitchClient:
    """A small async client of the Connect API. It never follows redirects on its own and never
    sends the token anywhere but ``base_url`` (an extraction log is fetched from S3 without it)."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        client_id: int,
        timeout: float = 30.0,
        allow_loopback: bool = False,
        clock: Any = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.allow_loopback = allow_loopback
        self._clock = clock
        self._api = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                     "User-Agent": "alerts-stitch-poller"},
            timeout=timeout,
            follow_redirects=False,
            transport=transport or guarded_transport(allow_loopback=allow_loopback),
        )
        # The log's URL comes from Stitch's redirect: any host. Only public addresses are connected to
        # (loopback too where the base URL may be loopback: the tests' peer), R3.6.
        self._plain = httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                        transport=transport or guarded_transport(allow_loopback=allow_loopback))

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._plain.aclose()

    def _now(self) -> datetime:
        from alerts.models import utcnow

        return self._clock() if self._clock else utcnow()

    async def _get(self, path: str) -> httpx.Response:
        try:
            response = await self._api.get(path)
        except httpx.HTTPError as exc:
            raise Unavailable(f"Stitch Connect API: {type(exc).__name__}") from None
        except NonPublicAddress as exc:  # the API's name resolved where we never connect (R3.6)
            raise Unavailable(f"Stitch Connect API: {exc}") from None
        self._check(response)
        return response

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in (401, 403):
            raise Unauthorized(status)
        if status == 429:
            raise RateLimited(parse_retry_after(response.headers.get("retry-after"), now=self._now()))
        if status == 404:
            raise NotFound("Stitch Connect API answered 404")
        if status >= 400:
            raise Unavailable(f"Stitch Connect API answered {status}")

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise Unavailable("Stitch Connect API answered with something that is not JSON") from None

    async def list_extractions(self) -> list[Extraction]:
        """Every page of ``GET /v4/{client_id}/extractions``; unusable items are skipped."""
        path = f"/v4/{self.client_id}/extractions"
        out: list[Extraction] = []
        for _ in range(MAX_PAGES):
            body = self._json(await self._get(path))
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise Unavailable("extractions: expected an object with a 'data' array")
            out.extend(e for e in map(parse_extraction, body["data"]) if e is not None)
            nxt = obj(body.get("links")).get("next")
            if not isinstance(nxt, str) or not nxt.startswith(f"/v4/{self.client_id}/extractions"):
                break
            path = nxt
        return out

    async def list_sources(self) -> list[Source]:
        body = self._json(await self._get("/v4/sources"))
        if not isinstance(body, list):
            raise Unavailable("sources: expected an array")
        return [s for s in map(parse_source, body) if s is not None]

    async def extraction_log(self, job_name: str, *, max_bytes: int = MAX_LOG_BYTES) -> str:
        """The log of one extraction: ``302`` to a pre-signed URL, fetched without our token."""
        path = f"/v4/{self.client_id}/extractions/{quote(job_name, safe='')}"
        response = await self._get(path)
        if response.status_code == 200:
            return response.content[:max_bytes].decode("utf-8", errors="replace")
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            raise Unavailable(f"extraction log: unexpected answer {response.status_code}")
        url = httpx.URL(self.base_url).join(location)
        if url.scheme != "https" and not (self.allow_loopback and url.scheme == "http" and is_loopback_host(url.host)):
            raise Refused("extraction log: the redirect is not https")
        if url.userinfo or urlsplit(str(url)).username is not None:  # httpx's own parser, and ours
            raise Refused("extraction log: the redirect carries credentials")
        chunks: list[bytes] = []
        size = 0
        try:
            async with self._plain.stream("GET", url) as log_response:
                if log_response.status_code == 404:
                    raise NotFound("extraction log is gone")
                if log_response.status_code != 200:
                    raise Unavailable(f"extraction log: answered {log_response.status_code}")
                async for chunk in log_response.aiter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= max_bytes:
                        break
        except httpx.HTTPError as exc:
            raise Unavailable(f"extraction log: {type(exc).__name__}") from None
        except NonPublicAddress as exc:
            raise Refused(f"extraction log: {exc}") from None
        return b"".join(chunks)[:max_bytes].decode("utf-8", errors="replace")


def sources_by_id(sources: list[Source]) -> Mapping[str, Source]:
    return {s.id: s for s in sources}
