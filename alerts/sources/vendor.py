"""What the vendor adapters (Fivetran, Airbyte, Alertmanager, PagerDuty) share.

An adapter is a pure function from a strictly decoded JSON body (and ``now``) to a :class:`Batch`
of :class:`~alerts.models.AuthErrorEvent` items. It never trusts a field's type: every read goes
through :func:`text` or :func:`ident`, which return ``None`` for anything that is not a usable
string. A body the adapter cannot use raises :class:`AdapterError` (→ 422); a body it recognises but
has nothing to say about counts as ``ignored`` (→ 2xx, nothing stored).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from alerts.durations import bounded_utc
from alerts.models import AuthErrorEvent
from alerts.redact import MAX_TEXT, sanitize

MAX_LABELS = 64


class AdapterError(ValueError):
    """The body is authentic JSON but not the shape this source sends; the message says which field."""


class Stale(ValueError):
    """The body's own timestamp is outside the accepted window (→ 401 ``timestamp_out_of_tolerance``)."""


@dataclass
class Item:
    """One event to ingest (or, for PagerDuty ``acknowledge``, an alert to acknowledge).

    ``fallback_code`` is used only when the error text classifies as nothing: a vendor's own signal
    that the failure is an authentication one (Fivetran's ``reconnect`` task).
    """

    event: AuthErrorEvent
    fallback_code: str | None = None
    action: Literal["ingest", "acknowledge"] = "ingest"


@dataclass
class Batch:
    items: list[Item] = field(default_factory=list)
    ignored: int = 0
    test: bool = False


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def text(value: Any, *, limit: int = MAX_TEXT) -> str | None:
    """A string field, sanitised (R3.3); numbers are not text; empty becomes ``None``. Free text (the
    default limit) is cut to what is stored only once redacted, at ingest (:func:`alerts.redact.clean`)."""
    if not isinstance(value, str):
        return None
    return sanitize(value, limit=limit) or None


def ident(value: Any, *, limit: int = 200) -> str | None:
    """An identifier: a string or an integer (Airbyte's ``jobId``), sanitised, ``None`` when empty."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return text(value, limit=limit)


def labels_of(value: Any) -> dict[str, str]:
    """String labels from a JSON object, sanitised and capped (64 labels, keys 100, values 1000 characters)."""
    out: dict[str, str] = {}
    for k, v in obj(value).items():
        if len(out) >= MAX_LABELS:
            break
        key = text(k, limit=100)
        val = ident(v, limit=1000) if not isinstance(v, float) else text(repr(v), limit=1000)
        if key and val is not None:
            out[key] = val
    return out


def hashed_id(prefix: str, *parts: str | None) -> str:
    """A deterministic idempotency key from the parts that identify one delivery (R1.5)."""
    joined = "\x1f".join(p or "" for p in parts)
    return f"{prefix}-{hashlib.sha256(joined.encode('utf-8', 'surrogatepass')).hexdigest()}"


def body_id(prefix: str, body: bytes) -> str:
    return f"{prefix}-{hashlib.sha256(body).hexdigest()}"


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})", re.IGNORECASE)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time with a zone (PagerDuty's ``+0000`` too), as UTC; anything else is ``None``."""
    if not isinstance(value, str) or len(value) > 40 or not _RFC3339.fullmatch(value.strip()):
        return None
    raw = value.strip().replace(" ", "T")
    if raw[-1] in "zZ":
        raw = raw[:-1] + "+00:00"
    elif raw[-5] in "+-" and raw[-3] != ":":
        raw = raw[:-2] + ":" + raw[-2:]
    head, dot, rest = raw.partition(".")
    if dot:  # Python accepts at most 6 fraction digits
        fraction = re.match(r"\d*", rest).group(0)  # type: ignore[union-attr]
        raw = f"{head}.{fraction[:6]}{rest[len(fraction):]}"
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.year < 1971:
        return None
    try:
        return bounded_utc(parsed, latest=None)  # 9999-12-31T23:59:59-14:00 is past what UTC can hold
    except ValueError:
        return None


def guess_provider(name: str | None, aliases: Mapping[str, str], *, passthrough: bool = True) -> str | None:
    """A canonical provider id from a vendor's connector type or a source's display name.

    The whole name first (``google_ads`` → ``google``), then its words from the last
    (``google_cloud_postgresql`` → ``postgres``, ``Salesforce (prod)`` → ``salesforce``). A name with no
    known word passes through lower-cased (``amazon_ads``) when ``passthrough``, else gives ``None``
    (a display name such as "Production DB" names no provider).
    """
    if not name:
        return None
    key = name.strip().lower()
    whole = re.sub(r"[\s-]+", "_", key)
    for prefix in ("tap_", "source_", "target_", "destination_"):
        whole = whole.removeprefix(prefix)
    if whole in aliases:
        return aliases[whole]
    words = [w for w in re.split(r"[^a-z0-9]+", key) if w]
    for word in reversed(words):
        if word in aliases:
            return aliases[word]
    return (whole[:100] or None) if passthrough else None
