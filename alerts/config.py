"""Settings: TOML file + ``ALERTS_<SECTION>__<KEY>`` environment overrides, validated on load.

``load_settings(path)`` finds the file (``--config``, else ``$ALERTS_CONFIG``, else ``./config.toml``,
else built-in defaults) and returns a :class:`Settings`. Any problem raises :class:`ConfigError`
whose message names the key, so the CLI can print one line and exit non-zero.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import os
import re
import tomllib
from datetime import datetime, timedelta
from email.headerregistry import Address
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from alerts.durations import format_duration, parse_duration

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


class ConfigError(Exception):
    """A configuration problem, phrased for a person: ``config error: email.port: ...``."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _email(value: str) -> str:
    try:
        Address(addr_spec=value)
    except Exception as exc:  # headerregistry raises several types
        raise ValueError(f"not an email address: {value!r}") from exc
    if any(c in value for c in "\r\n,;<>"):
        raise ValueError(f"not a single email address: {value!r}")
    return value


EmailAddr = Annotated[str, BeforeValidator(lambda v: _email(str(v)))]


@functools.lru_cache(maxsize=256)  # asked on every request by the browser guard; parsing an IP costs ~10 µs
def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _http_url(value: str, *, key: str = "url") -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r}")
    if parts.username or parts.password or "\\" in value:
        raise ValueError(f"URL must not carry credentials or backslashes: {value!r}")
    return value.rstrip("/")


HttpUrl = Annotated[str, BeforeValidator(lambda v: _http_url(str(v)))]
HostName = Annotated[str, BeforeValidator(lambda v: str(v).strip().lower())]


def _iana_zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {value!r} (e.g. 'Europe/Berlin')") from None
    return value


IanaZone = Annotated[str, AfterValidator(_iana_zone)]


def _tolerance(value: timedelta) -> timedelta:
    if not 60 <= value.total_seconds() <= 900:
        raise ValueError("tolerance must be between 60s and 15m")
    return value


# How far a signed request's timestamp may be from our clock, either way (R1.3: 60-900 s).
Tolerance = Annotated[Duration, AfterValidator(_tolerance)]


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: HttpUrl | None = None
    api_tokens: list[SecretStr] = []
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_batch: int = Field(1000, ge=1, le=100_000)
    request_timeout: Duration = timedelta(seconds=10)

    @field_validator("request_timeout")
    @classmethod
    def _request_timeout(cls, v: timedelta) -> timedelta:
        if v < timedelta(seconds=1):
            raise ValueError("request_timeout must be at least 1s")
        return v
    session_secret: SecretStr | None = None

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


class DatabaseSettings(Section):
    url: SecretStr = SecretStr("sqlite:///var/alerts.db")
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    allow_network_fs: bool = False
    keep_events: Duration = timedelta(days=30)  # R4.5: stored (redacted) events older than this are deleted

    @field_validator("keep_events")
    @classmethod
    def _keep_events(cls, v: timedelta) -> timedelta:
        # The stored events hold the idempotency keys: a replay is recognised only while its event is
        # kept, and senders retry for up to ~3 days (Standard Webhooks ~75.5 h, Stripe 3 days; R1.5).
        if v < timedelta(hours=96):
            raise ValueError("keep_events must be at least 96h (4d): replays are recognised only while their event is kept")
        return v

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: SecretStr) -> SecretStr:
        url = v.get_secret_value()
        if not (url.startswith("sqlite") or url.startswith("postgresql")):
            raise ValueError("database url must start with sqlite:/// or postgresql+psycopg://")
        return v


class AlertingSettings(Section):
    group_by: list[str] = ["integration_id"]
    group_wait: Duration = timedelta(seconds=5)
    repeat_interval: Duration = timedelta(hours=4)
    default_receiver: str | None = None
    send_resolved: bool = True

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, v: list[str]) -> list[str]:
        allowed = {"integration_id", "provider", "code", "account_id", "auth_method"}
        for key in v:
            if key not in allowed and not key.startswith("labels."):
                raise ValueError(f"unknown group_by key {key!r} (use {sorted(allowed)} or labels.NAME)")
        if not v:
            raise ValueError("group_by needs at least one key")
        return v


class SlackSettings(Section):
    bot_token: SecretStr | None = None
    webhook_url: SecretStr | None = None
    signing_secret: SecretStr | None = None
    team_id: Annotated[str, Field(pattern=r"^[A-Z0-9]{1,32}$")] | None = None  # only this workspace's clicks
    tolerance: Tolerance = timedelta(seconds=300)  # interactivity requests: allowed clock difference
    base_url: HttpUrl = "https://slack.com/api"
    # Hosts base_url may name (R3.6); webhook_url must be on hooks.slack.com.
    allowed_hosts: list[HostName] = ["slack.com", "hooks.slack.com"]
    allow_loopback_base_url: bool = False
    timeout: Duration = timedelta(seconds=10)
    # Pacing (R2.6): posts per second per channel, the burst a quiet channel may take at once, and the
    # backlog for one channel above which waiting posts become one summary message.
    rate: float = Field(1.0, gt=0, le=100)
    burst: int = Field(3, ge=1, le=100)
    backlog_summary: int = Field(20, ge=2, le=10_000)

    @field_validator("signing_secret")
    @classmethod
    def _secret_long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().encode()) < 24:
            raise ValueError("signing_secret is shorter than 24 bytes (Slack's is 32 hex characters)")
        return v

    @model_validator(mode="after")
    def _check(self) -> SlackSettings:
        """R3.6: https on port 443 to a host on ``allowed_hosts``; no userinfo, backslash or IP literal.
        Split with the parser aiohttp (the client) uses, yarl, so both read the same host."""
        self._check_url("base_url", self.base_url, self.allowed_hosts)
        if self.webhook_url is not None:
            self._check_url("webhook_url", self.webhook_url.get_secret_value(), ["hooks.slack.com"])
        return self

    def _check_url(self, key: str, value: str, hosts: list[str]) -> None:
        from yarl import URL

        try:
            url = URL(value)
        except ValueError as exc:
            raise ValueError(f"{key} is not a URL") from exc
        host = (url.host or "").lower()
        if self.allow_loopback_base_url and is_loopback_host(host) and url.scheme in ("http", "https"):
            return  # tests: the local Slack peer, listed explicitly
        if is_loopback_host(host):
            raise ValueError(f"a loopback {key} needs allow_loopback_base_url = true (tests only)")
        if url.scheme != "https" or "\\" in value:
            raise ValueError(f"{key} must be an https URL")
        if url.user is not None or url.password is not None:
            raise ValueError(f"{key} must not carry a user name or password")
        if url.port != 443:
            raise ValueError(f"{key} must use port 443")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass
        else:
            raise ValueError(f"{key} must name a host, not an IP address")
        if host not in hosts:
            raise ValueError(f"{key} host {host!r} is not in [slack] allowed_hosts ({', '.join(hosts)})")

    @property
    def configured(self) -> bool:
        return self.bot_token is not None or self.webhook_url is not None

    @property
    def interactive(self) -> bool:
        """Messages carry Acknowledge / Silence buttons only when clicks can be verified."""
        return self.signing_secret is not None


class EmailSettings(Section):
    host: str | None = None
    port: int = Field(587, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    from_addr: EmailAddr = "alerts@localhost"
    starttls: bool = True
    use_tls: bool = False
    timeout: Duration = timedelta(seconds=30)
    admin: EmailAddr | None = None
    ca_file: str | None = None  # extra CA bundle (PEM) to verify the SMTP server's certificate

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        if v and not Path(v).is_file():
            raise ValueError(f"no such file: {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> EmailSettings:
        if self.starttls and self.use_tls:
            raise ValueError("starttls and use_tls are exclusive (use_tls is implicit TLS on port 465)")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.host)


class SlackTarget(Section):
    channel: str


class EmailTarget(Section):
    to: list[EmailAddr] = []
    owner: bool = False  # also send to the integration's owner address


class Receiver(Section):
    name: str
    slack: SlackTarget | None = None
    email: EmailTarget | None = None
    file: bool = False


class Route(Section):
    match: dict[str, str | list[str]] = {}  # globs; a list means "any of these"
    receivers: list[str]
    continue_: bool = Field(False, alias="continue")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Integration(Section):
    id: str
    name: str | None = None
    provider: str | None = None
    auth_method: Literal["oauth2", "api_key", "basic"] | None = None
    owner: EmailAddr | None = None
    account_id: str | None = None
    labels: dict[str, str] = {}
    reauthorize_url: HttpUrl | None = None

    @field_validator("reauthorize_url")
    @classmethod
    def _link(cls, v: HttpUrl | None) -> HttpUrl | None:
        problem = link_problem(str(v)) if v is not None else None
        if problem:  # said at start-up, not found out from a message without its button
            raise ValueError(problem)
        return v


def link_problem(url: str) -> str | None:
    """What makes ``url`` unfit for a message's reauthorize link (R3.6), or ``None``: it must be https on
    port 443 with a host name (no IP literal), no userinfo, backslash, blank, quote or ``<>|```. The
    host's allow-list is the caller's (:func:`alerts.links.is_safe_url`)."""
    if any(c in url for c in "\\ \t\r\n<>|\"'`"):
        return "a link may not contain a backslash, blank, quote or <>|`"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL: {exc}"
    host = parts.hostname or ""
    if parts.scheme != "https":
        return "a reauthorize link must be https"
    if "@" in parts.netloc:  # no userinfo, not even an empty one
        return "a reauthorize link may not carry a user or password"
    if not host or port not in (None, 443):
        return "a reauthorize link needs a host name and the https port (443)"
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return "a reauthorize link must name a host, not an IP address"


def link_template(v: str) -> str:
    """A reauthorize-link template: :func:`link_problem` free, placeholders ``{integration_id}``,
    ``{account_id}``, ``{provider}`` only."""
    probe = v.replace("{integration_id}", "x").replace("{account_id}", "x").replace("{provider}", "x")
    if "{" in probe or "}" in probe:
        raise ValueError("only {integration_id}, {account_id} and {provider} placeholders are allowed")
    problem = link_problem(probe)
    if problem is not None:
        raise ValueError(problem)
    return v


class LinkSettings(Section):
    reauthorize: str | None = None
    allowed_hosts: list[str] = []
    providers: dict[str, str] = {}

    @field_validator("reauthorize")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        return v if v is None else link_template(v)

    @field_validator("providers")
    @classmethod
    def _provider_templates(cls, v: dict[str, str]) -> dict[str, str]:
        for provider, template in v.items():
            try:
                link_template(template)
            except ValueError as exc:
                raise ValueError(f"providers.{provider}: {exc}") from None
        return v


# -- webhooks (R1.x) --------------------------------------------------------------------------

MIN_SECRET_BYTES = 24


class WebhookSecret(Section):
    """One accepted secret; ``not_after`` retires it (rotation: keep the old one until then)."""

    value: SecretStr
    not_after: datetime | None = None

    @field_validator("not_after")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("not_after needs a timezone, e.g. 2026-12-31T00:00:00Z")
        return v


def _secret_item(value: Any) -> Any:
    """A secret is written as a plain string or as ``{ value = "...", not_after = 2026-12-31T00:00:00Z }``."""
    if isinstance(value, str | SecretStr):
        return {"value": value}
    return value


class _SignedSource(Section):
    secrets: list[Annotated[WebhookSecret, BeforeValidator(_secret_item)]] = []

    @field_validator("secrets")
    @classmethod
    def _long_enough(cls, v: list[WebhookSecret]) -> list[WebhookSecret]:
        for i, s in enumerate(v):
            if len(s.value.get_secret_value().encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"secret [{i}] is shorter than {MIN_SECRET_BYTES} bytes")
        return v


class WebhookSource(_SignedSource):
    """``[webhooks.<kind>]``: what authenticates requests from one kind of sender. Each vendor's own rules
    say how old a delivery may be (Fivetran's 24 h): no ``tolerance`` here, and a key that does nothing
    is refused rather than ignored."""

    allow_unsigned: bool = False


class PathTokenSource(WebhookSource):
    """Airbyte and Stitch sign nothing: the secret is a token in the URL path, so it must be URL-safe."""

    @field_validator("secrets")
    @classmethod
    def _url_safe(cls, v: list[WebhookSecret]) -> list[WebhookSecret]:
        for i, s in enumerate(v):
            token = s.value.get_secret_value()
            if len(token) > 256 or any(c not in _TOKEN_CHARS for c in token):
                raise ValueError(f"secret [{i}] must be at most 256 of A-Z a-z 0-9 . _ ~ - (it goes in a URL path)")
        return v


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")


class NativeWebhookSource(_SignedSource):
    """Standard Webhooks secrets: ``whsec_`` + base64 of at least 24 random bytes. Without secrets
    ``POST /v1/events`` is open (meant for loopback): no ``allow_unsigned`` to set."""

    tolerance: Tolerance = timedelta(seconds=300)

    @field_validator("secrets")
    @classmethod
    def _whsec(cls, v: list[WebhookSecret]) -> list[WebhookSecret]:
        for i, s in enumerate(v):
            raw = s.value.get_secret_value()
            try:
                key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
            except (ValueError, binascii.Error):
                key = b""
            if not raw.startswith("whsec_") or len(key) < MIN_SECRET_BYTES:
                raise ValueError(f"secret [{i}] must be whsec_ followed by base64 of at least {MIN_SECRET_BYTES} bytes")
        return v


ALERTMANAGER_LABELS = {
    "integration_id": "integration_id",
    "integration_name": "integration_name",
    "provider": "provider",
    "auth_method": "auth_method",
    "account_id": "account_id",
    "error_code": "code",
}


class AlertmanagerSource(WebhookSource):
    """Alertmanager/Grafana: which alert labels and annotations carry our fields."""

    labels: dict[str, str] = dict(ALERTMANAGER_LABELS)
    error_annotations: list[str] = ["error", "description", "summary", "message"]
    link_annotation: str = "reauthorize_url"

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = set(v) - set(ALERTMANAGER_LABELS)
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)} (use {sorted(ALERTMANAGER_LABELS)})")
        return {**ALERTMANAGER_LABELS, **v}


class WebhooksSettings(Section):
    native: NativeWebhookSource = NativeWebhookSource()
    fivetran: WebhookSource = WebhookSource()
    airbyte: PathTokenSource = PathTokenSource()
    stitch: PathTokenSource = PathTokenSource()
    alertmanager: AlertmanagerSource = AlertmanagerSource()
    pagerduty: WebhookSource = WebhookSource()
    max_unauthorized_per_minute: int = Field(60, ge=1, le=1_000_000)


class FivetranSettings(Section):
    """Fivetran's REST API, for fresh Connect Card (reauthorize) links minted at send time."""

    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    base_url: HttpUrl = "https://api.fivetran.com"
    allow_loopback_base_url: bool = False
    timeout: Duration = timedelta(seconds=10)
    dashboard_url: str = "https://fivetran.com/dashboard/connectors/{integration_id}/status"
    redirect_uri: HttpUrl | None = None

    @model_validator(mode="after")
    def _check(self) -> FivetranSettings:
        host = urlsplit(self.base_url).hostname or ""
        if is_loopback_host(host):
            if not self.allow_loopback_base_url:
                raise ValueError("a loopback base_url needs allow_loopback_base_url = true (tests only)")
        elif not self.base_url.startswith("https://"):
            raise ValueError("base_url must be https")
        if (self.api_key is None) != (self.api_secret is None):
            raise ValueError("set both api_key and api_secret, or neither")
        probe = self.dashboard_url.replace("{integration_id}", "x")
        if "{" in probe or "}" in probe or not probe.startswith("https://"):
            raise ValueError("dashboard_url must be an https URL with only the {integration_id} placeholder")
        return self

    @property
    def configured(self) -> bool:
        return self.api_key is not None and self.api_secret is not None


class StitchSettings(Section):
    """Stitch's Connect API, polled for failed extractions (Stitch sends no failure webhook)."""

    client_id: int | None = Field(None, ge=1)  # the number in app.stitchdata.com/client/<client_id>/...
    token: SecretStr | None = None  # a Connect API access token of that account
    base_url: HttpUrl = "https://api.stitchdata.com"
    app_url: HttpUrl = "https://app.stitchdata.com"  # where the "Re-authorize" pages live
    allow_loopback_base_url: bool = False
    poll_interval: Duration = timedelta(minutes=5)
    timeout: Duration = timedelta(seconds=30)
    fetch_logs: bool = True  # read an extraction's log when its description is too short to classify

    @field_validator("poll_interval")
    @classmethod
    def _interval(cls, v: timedelta) -> timedelta:
        if v < timedelta(minutes=1):  # the extractions endpoints allow 30 requests per 10 minutes
            raise ValueError("poll_interval must be at least 1m (Stitch allows 30 job requests per 10 minutes)")
        return v

    @model_validator(mode="after")
    def _check(self) -> StitchSettings:
        for key in ("base_url", "app_url"):
            url = getattr(self, key)
            host = urlsplit(url).hostname or ""
            if is_loopback_host(host):
                if not self.allow_loopback_base_url:
                    raise ValueError(f"a loopback {key} needs allow_loopback_base_url = true (tests only)")
            elif not url.startswith("https://"):
                raise ValueError(f"{key} must be https")
        if (self.client_id is None) != (self.token is None):
            raise ValueError("set both client_id and token, or neither")
        return self

    @property
    def configured(self) -> bool:
        return self.client_id is not None and self.token is not None


class OutboxSettings(Section):
    dir: str = "var/outbox"
    poll_interval: Duration = timedelta(seconds=1)
    lease: Duration = timedelta(seconds=120)
    max_attempts: int = Field(12, ge=1)
    max_age: Duration = timedelta(hours=24)
    backoff_base: Duration = timedelta(seconds=5)
    backoff_cap: Duration = timedelta(hours=1)
    batch: int = Field(20, ge=1, le=1000)


class TemplateSettings(Section):
    dir: str | None = None

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: str | None) -> str | None:
        if v and not Path(v).is_dir():
            raise ValueError(f"no such directory: {v}")
        return v


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class CatalogSettings(Section):
    """User additions and overrides of the error catalog (see ``alerts catalog``)."""

    disable: list[str] = []
    entries: list[dict[str, Any]] = []


def _str_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_str_list)]


class LogSource(Section):
    """``[[log_sources]]``: log files to scan (``alerts scan``) or follow (``alerts serve``).

    The integration of a line comes from, in order: the line itself (``integration_regex`` or, in
    JSON, ``integration_field``), the last integration named earlier in the same file (tracebacks),
    ``filename_pattern``, the fixed ``integration_id``, and finally the file's name.
    """

    name: str
    paths: StrList
    follow: bool = False
    format: Literal["text", "json"] = "text"
    integration_regex: StrList | None = None  # None = the built-in rules (Meltano, Airflow, key=value)
    integration_field: StrList = ["integration_id", "integration", "string_id", "connector_id", "connection_id"]
    message_field: StrList = ["message", "msg", "event", "log", "error", "exception", "exc_info"]
    level_field: StrList = ["level", "levelname", "severity"]
    timestamp_field: StrList = ["timestamp", "time", "ts", "@timestamp", "asctime"]
    filename_pattern: str | None = None
    integration_id: str | None = None
    provider: str | None = None
    auth_method: Literal["oauth2", "api_key", "basic"] | None = None
    labels: dict[str, str] = {}
    timezone: IanaZone = "UTC"  # for timestamps written without an offset
    poll_interval: Duration = timedelta(seconds=1)
    read_from: Literal["beginning", "end"] = "beginning"

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        if not v or any(not p.strip() for p in v):
            raise ValueError("paths needs at least one file or glob")
        return v

    @field_validator("integration_regex")
    @classmethod
    def _regexes(cls, v: list[str] | None) -> list[str] | None:
        import re

        for rx in v or []:
            try:
                compiled = re.compile(rx)
            except re.error as exc:
                raise ValueError(f"invalid regex {rx!r}: {exc}") from None
            if "integration" not in compiled.groupindex:
                raise ValueError(f"regex {rx!r} needs a named group (?P<integration>...)")
        return v

    @field_validator("filename_pattern")
    @classmethod
    def _filename(cls, v: str | None) -> str | None:
        if v is not None and "{integration}" not in v:
            raise ValueError("filename_pattern needs the {integration} placeholder, e.g. '{integration}.log'")
        return v


class Digest(Section):
    """A scheduled email summary: what is broken, what is new and what was fixed since the last one."""

    name: str
    schedule: str = "0 8 * * 1-5"  # cron, in ``timezone``
    timezone: IanaZone = "UTC"
    to: list[EmailAddr] = []
    match: dict[str, str | list[str]] = {}  # like a route's matchers
    include_resolved: bool = True
    skip_if_empty: bool = True
    per_owner: bool = False  # also send each integration owner a digest of only their integrations

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(v):
            raise ValueError(f"not a cron expression: {v!r} (e.g. '0 8 * * 1-5')")
        return v


class TokenProvider(Section):
    """Per-provider override of what the catalog knows about refresh-token lifetimes."""

    warn_before: list[Duration] | None = None
    lifetime: Duration | None = None
    basis: Literal["issued", "last_used"] = "issued"


class TokenSettings(Section):
    """Refresh-token expiry warnings (``POST /v1/tokens``)."""

    warn_before: list[Duration] = [timedelta(days=7), timedelta(days=1)]
    providers: dict[str, TokenProvider] = {}


class CorrelationSettings(Section):
    """One message for several integrations that fail together for one likely cause."""

    enabled: bool = True
    keys: list[Literal["authorized_by", "account_id"]] = ["authorized_by", "account_id"]
    provider_wide: bool = False  # also correlate every failure of one provider (opt-in: noisy)
    window: Duration = timedelta(minutes=1)  # like group_wait: members arriving inside it share the first message


class Settings(BaseSettings):
    """Everything ``alerts`` can be told. See ``config.example.toml`` for each key."""

    model_config = SettingsConfigDict(
        env_prefix="ALERTS_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    alerting: AlertingSettings = AlertingSettings()
    slack: SlackSettings = SlackSettings()
    email: EmailSettings = EmailSettings()
    receivers: list[Receiver] = []
    routes: list[Route] = []
    integrations: list[Integration] = []
    links: LinkSettings = LinkSettings()
    webhooks: WebhooksSettings = WebhooksSettings()
    fivetran: FivetranSettings = FivetranSettings()
    stitch: StitchSettings = StitchSettings()
    outbox: OutboxSettings = OutboxSettings()
    templates: TemplateSettings = TemplateSettings()
    log: LogSettings = LogSettings()
    catalog: CatalogSettings = CatalogSettings()
    log_sources: list[LogSource] = []
    digests: list[Digest] = []
    tokens: TokenSettings = TokenSettings()
    correlation: CorrelationSettings = CorrelationSettings()

    config_path: str | None = Field(None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (passed as init kwargs), as the contract says.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _cross_check(self) -> Settings:
        names = [r.name for r in self.receivers]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"receivers: duplicate name(s) {sorted(dupes)}")
        for i, route in enumerate(self.routes):
            for name in route.receivers:
                if name not in names:
                    raise ValueError(f"routes[{i}].receivers: unknown receiver {name!r}")
        if self.alerting.default_receiver and self.alerting.default_receiver not in names:
            raise ValueError(f"alerting.default_receiver: unknown receiver {self.alerting.default_receiver!r}")
        for r in self.receivers:
            if r.slack and not self.slack.configured:
                raise ValueError(f"receivers[{r.name}].slack needs [slack] bot_token or webhook_url")
            if r.email and not self.email.configured:
                raise ValueError(f"receivers[{r.name}].email needs [email] host")
        sources = [s.name for s in self.log_sources]
        if len(set(sources)) != len(sources):
            raise ValueError(f"log_sources: duplicate name(s) {sorted({n for n in sources if sources.count(n) > 1})}")
        # R2.2: a send must end well inside its lease, or another worker claims the row while it is
        # still being sent (the worker also stops a send at half the lease).
        timeouts = [c.timeout for c in (self.slack, self.email) if c.configured]
        slowest = max(timeouts, default=timedelta(0))
        if self.outbox.lease < 2 * slowest:
            raise ValueError(f"outbox.lease: {format_duration(self.outbox.lease)} must be at least twice the "
                             f"slowest send timeout ({format_duration(slowest)}, [slack]/[email] timeout)")
        return self

    def redacted_dump(self) -> dict[str, Any]:
        """The settings as JSON-able data with every secret shown as ``**********`` (for the start-up log)."""
        return self.model_dump(mode="json", by_alias=True)

    @property
    def database_url(self) -> str:
        return self.database.url.get_secret_value()

    def integration(self, integration_id: str) -> Integration | None:
        for item in self.integrations:
            if item.id == integration_id:
                return item
        return None


def find_config(path: str | os.PathLike[str] | None) -> Path | None:
    if path:
        return Path(path)
    env = os.environ.get("ALERTS_CONFIG")
    if env:
        return Path(env)
    local = Path("config.toml")
    return local if local.exists() else None


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


_NAMES_ITS_KEY = re.compile(r"[a-z_][\w.\[\]]*: ")


def describe(exc: ValidationError) -> str:
    """One line per problem, each naming its key."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-after", "function-before"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        if not loc and _NAMES_ITS_KEY.match(msg):  # a check across sections names the key it is about
            lines.append(msg)
            continue
        lines.append(f"{_loc(loc)}: {msg}")
    return "; ".join(lines)


def _check_environment() -> None:
    """``ALERTS_<SECTION>__<KEY>`` must name a section: a misspelt one would be ignored without a word
    (a misspelt key in a known section is refused by the section itself)."""
    for name in os.environ:
        upper = name.upper()
        if upper.startswith("ALERTS_") and "__" in upper:
            section = upper.removeprefix("ALERTS_").split("__", 1)[0].lower()
            if section not in Settings.model_fields:
                raise ConfigError(f"config error: environment variable {name}: there is no [{section}] section")


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read, merge and validate the configuration; raise :class:`ConfigError` naming the bad key."""
    file = find_config(path)
    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config error: {file}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config error: {file}: invalid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"config error: {file}: {exc.strerror}") from None
    data.update(overrides)
    _check_environment()
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"config error: {describe(exc)}") from None
    settings.config_path = str(file) if file else None
    return settings


def reload_secrets(settings: Settings) -> list[str]:
    """Re-read ``settings``' configuration (file and environment) and put its secrets in force (R1.4).

    What a request checks against — each ``[webhooks.<kind>] secrets`` list and ``[slack]
    signing_secret`` — is replaced in place, so every part of the process holding ``settings`` sees
    the new values at its next request; everything else needs a restart. Returns the keys that
    changed; raises :class:`ConfigError` (and changes nothing) when the new configuration is invalid.
    """
    fresh = load_settings(settings.config_path)
    swaps: list[tuple[str, Any, str, Any]] = []  # (key, section in force, field, new value)
    for name in WebhooksSettings.model_fields:
        old, new = getattr(settings.webhooks, name), getattr(fresh.webhooks, name)
        if isinstance(old, WebhookSource) and old.secrets != new.secrets:
            swaps.append((f"webhooks.{name}.secrets", old, "secrets", new.secrets))
    if settings.slack.signing_secret != fresh.slack.signing_secret:
        swaps.append(("slack.signing_secret", settings.slack, "signing_secret", fresh.slack.signing_secret))
    for _, section, field, value in swaps:  # all validated above: now swap them
        setattr(section, field, value)
    return [key for key, *_ in swaps]
