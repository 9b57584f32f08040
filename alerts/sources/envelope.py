"""Strict decoding of untrusted JSON bodies (R3.2). Every failure is a :class:`BadPayload` (→ 400)."""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
MAX_VALUES = 10_000
MAX_INT = 2**63 - 1


class BadPayload(ValueError):
    """The body is not acceptable JSON; the message says why, for a problem+json ``detail``."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BadPayload(f"duplicate key {key[:100]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise BadPayload(f"{name} is not valid JSON")


def _int(text: str) -> int:
    if len(text) > 20:
        raise BadPayload("integer out of range")
    value = int(text)
    if not -MAX_INT - 1 <= value <= MAX_INT:
        raise BadPayload("integer out of range")
    return value


def _float(text: str) -> float:
    if len(text) > 400:
        raise BadPayload("number too long")
    return float(text)


def _check_shape(value: Any) -> None:
    """Depth ≤ 32 and ≤ 10,000 values in total, iteratively (no recursion to exhaust)."""
    count = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise BadPayload(f"more than {MAX_VALUES} JSON values")
        if depth > MAX_DEPTH:
            raise BadPayload(f"JSON nested deeper than {MAX_DEPTH}")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def decode_json(body: bytes) -> Any:
    """Strict UTF-8 (one leading BOM allowed), no duplicate keys, no NaN/Infinity, 64-bit integers."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        text = body.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise BadPayload(f"body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise BadPayload("empty body")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_int=_int,
            parse_float=_float,
        )
    except BadPayload:
        raise
    except RecursionError:  # the C parser guards its recursion; _check_shape below says the same for depth 33+
        raise BadPayload(f"JSON nested deeper than {MAX_DEPTH}") from None
    except json.JSONDecodeError as exc:
        raise BadPayload(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadPayload(f"malformed JSON: {type(exc).__name__}") from None
    _check_shape(value)
    return value
