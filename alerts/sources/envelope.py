"""Strict decoding of untrusted JSON bodies (R3.2). Every failure is a :class:`BadPayload` (→ 400)."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32
MAX_VALUES = 10_000
MAX_INT = 2**63 - 1


class BadPayload(ValueError):
    """The body is not acceptable JSON; the message says why, for a problem+json ``detail``."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # the rare case: find which key came twice (dict() alone runs in C)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadPayload(f"duplicate key {key[:100]!r}")
            seen.add(key)
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
    value = float(text)
    if not math.isfinite(value):  # 1e400: Infinity by another name (R3.2)
        raise BadPayload("number out of range")
    return value


def _check_shape(value: Any) -> None:
    """Depth ≤ 32 and ≤ 10,000 values in total, iteratively (no recursion to exhaust).

    Scalars are counted with their container, not visited one by one: the events of a batch are
    objects of scalars, so the walk costs about one step per event."""
    count = 1
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item
        if children and depth >= MAX_DEPTH:  # its values would be at depth 33
            raise BadPayload(f"JSON nested deeper than {MAX_DEPTH}")
        count += len(children)
        if count > MAX_VALUES:
            raise BadPayload(f"more than {MAX_VALUES} JSON values")
        stack.extend([(c, depth + 1) for c in children if type(c) is dict or type(c) is list])


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_int=_int,
                            parse_float=_float)  # built once: json.loads(text, **hooks) builds one per call


def decode_json(body: bytes) -> Any:
    """Strict UTF-8 (one leading BOM allowed), no duplicate keys, no NaN/Infinity, 64-bit integers."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        text = body.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise BadPayload(f"body is not valid UTF-8 (byte {exc.start})") from None
    if not text or text.isspace():
        raise BadPayload("empty body")
    try:
        value = _DECODER.decode(text)
    except BadPayload:
        raise
    except RecursionError:  # the C parser guards its recursion; _check_shape below says the same for depth 33+
        raise BadPayload(f"JSON nested deeper than {MAX_DEPTH}") from None
    except json.JSONDecodeError as exc:
        raise BadPayload(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadPayload(f"malformed JSON: {type(exc).__name__}") from None
    if type(value) is dict or type(value) is list:
        _check_shape(value)
    return value
