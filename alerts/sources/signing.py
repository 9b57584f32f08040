"""Webhook authenticity (R1.1–R1.6): signatures, path tokens, bearer tokens, routing keys.

Every verifier here is *total*: whatever the headers and body hold, it returns the index of the
secret that matched or raises :class:`Unauthenticated` with a ``reason`` for metrics. Nothing
here logs, and no secret or signature ever appears in a reason. Comparisons are constant time
(``hmac.compare_digest`` on bytes) and every candidate secret is tried, so the time taken does not
say which one matched.

Schemes:

- **Standard Webhooks** (the native ``POST /v1/events``): ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` (several, space
  separated), keyed with the base64 part of a ``whsec_…`` secret. The timestamp must lie within the
  tolerance in both directions.
- **Fivetran**: ``X-Fivetran-Signature-256: <hex HMAC-SHA256 of the body>`` (Fivetran sends upper
  case; both sides are lower-cased before comparing). Fivetran signs no timestamp: freshness is
  checked on the body's ``created`` by :mod:`alerts.sources.fivetran`.
- **Tokens** (Airbyte/Stitch path tokens, Alertmanager bearer tokens, PagerDuty routing keys):
  the sha256 of the given token is compared with the sha256 of each accepted one, so neither the
  value nor its length leaks through timing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from alerts.config import WebhookSecret

__all__ = [
    "Unauthenticated",
    "Verified",
    "bearer_token",
    "candidates",
    "match_token",
    "sign_fivetran",
    "sign_standard",
    "standard_key",
    "verify_fivetran",
    "verify_standard",
]

WEBHOOK_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
TIMESTAMP = re.compile(r"[0-9]{1,10}")
HEX64 = re.compile(r"[0-9A-Fa-f]{64}")
MAX_SIGNATURE_HEADER = 4096
MAX_SIGNATURES = 16


class Unauthenticated(Exception):
    """The request is not authentic. ``reason`` is a fixed word for metrics, never request data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    """Which secret matched (its index in the configured list) and the delivery id, if the scheme has one."""

    index: int
    message_id: str | None = None


def candidates(secrets: Iterable[WebhookSecret], *, now: datetime) -> list[tuple[int, bytes]]:
    """The secrets still in force at ``now`` as ``(index, bytes)``; a secret past ``not_after`` is skipped."""
    out = []
    for i, s in enumerate(secrets):
        if s.not_after is not None and now > s.not_after:
            continue
        out.append((i, s.value.get_secret_value().encode()))
    return out


def standard_key(secret: bytes) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 after ``whsec_``."""
    return base64.b64decode(secret.removeprefix(b"whsec_"), validate=True)


def sign_standard(secret: str | bytes, message_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` header value a Standard Webhooks sender puts on ``body``."""
    key = standard_key(secret.encode() if isinstance(secret, str) else secret)
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign_fivetran(secret: str | bytes, body: bytes) -> str:
    """The ``X-Fivetran-Signature-256`` value Fivetran sends (upper-case hex)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest().upper()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise Unauthenticated("missing_header")
    return value.strip()


def verify_standard(
    headers: Mapping[str, str],
    body: bytes,
    keys: list[tuple[int, bytes]],
    *,
    now: datetime,
    tolerance: timedelta,
) -> Verified:
    """Check a Standard Webhooks signature over the exact ``body`` bytes, then the timestamp window."""
    if not keys:
        raise Unauthenticated("no_secret")
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    sig_header = _header(headers, "webhook-signature")
    if not WEBHOOK_ID.fullmatch(msg_id) or not TIMESTAMP.fullmatch(stamp) or len(sig_header) > MAX_SIGNATURE_HEADER:
        raise Unauthenticated("malformed_header")
    given: list[bytes] = []
    for part in sig_header.split()[:MAX_SIGNATURES]:
        version, _, value = part.partition(",")
        if version != "v1":
            continue
        try:
            raw = base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            continue
        if len(raw) == 32:
            given.append(raw)
    if not given:
        raise Unauthenticated("malformed_header")
    signed = f"{msg_id}.{stamp}.".encode() + body
    matched: int | None = None
    for index, secret in keys:
        try:
            key = standard_key(secret)
        except (ValueError, binascii.Error):  # refused at config load; never a 500 here
            continue
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        for sig in given:
            if hmac.compare_digest(expected, sig) and matched is None:
                matched = index
    if matched is None:
        raise Unauthenticated("bad_signature")
    if abs(now.timestamp() - int(stamp)) > tolerance.total_seconds():
        raise Unauthenticated("timestamp_out_of_tolerance")
    return Verified(index=matched, message_id=msg_id)


def verify_fivetran(header: str | None, body: bytes, keys: list[tuple[int, bytes]]) -> Verified:
    """Check ``X-Fivetran-Signature-256`` (hex, any case) over the exact ``body`` bytes."""
    if not keys:
        raise Unauthenticated("no_secret")
    if header is None:
        raise Unauthenticated("missing_header")
    value = header.strip()
    if not HEX64.fullmatch(value):
        raise Unauthenticated("malformed_header")
    given = value.lower().encode("ascii")
    matched: int | None = None
    for index, key in keys:
        expected = hmac.new(key, body, hashlib.sha256).hexdigest().lower().encode("ascii")
        if hmac.compare_digest(expected, given) and matched is None:
            matched = index
    if matched is None:
        raise Unauthenticated("bad_signature")
    return Verified(index=matched)


def match_token(given: str | None, keys: list[tuple[int, bytes]]) -> Verified:
    """A shared token (path token, bearer token, routing key), compared in constant time."""
    if not keys:
        raise Unauthenticated("no_secret")
    if not given:
        raise Unauthenticated("missing_token")
    given_digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    matched: int | None = None
    for index, key in keys:
        if hmac.compare_digest(hashlib.sha256(key).digest(), given_digest) and matched is None:
            matched = index
    if matched is None:
        raise Unauthenticated("bad_token")
    return Verified(index=matched)


def bearer_token(header: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or ``None``."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
