"""Secrets out of text (R4.2) and garbage out of free text (R3.3).

``redact`` keeps the key or prefix and replaces the value with ``[REDACTED]``.
Every pattern is linear (no nested quantifiers) and ``redact(redact(x)) == redact(x)``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

MARK = "[REDACTED]"
TRUNCATED = "…[truncated]"
# How much of one field is redacted before it is cut to its limit (4096): a secret straddling the cut
# is redacted whole (a PEM key is ~3.2 KiB), and the work per field stays bounded.
MAX_TEXT = 16 * 1024

_KEYS = (
    r"access_token|refresh_token|id_token|client_secret|api[_-]?key|apikey|password|passwd|pwd"
    r"|secret|token|signature|private_key|auth_token|session_token|access_key|secret_key|session[_-]?id"
    r"|cookie|session"
)
# ``code`` and ``sig`` also name harmless things ("error code=190", "code": "invalid_grant"): only long
# values that are not a plain identifier (an OAuth code has digits or slashes) are redacted.
_SHORT_KEYS = r"code|sig"
# A bare value: up to a blank, quote, separator or closing bracket; a marker already in it counts as
# part of it (whole, with its "]"), so a second pass sees what the first one left.
_BARE = r"(?:\[REDACTED\]|[^\s\"'&,;)}\]])"
_IDENTIFIER = re.compile(r"[A-Za-z_.-]+")


def _short_value(m: re.Match[str]) -> str:
    value = m.group("v")
    if _IDENTIFIER.fullmatch(value) or MARK[:-1] in value:  # an error code; or what a token rule left
        return m.group(0)
    return m.group(0)[: m.start("v") - m.start(0)] + MARK + m.group(0)[m.end("v") - m.start(0):]


# An error's prose is not a key and its value: "Error validating access token: Session has expired"
# (Meta), "refresh token: expired or revoked". Kept as written: a value that is a word only ever used
# about a credential's state, and after "<access|refresh|id|session|auth> token:" one plain word
# followed by another (or by what a rule left: a second pass must change nothing) — where that
# "<access…>" word is prose itself, not the value of a key before it ("password=access token: …").
# Everything else in the form is redacted as before ("password: letmein for bob" included). Only the
# few characters before a match are looked at: linear however many keys a text holds.
_WORD = re.compile(r"[A-Za-z]+")
_PROSE_NEXT = re.compile(r"[ \t]+(?:\[REDACTED\]|[A-Za-z])")
_PROSE_KEY = re.compile(r"(?i)(?:^|[^=:\s])[ \t]*(?<![\w-])(?:access|refresh|id|session|auth)[ \t]+$")
_STATUS_WORDS = frozenset((
    "expired", "invalid", "revoked", "missing", "required", "malformed", "denied", "rejected", "unauthorized",
    "none", "null", "empty", "unknown", "incorrect", "wrong", "disabled", "inactive", "absent", "undefined",
))


def _bare_value(m: re.Match[str]) -> str:
    head, value = m.group(1), m.group(2)
    if "=" not in head and head.rstrip()[-1:] == ":" and _WORD.fullmatch(value):
        if value.lower() in _STATUS_WORDS and not _PROSE_NEXT.match(m.string, m.end()):
            return m.group(0)  # "refresh token: expired" (a status word that ends the phrase)
        if head.split(":", 1)[0].strip().lower() == "token" and _PROSE_NEXT.match(m.string, m.end()) \
                and _PROSE_KEY.search(m.string[max(0, m.start() - 40):m.start()]):
            return m.group(0)
    return head + MARK


# Each rule: (compiled pattern, replacement). Order matters: the specific forms first.
_RULES: list[tuple[re.Pattern[str], Any]] = [
    # PEM private keys, whole block (a body never runs past the next BEGIN: linear on repeated BEGINs)
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[^-]*(?:-(?!----END|----BEGIN)[^-]*)*"
                   r"-----END [A-Z ]*PRIVATE KEY-----"),
        "-----BEGIN PRIVATE KEY-----" + MARK + "-----END PRIVATE KEY-----",
    ),
    # Authorization headers, also as a JSON or dict entry ("Authorization": "Basic …")
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*(?:[\"']\s*)?(?:bearer|basic|token)\s+)(?!\[REDACTED\])[^\s\"',;]+"),
     r"\1" + MARK),
    # Cookie headers: every value of them (session cookies are credentials)
    (re.compile(r"(?i)\b((?:set-)?cookie[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])[^\s\"'][^\n\"']*"), r"\1" + MARK),
    # bare "Bearer xyz"
    (re.compile(r"(?i)\b(bearer\s+)(?!\[REDACTED\])[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MARK),
    # DSN passwords: scheme://user:pass@host (the user may be empty), split at the last @ before the host.
    # A scheme starts only where no scheme character precedes it: linear on long runs of them.
    (re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*://[^\s:/@]*:)(?!\[REDACTED\]@)[^\s/]*@(?=[^\s@/]+)"),
     r"\1" + MARK + "@"),
    # Slack webhook URLs
    (re.compile(r"https://hooks\.slack\.com/(services|workflows|triggers)/(?!\[REDACTED\])\S+"), r"https://hooks.slack.com/\1/" + MARK),
    # JSON "key": "value" and Python 'key': 'value'
    (
        re.compile(r"(?i)(([\"'])[a-z0-9_-]*?(?:" + _KEYS + r")\2\s*:\s*([\"']))(?!\[REDACTED\])"
                   r"(?:(?!\3)[^\\\n]|\\.)+(\3)"),
        r"\1" + MARK + r"\4",
    ),
    # the same JSON quoted inside a string (a log line or another JSON value): \"key\": \"value\"
    (
        re.compile(r"(?i)(\\([\"'])[a-z0-9_-]*?(?:" + _KEYS + r")\\\2\s*:\s*\\\2)(?!\[REDACTED\])"
                   r"(?:(?!\\\2)[^\n])+(\\\2)"),
        r"\1" + MARK + r"\3",
    ),
    # JSON "key": 12345678
    (re.compile(r"(?i)(([\"'])[a-z0-9_-]*?(?:" + _KEYS + r")\2\s*:\s*)-?[0-9][0-9.eE+-]*"), r"\1" + MARK),
    # key="quoted value, maybe with blanks" and key: 'quoted value'
    (
        re.compile(r"(?i)(?<![\w-])([a-z0-9_-]*?(?:" + _KEYS + r")\s*[=:]\s*([\"']))(?!\[REDACTED\])"
                   r"(?:(?!\2)[^\\\n]|\\.)+(\2)"),
        r"\1" + MARK + r"\3",
    ),
    # key=value and key: value (query strings, logs, YAML) — but not prose (_bare_value)
    (
        re.compile(r"(?i)(?<![\w-])([a-z0-9_-]*?(?:" + _KEYS + r")\s*[=:]\s*[\"']?)(?!\[REDACTED\])(" + _BARE + r"+)"),
        lambda m: _bare_value(m),
    ),
    (
        re.compile(r"(?i)(([\"'])(?:" + _SHORT_KEYS + r")\2\s*:\s*[\"'])(?!\[REDACTED\])(?P<v>(?:\[REDACTED\]|[^\s\"'\]]){12,})"),
        _short_value,
    ),
    (
        re.compile(r"(?i)\b((?:" + _SHORT_KEYS + r")\s*[=:]\s*[\"']?)(?!\[REDACTED\])(?P<v>" + _BARE + r"{12,})"),
        _short_value,
    ),
    # Well-known token shapes, wherever they stand
    (re.compile(r"(?<![\w-])eyJ[\w-]{5,}\.eyJ[\w-]{5,}\.[\w-]*"), MARK),
    (re.compile(r"\b(xox[abposr]-)[\w-]{10,}"), r"\1" + MARK),
    (re.compile(r"\b(xapp-\d-)[\w-]+"), r"\1" + MARK),
    (re.compile(r"\b([sr]k_(?:live|test)_)[A-Za-z0-9]{10,}"), r"\1" + MARK),
    (re.compile(r"\b(gh[pousr]_)[A-Za-z0-9]{36,}"), r"\1" + MARK),
    (re.compile(r"\b(github_pat_)\w{22,}"), r"\1" + MARK),
    (re.compile(r"\b(AKIA)[0-9A-Z]{16}\b"), r"\1" + MARK),
    (re.compile(r"\b(ya29\.)[\w-]+"), r"\1" + MARK),
    (re.compile(r"(?<![\w/])(1//)[\w-]{20,}"), r"\1" + MARK),
    (re.compile(r"\b(whsec_)[A-Za-z0-9+/=]{8,}"), r"\1" + MARK),
    (re.compile(r"\b(shp(?:at|ca|pa|ss)_)[a-fA-F0-9]{16,}"), r"\1" + MARK),
]


def _apply(rules: list[tuple[re.Pattern[str], Any]], text: str) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text


def redact(text: str) -> str:
    """Replace secrets in ``text`` by ``[REDACTED]``, keeping the key or prefix that names them."""
    return _apply(_RULES, text) if text else text


# What is a secret wherever it stands, whatever surrounds it: PEM keys, "Bearer …", DSN passwords, Slack
# webhooks and the well-known token shapes — not the key=value forms, which can be an id's own words.
_SHAPES = [rule for rule in _RULES if not any(k in rule[0].pattern for k in (_KEYS, _SHORT_KEYS, "cookie"))]


def redact_shapes(text: str) -> str:
    """:func:`redact` with only the token shapes (for identifiers: see :func:`clean_id`)."""
    return _apply(_SHAPES, text) if text else text


def redact_value(value: object) -> object:
    """Redact every string inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROLS = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]"
)
_SURROGATES = re.compile("[\ud800-\udfff]")


def sanitize(text: str | None, *, limit: int = 4096, keep_newlines: bool = False) -> str | None:
    """Make untrusted free text safe to store and show (R3.3), never rejecting it.

    Lone surrogates become U+FFFD; ANSI escapes, C0/C1 controls (except tab, and newlines when
    ``keep_newlines``) and bidi controls are removed; the result is NFC-normalised and cut to
    ``limit`` characters with a ``…[truncated]`` marker.
    """
    if text is None:
        return None
    if not (text.isascii() and text.isprintable()):  # printable ASCII (the usual case) has nothing to remove
        text = _unsafe_removed(text, keep_newlines)
    if len(text) > limit:
        text = text[: max(0, limit - len(TRUNCATED))] + TRUNCATED
    return text


def _unsafe_removed(text: str, keep_newlines: bool) -> str:
    text = _SURROGATES.sub("\ufffd", text)
    text = _ANSI.sub("", text)
    if keep_newlines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = _CONTROLS.sub(lambda m: m.group(0) if m.group(0) == "\n" else "", text)
    else:
        text = re.sub(r"[\r\n]+", " ", text)
        text = _CONTROLS.sub("", text)
    return unicodedata.normalize("NFC", text)


def clean(text: str | None, *, limit: int = 4096, keep_newlines: bool = False) -> str | None:
    """Sanitise, redact, then cut to ``limit``: what every free-text field goes through at ingest.

    Cut last: a secret that straddled the limit would otherwise lose the end its pattern needs and
    keep its first characters."""
    cleaned = sanitize(text, limit=MAX_TEXT, keep_newlines=keep_newlines)
    if not cleaned:
        return cleaned
    redacted = redact(cleaned)
    return redacted if len(redacted) <= limit else redacted[: max(0, limit - len(TRUNCATED))] + TRUNCATED


@functools.lru_cache(maxsize=4096)
def clean_field(text: str | None, limit: int) -> str | None:
    """A short free-text field (a name, an id, an author) as :func:`clean` makes it; cached, as the same
    names come back with every event of an integration."""
    return clean(text, limit=limit) if text else text


@functools.lru_cache(maxsize=4096)
def clean_id(text: str | None, limit: int) -> str | None:
    """An identifier (integration id, account id) sanitised, with token *shapes* redacted only: ids are
    matched, grouped and routed on, so "vault-token:prod" and "vault-token:stage" must stay two ids
    (the key=value rules would make both "vault-token:[REDACTED]"); a Slack token or a JWT in one is
    still never stored."""
    if not text:
        return text
    cleaned = sanitize(text, limit=MAX_TEXT) or ""
    out = redact_shapes(cleaned)
    return out if len(out) <= limit else out[: max(0, limit - len(TRUNCATED))] + TRUNCATED


def clean_labels(labels: dict[str, str]) -> dict[str, str]:
    """Labels as stored and shown: keys and values sanitised and redacted."""
    return {clean_field(k, 100) or k: clean_field(v, 1000) or "" for k, v in labels.items()}
