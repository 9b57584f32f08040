"""Durations written as in Alertmanager: ``0s``, ``30s``, ``5m``, ``4h``, ``1h30m``, ``7d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

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
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError("a duration is a string such as '30s', '5m', '4h', '1h30m' or '7d'")
    text = value.strip()
    if text == "0":
        return timedelta(0)
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"invalid duration {value!r}: use e.g. '30s', '5m', '4h', '1h30m' or '7d'")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    return timedelta(seconds=seconds)


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
