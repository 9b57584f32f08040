"""Durations written as in Alertmanager: ``0s``, ``30s``, ``5m``, ``4h``, ``1h30m``, ``7d``, ``2w``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 365 * 86400}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+")


def parse_duration(value: object) -> timedelta:
    """Parse ``"1h30m"`` into a timedelta; a timedelta or a number of seconds passes through."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a string such as '30s', '5m', '4h', '1h30m' or '7d'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        if value > MAX_SECONDS:
            raise ValueError(f"duration {value!r} is too long (at most 100y)")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError("a duration is a string such as '30s', '5m', '4h', '1h30m' or '7d'")
    text = value.strip()
    if text == "0":
        return timedelta(0)
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"invalid duration {value!r}: use e.g. '30s', '5m', '4h', '1h30m' or '7d'")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    if seconds > MAX_SECONDS:
        raise ValueError(f"duration {value!r} is too long (at most 100y)")
    return timedelta(seconds=seconds)


MAX_SECONDS = 100 * 365 * 86400  # far past any silence, lifetime or lead; far below timedelta's limit
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)  # room to add any duration (at most 100y) without overflowing


def bounded_utc(value: datetime, *, latest: datetime | None = LATEST) -> datetime:
    """An aware time as UTC, from 1970 on and before ``latest`` (9000; ``None``: any time Python can hold
    in UTC). A time that cannot be held in UTC (9999-12-31T23:59:59-14:00) or lies outside is a
    ``ValueError`` with a message for the sender, never an ``OverflowError`` deeper in."""
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("is out of range (from 1970 to 9000)") from None
    if utc < EARLIEST or (latest is not None and utc >= latest):
        raise ValueError("is out of range (from 1970 to 9000)")
    return utc


def format_duration(delta: timedelta) -> str:
    """Inverse of :func:`parse_duration` for whole seconds: ``timedelta(hours=1, minutes=30)`` -> ``1h30m``."""
    total = int(delta.total_seconds())
    if total == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def humanize(delta: timedelta) -> str:
    """Short human text for how long something has lasted: ``3h 12m``, ``2d 4h``, ``45s``."""
    total = max(0, int(delta.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{seconds}s"
