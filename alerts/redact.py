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
    r"(?:access_token|refresh_token|id_token|client_secret|api[_-]?key|apikey|pass(?:word|wd|phrase)?|pwd"
    r"|secret|token|signature|private_key|auth_token|session_token|access_key|secret_key|session[_-]?id"
    r"|cookie|session|credentials?|key)(?:string|text|value|s)?"  # AWS's SecretString, Azure's secretText
)
# Only as a JSON key ("auth": "…", a Docker config's): as a word of prose, "auth: …" is about the step.
_JSON_KEYS = _KEYS + r"|auth"
# ``code`` and ``sig`` also name harmless things ("error code=190", "code": "invalid_grant"): only long
# values that are not a plain identifier (an OAuth code has digits or slashes) are redacted.
_SHORT_KEYS = r"code|sig"
# A bare value: up to a blank, quote, separator or closing bracket; a marker already in it counts as
# part of it (whole, with its "]"), so a second pass sees what the first one left.
_BARE = r"(?:\[REDACTED\]|[^\s\"'&,;)}\]])"
# A value of several words ("password=correct horse battery staple", ODBC's "Password=My secret PW;")
# runs on over blanks, but not past a sentence's end, an opening bracket, a dash between blanks or the
# next "key=" / "key:" (the next field of a log line, or of a header block flattened onto one line).
_RUN = (_BARE + r"+(?:(?<![.!?])[ \t]+(?![(\[{<]|[-–—|](?:\s|$)|[\w.-]+\s*(?:=>|[=:])"
        r"|(?:access|refresh|id|session|auth)[ \t]+token\s*:|\S*[?&][\w.-]*(?:" + _KEYS + r")=)" + _BARE + r"+)*")
_SEP = r"\s*(?:=>|[=:](?!>))\s*"  # key=value, key: value, and Ruby's and PHP's key => value
_IDENTIFIER = re.compile(r"[A-Za-z_.-]+")


def _short_value(m: re.Match[str]) -> str:
    value = m.group("v")
    if _IDENTIFIER.fullmatch(value) or MARK[:-1] in value:  # an error code; or what a token rule left
        return m.group(0)
    return m.group(0)[: m.start("v") - m.start(0)] + MARK + m.group(0)[m.end("v") - m.start(0):]


# An error's prose is not a key and its value: "Error validating access token: Session has expired"
# (Meta), "api_key: Invalid API key provided" (Stripe), "INVALID_SESSION_ID: Session expired or invalid"
# (Salesforce), "(using password: YES)" (MySQL), "clientCredentialsToken: received HTTP status 401".
# A value after ":" is kept as written when no word of it looks like a secret (letters mixed with
# digits, or a long unbroken run; dates, short numbers and words of other scripts do not) and it reads
# as prose: it starts with a word of prose, names its key in its first words ("Client secret: Client
# secret has expired"), or — for a key that holds a token, which is never several words — has more
# than one word. A password's or secret's value can be several plain words ("correct horse battery
# staple"): only the first two ways count for it, and only when a word of it is about an error
# ("password: must be at least 8 characters"; "password: the quick brown fox" is redacted).
# After "<access|refresh|id|session|auth> token:" a sentence of words is Meta's prose whatever it holds — where that "<access…>" word is prose itself,
# not the value of a key before it ("password=access token: …"). After "=" only a status word is kept
# ("token=expired"), and dbt's "PASS=401". Everything else is redacted, every word of it up to where the
# value ends. Only the few characters before a match are looked at: linear however many keys a text holds.
_PROSE_KEY = re.compile(r"(?i)(?:^|[^=:\s])[ \t]*(?<![\w-])(?:access|refresh|id|session|auth)[ \t]+$")
_STATUS_WORDS = frozenset((
    "expired", "invalid", "revoked", "missing", "required", "malformed", "denied", "rejected", "unauthorized",
    "none", "null", "empty", "unknown", "incorrect", "wrong", "disabled", "inactive", "absent", "undefined",
    "yes", "no", "true", "false", "mismatch", "mismatched", "forbidden", "failed", "expiring", "unset", "blank",
    "invalid_grant", "invalid_token", "invalid_client", "invalid_request", "invalid_scope", "unauthorized_client",
    "access_denied", "expired_token", "unsupported_grant_type", "not_found", "notfound",
))
_PROSE_WORDS = _STATUS_WORDS | frozenset((
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "has", "have", "had", "must", "should", "could",
    "would", "will", "can", "cannot", "may", "might", "does", "do", "did", "not", "please", "check", "verify",
    "ensure", "try", "retry", "contact", "make", "for", "of", "to", "in", "on", "at", "by", "with", "from",
    "this", "that", "your", "you", "our", "we", "it", "its", "their", "they", "all", "any", "too",
    "unable", "error", "failure", "provided", "supplied", "specified", "given", "doesn't", "received", "got",
    "isn't", "wasn't", "can't", "couldn't", "didn't", "expected", "requires", "needs", "only", "already",
))
# What a password's value says when it is an error about the password, not the password: a passphrase
# of plain words ("password: the quick brown fox") holds none of these.
_ERROR_WORDS = _STATUS_WORDS | frozenset((
    "not", "must", "cannot", "can't", "unable", "error", "failure", "please", "check", "verify", "ensure",
    "doesn't", "isn't", "wasn't", "didn't", "couldn't", "don't", "provided", "supplied", "specified", "given",
    "expected", "authentication", "match", "valid", "correct", "reset", "change", "changed", "characters",
    "policy", "length", "short", "attempts", "locked", "retry", "again", "expire", "expires", "expiry",
    "received", "status", "response", "request", "http",
))
# Letters and digits in one run of 6 or more, an unbroken run of 20, or a run of 12 with three capitals
# inside it (a base62 token without a digit): searched for anywhere in a word, so one "!" (Salesforce's
# session ids), "%2F" or "$" does not hide the rest.
_SECRETISH = re.compile(r"(?=[\w+/=.~-]*\d)(?=[\w+/=.~-]*[A-Za-z])[\w+/=.~-]{6,}|[\w+/=~-]{20,}"
                        r"|(?=[A-Za-z]{12})[A-Za-z][a-z]*[A-Z][a-z]*[A-Z][a-z]*[A-Z]", re.ASCII)
_DATEISH = re.compile(r"\d{4}-\d\d-\d\d(?:[T ][\d:.]{5,15})?Z?|\d\d?:\d\d(?::\d\d)?|\d\d?-[A-Za-z]{3}-\d{2,4}")
# An error code starts prose and is no secret: AADSTS700082, ORA-28001, HTTP401, 401
_ERROR_CODE = re.compile(r"[A-Z]{1,10}[-_]?\d{2,8}|\d{3}")
_KEY_WORDS = re.compile(r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])")
_PASSWORDISH = re.compile(r"(?i)pass|pwd|secret|credential")


def _secret_like(word: str) -> bool:
    """Whether a word of a value could be (part of) a secret."""
    if MARK[:-1] in word:  # what a rule left: redacted again, the same way
        return True
    w = word.strip(".,!?:;()[]{}\"'“”‘’")
    if not w.isascii() or w.lower() in _STATUS_WORDS or _DATEISH.fullmatch(w) or _ERROR_CODE.fullmatch(w):
        return False  # other scripts' words and dates ("2014年8月17日"), status words, error codes
    if len(w) >= 6 and any(c.isdigit() for c in w) and any(c.isalpha() for c in w):
        return True  # letters and digits, whatever separates them: "Hunter#2024", "00D…!AQ4AQ…"
    return bool(_SECRETISH.search(w))


def _words_redacted(value: str) -> str:
    """``value`` with each word that looks like a secret replaced (prose is kept around them)."""
    return re.sub(r"\S+", lambda w: MARK if _secret_like(w.group(0)) else w.group(0), value)


def _bare_value(m: re.Match[str]) -> str:
    head, value = m.group(1), m.group(2)
    start = m.start()
    words = value.split()
    first = words[0].rstrip(".,!?:;").lower()
    if start and m.string[start - 1] in "?&":  # in a query string a value has no blanks
        if first in _STATUS_WORDS and len(words) == 1:
            return m.group(0)
        return head + MARK + _words_redacted(value[len(words[0]):])
    key = re.split(r"\s*(?:=>|[=:])", head, maxsplit=1)[0].strip(" \t\"'[]")
    if "=" in head:  # key=value, key => value: an assignment, not a sentence
        if (first in _STATUS_WORDS and len(words) == 1) or (key == "PASS" and value.isdigit()):
            return m.group(0)  # "token=expired"; dbt's "PASS=401"
        return head + MARK
    sentence = key.lower() == "token" and len(words) > 1 and words[0].isalpha() \
        and _PROSE_KEY.search(m.string[max(0, start - 40):start])  # Meta's "Error validating access token: …"
    if not sentence:
        names = {w.lower() for w in _KEY_WORDS.findall(key) if len(w) > 2}
        # its first words (not the secret-looking ones: redacted, they would not name it on a second pass)
        opening = {w.lower() for word in words[:3] if not _secret_like(word) for w in _KEY_WORDS.findall(word)}
        passwordish = bool(_PASSWORDISH.search(key))
        sentence = first in _PROSE_WORDS or bool(_ERROR_CODE.fullmatch(words[0].rstrip(".,!?:;"))) \
            or bool(names & opening) \
            or (len(words) > 1 and not passwordish and not any(map(_secret_like, words)))
        if sentence and passwordish and len(words) > 1:  # a passphrase of plain words is not an error
            sentence = any(w.lower() in _ERROR_WORDS or _ERROR_CODE.fullmatch(w)
                           for w in (word.strip(".,!?:;()\"'") for word in words))
    if sentence and not _secret_like(words[0]):
        return head + _words_redacted(value)  # prose, with any secret-looking word in it redacted
    return head + MARK


def _authorization(m: re.Match[str]) -> str:
    """``Authorization: <scheme> <credentials>``, any scheme (Bearer, Basic, OAuth, SSWS, Zoho-oauthtoken…)
    or none; prose about the header ("Authorization: denied", "authorization: failed for …") stays."""
    head, scheme, value = m.group(1), m.group(2), m.group(3)
    if value.startswith(MARK[:-1]):
        return m.group(0)
    if scheme is None:
        return m.group(0) if value.rstrip(".,!?:;").lower() in _PROSE_WORDS else head + MARK
    if scheme.lower() in _PROSE_WORDS:
        return m.group(0)
    return head + m.group(0)[len(head): m.start(3) - m.start(0)] + MARK


# user:password@host:port without a scheme ("connect string admin:pw@db.internal:5432/app"): a guess from
# the context, so not one of the shapes an identifier loses (its user@host may be what names it)
_USER_PASS_HOST = (re.compile(r"(?<![\w/.:@%+-])([A-Za-z0-9._-]+:)(?!\[REDACTED\]@)[^\s@/:'\"]+@"
                              r"(?=[A-Za-z0-9.-]+:\d{2,5}\b)"), r"\1" + MARK + "@")

# Each rule: (compiled pattern, replacement). Order matters: the specific forms first.
_RULES: list[tuple[re.Pattern[str], Any]] = [
    # PEM private keys, the whole block — or, cut off before its END line, all of it to the end of the
    # field or its closing quote (a body never runs past the next BEGIN: linear on repeated BEGINs)
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[^-\"]*(?:-(?!----END|----BEGIN)[^-\"]*)*"
                   r"(?:-----END [A-Z ]*PRIVATE KEY-----)?"),
        "-----BEGIN PRIVATE KEY-----" + MARK + "-----END PRIVATE KEY-----",
    ),
    # Authorization headers, also as a JSON or dict entry ("Authorization": "Basic …"), any scheme
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*(?:[\"']\s*)?)(?:([A-Za-z][\w.-]*)[ \t]+)?([^\s\"',;]+)"),
     _authorization),
    # Cookie headers: every name=value pair of them (session cookies are credentials), not what follows
    (re.compile(r"(?i)\b((?:set-)?cookie[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])"
                r"[^\s\"';=,]+=[^\s\"';]*(?:;[ \t]*[^\s\"';=,]+(?:=[^\s\"';]*)?)*"), r"\1" + MARK),
    # bare "Bearer xyz"
    (re.compile(r"(?i)\b(bearer\s+)(?!\[REDACTED\])[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MARK),
    # DSN passwords: scheme://user:pass@host (the user may be empty), split at the last @ before the host;
    # a password with a "/" in it runs to the first @. A scheme starts only where no scheme character
    # precedes it: linear on long runs of them.
    (re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*://[^\s:/@]*:)(?!\[REDACTED\]@)(?:[^\s/]{0,256}@|[^\s@]{0,256}@)"
                r"(?=[^\s@/]+)"),
     r"\1" + MARK + "@"),
    _USER_PASS_HOST,
    # Slack webhook URLs
    (re.compile(r"https://hooks\.slack\.com/(services|workflows|triggers)/(?!\[REDACTED\])\S+"), r"https://hooks.slack.com/\1/" + MARK),
    # JSON "key": "value", Python 'key': 'value', Ruby "key" => "value"
    (
        re.compile(r"(?i)(([\"'])[a-z0-9_-]*?(?:" + _JSON_KEYS + r")\2\s*(?::|=>)\s*(?:[ubr]{1,2}(?=[\"']))?([\"']))"
                   r"(?!\[REDACTED\])(?:(?!\3)[^\\\n]|\\.)+(\3)"),
        r"\1" + MARK + r"\4",
    ),
    # the same JSON quoted inside a string, once or more (a log line, another JSON value, Airbyte's
    # messages): \"key\": \"value\", \\"key\\": \\"value\\"; an escaped quote in the value is part of it
    (
        re.compile(r"(?i)((?<!\\)(\\+)([\"'])[a-z0-9_-]*?(?:" + _JSON_KEYS + r")\2\3\s*(?::|=>)\s*\2\3)(?!\[REDACTED\])"
                   r"(?:(?!(?<!\\)\2\3)[^\n])+((?<!\\)\2\3)"),
        r"\1" + MARK + r"\4",
    ),
    # JSON escaped for HTML: &quot;key&quot;:&quot;value&quot; (&#34; too)
    (re.compile(r"(?i)((&quot;|&#34;)[a-z0-9_-]*?(?:" + _JSON_KEYS + r")\2\s*:\s*\2)(?!\[REDACTED\])"
                r"(?:(?!&quot;|&#34;)[^\n<]){1,4096}(\2)"), r"\1" + MARK + r"\3"),
    # Firebase's ?auth=<secret> (as a word of prose "auth" is about the step: only in a query string)
    (re.compile(r"(?i)([?&]auth=)(?!\[REDACTED\])[^&\s\"'#]+"), r"\1" + MARK),
    # JSON "key": 12345678
    (re.compile(r"(?i)(([\"'])[a-z0-9_-]*?(?:" + _JSON_KEYS + r")\2\s*(?::|=>)\s*)-?[0-9][0-9.eE+-]*"), r"\1" + MARK),
    # JSON in a URL's query: %22key%22%3A%22value%22
    (re.compile(r"(?i)(%22[a-z0-9_-]*?(?:" + _KEYS + r")%22(?:%3A|:)(?:%20|\+)*%22)(?!\[REDACTED\])"
                r"(?:(?!%22)[^\s&\"])+(%22)"), r"\1" + MARK + r"\2"),
    # a URL in a URL: ?next=https%3A%2F%2Fx%2F%3Faccess_token%3Dvalue (encoded once or more)
    (re.compile(r"(?i)((?:" + _KEYS + r")(?:%25)*%3D)(?!\[REDACTED\])(?:[A-Za-z0-9._~+/-]|%(?!(?:25)*26)[0-9A-F]{2})+"),
     r"\1" + MARK),
    # XML: <password>value</password>, <ns:ClientSecret a="b">value</ns:ClientSecret>
    (re.compile(r"(?i)(<((?:[a-z0-9_-]+:)?[a-z0-9_-]*?(?:" + _KEYS + r"))(?:\s[^<>]*)?>)(?!\[REDACTED\])[^<]+(</\2\s*>)"),
     r"\1" + MARK + r"\3"),
    # key="quoted value, maybe with blanks", key: 'quoted value', key => "value"
    (
        re.compile(r"(?i)(?<![\w-])([a-z0-9_-]*?(?:" + _KEYS + r")\]?" + _SEP + r"([\"']))(?!\[REDACTED\])"
                   r"(?:(?!\2)[^\\\n]|\\.)+(\2)"),
        r"\1" + MARK + r"\3",
    ),
    # key=value and key: value (query strings, logs, YAML, PHP's [key] => value) — not prose (_bare_value)
    (
        re.compile(r"(?i)(?<![\w-])([a-z0-9_-]*?(?:" + _KEYS + r")\]?" + _SEP + r"[\"']?)(?!\[REDACTED\])(" + _RUN + r")"),
        _bare_value,
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
    (re.compile(r"\b(xox[abposre]-)[\w-]{10,}"), r"\1" + MARK),
    (re.compile(r"\b(xapp-\d-)[\w-]+"), r"\1" + MARK),
    (re.compile(r"\b([sr]k_(?:live|test)_)[A-Za-z0-9]{10,}"), r"\1" + MARK),
    (re.compile(r"\b(gh[pousr]_)[A-Za-z0-9]{36,}"), r"\1" + MARK),
    (re.compile(r"\b(github_pat_)\w{22,}"), r"\1" + MARK),
    (re.compile(r"\b(AKIA)[0-9A-Z]{16}\b"), r"\1" + MARK),
    (re.compile(r"\b(AIza)[0-9A-Za-z_-]{35}"), r"\1" + MARK),
    (re.compile(r"\b(ya29\.)[\w-]+"), r"\1" + MARK),
    (re.compile(r"(?<![\w/])(1//)[\w-]{20,}"), r"\1" + MARK),
    (re.compile(r"\b(whsec_)[A-Za-z0-9+/=]{8,}"), r"\1" + MARK),
    (re.compile(r"\b(shp(?:at|ca|pa|ss)_)[a-fA-F0-9]{16,}"), r"\1" + MARK),
    (re.compile(r"\b(EAA)[A-Za-z0-9]{20,}"), r"\1" + MARK),  # Meta (Facebook, Instagram) access tokens
    (re.compile(r"\b(SG\.)[\w-]{16,}\.[\w-]{16,}"), r"\1" + MARK),  # SendGrid
    (re.compile(r"\b(sk-(?:proj-|ant-)?)[A-Za-z0-9_-]{20,}"), r"\1" + MARK),  # OpenAI, Anthropic
    (re.compile(r"\b(glpat-)[\w-]{20,}"), r"\1" + MARK),  # GitLab
    (re.compile(r"\b(GOCSPX-)[\w-]{20,}"), r"\1" + MARK),  # Google OAuth client secrets
    (re.compile(r"\b(pat-(?:na|eu|ap)\d-)[\w-]{20,}"), r"\1" + MARK),  # HubSpot private apps
    (re.compile(r"(?i)(api\.telegram\.org/bot\d+:)[\w-]{20,}"), r"\1" + MARK),
    (re.compile(r"(?i)(discord(?:app)?\.com/api/webhooks/\d+/)[\w-]{20,}"), r"\1" + MARK),
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
_SHAPES = [rule for rule in _RULES if rule is not _USER_PASS_HOST
           and not any(k in rule[0].pattern for k in (_KEYS, _SHORT_KEYS, "cookie"))]


def redact_shapes(text: str) -> str:
    """:func:`redact` with only the token shapes (for identifiers: see :func:`clean_id`)."""
    return _apply(_SHAPES, text) if text else text


# A field, label or log value whose name says it is a credential ("client_secret", "AccountKey", "auth"):
# its whole value is one, whatever it looks like.
# Not every "…key" names a secret here: "dedup_key", "routing_key" and "group_key" are labels that
# alerts matches and groups on; only the kinds of key that are credentials.
_NAME_KEYS = _JSON_KEYS.replace("|key)", ")") + r"|(?:proxy-)?authorization" + (
    r"|(?:api|access|secret|private|account|subscription|application|sharedaccess|client|master|signing"
    r"|encryption)[_-]?key")
_SECRET_NAME = re.compile(r"(?i)[a-z0-9_.\[\]-]*?(?:" + _NAME_KEYS + r")")


def secret_name(name: str) -> bool:
    """Whether a key's name says its value is a credential."""
    return bool(_SECRET_NAME.fullmatch(name.strip()))


def redact_value(value: object) -> object:
    """Redact every string inside a JSON-like value; a value under a credential's name is redacted whole."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: MARK if isinstance(k, str) and secret_name(k) and isinstance(v, str | int | float) and v != ""
                and not isinstance(v, bool) else redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# C0/C1 controls, bidi controls, and the invisible characters that make one id or name look like another
# ("sf\u200b-prod" reads as "sf-prod"): zero-width space, word joiner and invisible operators, BOM,
# Mongolian vowel separator, tag characters. ZWJ/ZWNJ stay: emoji and several scripts need them.
_CONTROLS = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c"
    "\u200b\u2060-\u2064\ufeff\u180e\U000e0000-\U000e007f]"
)
_LINE_SEPARATORS = re.compile("[\u2028\u2029\x85]")  # Unicode's own line breaks: a new line, or a blank
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
        text = _LINE_SEPARATORS.sub("\n", text.replace("\r\n", "\n").replace("\r", "\n"))
        text = _CONTROLS.sub(lambda m: m.group(0) if m.group(0) == "\n" else "", text)
    else:
        text = re.sub(r"[\r\n\u2028\u2029\x85]+", " ", text)
        text = _CONTROLS.sub("", text)
    return unicodedata.normalize("NFC", text)


def visible(text: str | None) -> bool:
    """Whether ``text`` has a character that shows: not only blanks, controls, zero-width or format
    characters (U+200B, a BOM, bidi marks) — an id made of those names nothing anyone can read."""
    return bool(text) and any(not c.isspace() and unicodedata.category(c)[0] not in "CZ" for c in text)  # type: ignore[union-attr]


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
    """Labels as stored and shown: keys and values sanitised and redacted; the value of a label named like
    a credential ("client_secret", "api_key") redacted whole; a label whose name is nothing once cleaned
    (control characters only) dropped."""
    out: dict[str, str] = {}
    for k, v in labels.items():
        key = clean_field(k, 100)
        if key:
            out[key] = MARK if v and secret_name(key) else clean_field(v, 1000) or ""
    return out
