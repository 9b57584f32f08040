"""Log lines: formats, line decoding and the rules that say which integration a line belongs to.

A log source (``[[log_sources]]`` in the config, or the built-in default for ``alerts scan``) is
compiled into :class:`LineRules`. Everything here works on *one* line at a time and is only called
for the few lines the sweep (``alerts/scan.py``) picked out, so it may be plain Python.

Formats
    ``text``: one line is one record. Singer/Stitch tap output (``tap - CRITICAL …``), Meltano's
    console output (``… cmd_type=elb name=tap-github … string_id=tap-github``), Airflow task logs
    (``[2024-01-15, 10:00:01 UTC] {taskinstance.py:1103} INFO - …``), Python tracebacks (the last
    line carries the exception) and key=value logs.
    ``json``: JSON Lines (Meltano ``--log-format=json``, structlog, python-json-logger). The fields
    holding the message, level, integration and timestamp are configurable (dotted paths); a line
    that is not a JSON object is read as text.

Integration, in order of precedence
    1. the line's own: ``integration_regex`` (named group ``integration``, optionally ``provider``
       and ``account``) or, in JSON, ``integration_field``;
    2. the last integration named by an earlier line of the same file (a traceback's lines do not
       repeat the tap's name; the line that started the run did);
    3. ``filename_pattern`` (``{integration}.log``, ``dag_id={integration}/*``);
    4. the source's fixed ``integration_id``;
    5. the file's name without its extensions (``tap-hubspot.log.1`` -> ``tap-hubspot``).

Bytes are decoded as UTF-8 with ``errors="replace"`` (R3.7): a broken byte never hides a line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import PurePosixPath
from typing import Any, Literal
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_INTEGRATION_REGEX",
    "Ident",
    "LineRules",
    "Record",
    "decode_line",
    "parse_timestamp",
]

MAX_LINE = 64 * 1024  # longer lines are cut to this many bytes and flagged ``truncated`` (R3.7)

# The built-in integration rules, tried in order on each line. Each names the integration the way a
# common runner prints it; users replace the list with ``integration_regex``.
DEFAULT_INTEGRATION_REGEX: tuple[str, ...] = (
    # Meltano console output: "... cmd_type=elb consumer=False name=tap-github ... string_id=tap-github"
    r"\bstring_id=(?P<integration>[\w.-]+)",
    # Airflow task logs: "ti=<TaskInstance: my_dag.my_task manual__2024-01-15T10:00:00+00:00 [queued]>"
    r"<TaskInstance: (?P<integration>[\w.-]+)\.[\w-]+ ",
    # Airflow's "Marking task as FAILED. dag_id=my_dag, task_id=..." and log paths ".../dag_id=my_dag/..."
    r"\bdag_id=(?P<integration>[\w.-]+?)[,/\s]",
    # key=value logs: integration=sf-prod, connector_id="abc", connection_id: x
    r"\b(?:integration_id|integration|connector_id|connection_id)[=:] ?\"?(?P<integration>[\w.@:-]+)",
)

_PROVIDER_PREFIXES = ("tap-", "source-", "target-", "destination-")
_STEM_SUFFIX = re.compile(r"(?:\.\d+)?(?:\.gz)?$")
_STEM_EXT = re.compile(r"\.(?:log|jsonl|json|txt|out|err)$", re.IGNORECASE)


@dataclass(frozen=True)
class Ident:
    """Who a line belongs to, and which rule said so (``line``, ``context``, ``filename``, ``fixed``, ``default``)."""

    integration_id: str
    provider: str | None = None
    account_id: str | None = None
    via: str = "line"


@dataclass
class Record:
    """One decoded line: the texts to classify (in order), its own integration, time and level."""

    texts: list[str]
    own: Ident | None = None
    occurred_at: datetime | None = None
    level: str | None = None
    is_json: bool = False


def decode_line(raw: bytes | memoryview) -> str:
    """UTF-8 with replacement characters; a trailing CR (CRLF files) is dropped."""
    text = bytes(raw).decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\r") else text


# -- timestamps -----------------------------------------------------------------------------------

_TS = re.compile(
    r"\[?(\d{4})-(\d{2})-(\d{2})(?:T|,? )(\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r" ?(Z|UTC|[+-]\d{2}:?\d{2})?"
)


def parse_timestamp(value: Any, zone: tzinfo = UTC) -> datetime | None:
    """A timestamp at the start of a text line, or a JSON field's value (RFC 3339 text or epoch seconds/ms).

    Times without an offset are taken to be in ``zone``.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    m = _TS.match(value.lstrip()[:64])
    if not m:
        return None
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        micro = int((frac or "0")[:6].ljust(6, "0"))
        at = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro)
    except ValueError:
        return None
    if off in (None, ""):
        return at.replace(tzinfo=zone).astimezone(UTC)
    if off in ("Z", "UTC"):
        return at.replace(tzinfo=UTC)
    sign = 1 if off[0] == "+" else -1
    digits = off[1:].replace(":", "")
    from datetime import timedelta, timezone

    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4]))
    return at.replace(tzinfo=timezone(sign * delta)).astimezone(UTC)


# -- the rules ------------------------------------------------------------------------------------


def _field(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _first(obj: dict[str, Any], paths: Sequence[str]) -> Any:
    for path in paths:
        value = _field(obj, path)
        if value not in (None, ""):
            return value
    return None


def _as_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)  # exc_info written as a list of traceback lines
    return json.dumps(value, ensure_ascii=False)


def _filename_regex(pattern: str) -> re.Pattern[str]:
    """``{integration}.log`` -> a regex on the path's tail; ``*`` is any run within a path segment."""
    out = []
    for token in re.split(r"(\{integration\}|\{provider\}|\{account\}|\*\*|\*)", pattern):
        if token == "{integration}":
            out.append(r"(?P<integration>[^/]+?)")
        elif token == "{provider}":
            out.append(r"(?P<provider>[^/]+?)")
        elif token == "{account}":
            out.append(r"(?P<account>[^/]+?)")
        elif token == "**":
            out.append(r".*")
        elif token == "*":
            out.append(r"[^/]*")
        else:
            out.append(re.escape(token))
    return re.compile(r"(?:^|/)" + "".join(out) + r"$")


def derived_provider(integration: str) -> str | None:
    """``tap-hubspot`` names its provider; ``sf-prod`` does not."""
    low = integration.lower()
    return low if low.startswith(_PROVIDER_PREFIXES) else None


@dataclass
class LineRules:
    """A compiled log source: how to read a line and whom it belongs to."""

    format: Literal["text", "json"] = "text"
    regexes: list[re.Pattern[str]] = field(default_factory=list)
    integration_field: list[str] = field(default_factory=list)
    message_field: list[str] = field(default_factory=list)
    level_field: list[str] = field(default_factory=list)
    timestamp_field: list[str] = field(default_factory=list)
    filename_pattern: str | None = None
    integration_id: str | None = None
    provider: str | None = None
    auth_method: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    zone: tzinfo = UTC
    name: str = "default"

    def __post_init__(self) -> None:
        self._filename = _filename_regex(self.filename_pattern) if self.filename_pattern else None

    @classmethod
    def from_source(cls, src: Any, *, format: str | None = None) -> LineRules:
        """From a :class:`~alerts.config.LogSource` (``format`` overrides the configured one)."""
        regexes = DEFAULT_INTEGRATION_REGEX if src.integration_regex is None else src.integration_regex
        return cls(
            format=format or src.format,  # type: ignore[arg-type]
            regexes=[re.compile(r) for r in regexes],
            integration_field=list(src.integration_field),
            message_field=list(src.message_field),
            level_field=list(src.level_field),
            timestamp_field=list(src.timestamp_field),
            filename_pattern=src.filename_pattern,
            integration_id=src.integration_id,
            provider=src.provider,
            auth_method=src.auth_method,
            labels=dict(src.labels),
            zone=ZoneInfo(src.timezone),
            name=src.name,
        )

    @classmethod
    def default(cls, format: Literal["text", "json"] = "text", **overrides: Any) -> LineRules:
        """The rules ``alerts scan`` uses for a file no ``[[log_sources]]`` entry claims."""
        from alerts.config import LogSource

        src = LogSource(name="default", paths=["-"], format=format)
        rules = cls.from_source(src)
        for key, value in overrides.items():
            if value is not None:
                setattr(rules, key, value)
        rules.__post_init__()
        return rules

    # -- what the sweep needs to know -------------------------------------------------------

    def ident_patterns(self) -> list[tuple[str, int]]:
        """Python regexes (with flags) that match every line :meth:`parse` can find an integration in.

        The sweep over-approximates them to find the last line that named an integration.
        """
        out = [(rx.pattern, rx.flags) for rx in self.regexes]
        if self.format == "json":
            keys = sorted({path.split(".")[-1] for path in self.integration_field})
            out += [(re.escape(f'"{key}"'), 0) for key in keys]
        return out

    # -- one line ---------------------------------------------------------------------------

    def parse(self, raw: bytes | memoryview) -> Record:
        text = decode_line(raw)
        if self.format == "json" and text.lstrip().startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                return self._parse_json(obj, text)
        return Record(texts=[text], own=self._own_text(text), occurred_at=parse_timestamp(text, self.zone))

    def _parse_json(self, obj: dict[str, Any], line: str) -> Record:
        texts = [t for t in (_as_text(_field(obj, p)) for p in self.message_field) if t]
        own = None
        value = _first(obj, self.integration_field)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            integration = str(value).strip()
            provider = _first(obj, ["provider"])
            account = _first(obj, ["account_id", "account"])
            own = Ident(
                integration,
                provider=str(provider) if isinstance(provider, str) else None,
                account_id=str(account) if isinstance(account, str | int) and not isinstance(account, bool) else None,
            )
        if own is None:
            for t in texts:
                own = self._own_text(t)
                if own:
                    break
        level = _first(obj, self.level_field)
        return Record(
            texts=texts or [line],
            own=own,
            occurred_at=parse_timestamp(_first(obj, self.timestamp_field), self.zone),
            level=str(level) if isinstance(level, str | int) else None,
            is_json=True,
        )

    def _own_text(self, text: str) -> Ident | None:
        for rx in self.regexes:
            m = rx.search(text)
            if m and m.group("integration"):
                groups = m.groupdict()
                integration = groups["integration"]
                return Ident(integration, provider=groups.get("provider"), account_id=groups.get("account"))
        return None

    def own(self, raw: bytes | memoryview) -> Ident | None:
        """The integration a line names itself, if any (used when looking back for context)."""
        return self.parse(raw).own

    def fallback(self, path: str | None) -> Ident:
        """Rules 3-5: the file name pattern, the fixed id, the file's own name."""
        if path and path != "-" and self._filename is not None:
            posix = PurePosixPath(path).as_posix()
            for candidate in (posix, _STEM_SUFFIX.sub("", posix)):
                m = self._filename.search(candidate)
                if m:
                    g = m.groupdict()
                    return Ident(g["integration"], provider=g.get("provider"), account_id=g.get("account"),
                                 via="filename")
        if self.integration_id:
            return Ident(self.integration_id, via="fixed")
        return Ident(stem(path), via="default")


def stem(path: str | None) -> str:
    """``/var/log/tap-hubspot.log.1.gz`` -> ``tap-hubspot``; stdin -> ``stdin``."""
    if not path or path == "-":
        return "stdin"
    name = PurePosixPath(path).name
    name = _STEM_SUFFIX.sub("", name)
    name = _STEM_EXT.sub("", name)
    return name or "unknown"


def rules_for(path: str, sources: Iterable[Any]) -> Any | None:
    """The first configured source whose ``paths`` glob matches ``path`` (``None``: use the default)."""
    import fnmatch
    import os

    absolute = os.path.abspath(path) if path != "-" else "-"
    for src in sources:
        for pattern in src.paths:
            expanded = os.path.abspath(os.path.expanduser(pattern)) if pattern != "-" else "-"
            if fnmatch.fnmatchcase(absolute, expanded) or fnmatch.fnmatchcase(path, pattern):
                return src
    return None
