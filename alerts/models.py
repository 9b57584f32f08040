"""The vocabulary every stage speaks. No I/O, no third-party state: plain data."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Timezone-aware UTC; naive values (as SQLite returns them) are taken to be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class EventStatus(enum.StrEnum):
    failed = "failed"
    succeeded = "succeeded"


class AuthMethod(enum.StrEnum):
    oauth2 = "oauth2"
    api_key = "api_key"
    basic = "basic"


class AlertState(enum.StrEnum):
    firing = "firing"
    acknowledged = "acknowledged"
    resolved = "resolved"


class Kind(enum.StrEnum):
    """Why a message is sent; travels into the template."""

    firing = "firing"
    reminder = "reminder"
    updated = "updated"
    resolved = "resolved"
    digest = "digest"
    action = "action"  # someone acted on the alert (a Slack button): its message is updated in place
    summary = "summary"  # a Slack channel's backlog in one message (R2.6 pacing)


class DeliveryStatus(enum.StrEnum):
    pending = "pending"
    sent = "sent"
    failed = "failed"  # a transient failure; will be retried at next_attempt_at
    dead = "dead"  # permanent failure or attempts exhausted
    cancelled = "cancelled"  # superseded before it was ever sent (e.g. resolved within group_wait)


class Severity(enum.StrEnum):
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.info: 0, Severity.warning: 1, Severity.error: 2, Severity.critical: 3}

BASE_CODES = (
    "invalid_grant",
    "insufficient_permissions",
    "access_token_expired",
    "refresh_token_expired",
    "invalid_api_key",
    "invalid_credentials",
)


# Actions that replace a credential, and the one each auth method's fix is (see CatalogEntry.action_for).
_CREDENTIAL_ACTIONS = frozenset(("reauthorize", "new_token", "update_api_key", "update_credentials"))
_METHOD_ACTION = {"oauth2": "reauthorize", "api_key": "update_api_key", "basic": "update_credentials"}
# What a fix text says when its button should be that action: the method's usual action, unless its text
# says the entry's own instead — "Create a new client secret for the OAuth app" (invalid_client) is no
# reauthorization, though the integration signs in with OAuth.
_ACTION_WORDS = {
    "reauthorize": re.compile(r"(?i)re-?authori[sz]|sign in|log in|reconnect|re-?authenticat|consent"),
    "update_api_key": re.compile(r"(?i)\bAPI key|\bkey\b"),
    "update_credentials": re.compile(r"(?i)password|credential|secret|client ID"),
    "new_token": re.compile(r"(?i)\btoken"),
}


@dataclass(frozen=True)
class CatalogEntry:
    """One kind of authentication failure and what to do about it."""

    code: str
    title: str
    cause: str
    solution: str
    action: str
    severity: Severity
    refines: str | None = None
    docs: str | None = None
    causes: tuple[str, ...] = ()
    remediation: dict[str, str] = field(default_factory=dict)  # auth method -> solution text

    @property
    def base_code(self) -> str:
        return self.refines or self.code

    def solution_for(self, auth_method: str | None) -> str:
        if auth_method and auth_method in self.remediation:
            return self.remediation[auth_method]
        return self.solution

    def action_for(self, auth_method: str | None) -> str:
        """The action, as the integration's auth method makes it: where the fix is written for that method,
        the button says the same thing as the text ("Reauthorize" for OAuth, not "Update credentials")."""
        if auth_method in self.remediation and self.action in _CREDENTIAL_ACTIONS:
            action = _METHOD_ACTION.get(auth_method, self.action)  # type: ignore[arg-type]
            text = self.remediation[auth_method]  # type: ignore[index]
            if not _ACTION_WORDS[action].search(text) and _ACTION_WORDS[self.action].search(text):
                return self.action  # the text says the entry's own fix, not the method's usual one
            return action
        return self.action

    def public(self, auth_method: str | None = None) -> dict[str, Any]:
        return {
            "code": self.code,
            "base_code": self.base_code,
            "title": self.title,
            "cause": self.cause,
            "solution": self.solution_for(auth_method),
            "action": self.action_for(auth_method),
            "severity": str(self.severity),
        }


@dataclass(frozen=True)
class Match:
    """Why a text was classified as it was: the pattern's provider and the matched span."""

    provider: str | None
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Classification:
    entry: CatalogEntry
    match: Match | None = None


@dataclass
class AuthErrorEvent:
    """One observation from any source, normalised. Free text is sanitised and redacted before this exists."""

    integration_id: str
    status: EventStatus = EventStatus.failed
    error: str | None = None
    source: str = "native"
    integration_name: str | None = None
    provider: str | None = None
    auth_method: str | None = None
    error_code: str | None = None
    occurred_at: datetime | None = None
    account_id: str | None = None
    event_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    reauthorize_url: str | None = None
    authorized_by: str | None = None
