"""The error catalog: is this text an authentication failure, which one, and what should a person do?

The knowledge is data (``catalog.toml`` beside this file, plus ``[catalog]`` in the user's config);
this module only loads it and matches text against it::

    catalog = load_catalog()
    result = catalog.classify("invalid_grant: Token has been expired or revoked.", provider="google")
    result.entry.code        # "invalid_grant"
    result.entry.solution    # what to do
    result.match             # which pattern matched, where

Matching rules, in order of precedence:

1. a pattern for the event's own provider (``provider = "google"`` and the hint is google),
2. a pattern for no particular provider (generic wording: RFC 6749, HTTP 401/403 …),
3. a pattern for another provider, unless it is ``strict`` (wording that means something else elsewhere).

Within a tier, the first entry in file order wins, so finer codes are listed before their base code.
A generic match is vetoed by an ``[[exclude]]`` pattern (rate limits, IP allow-lists …) on the same text.
Patterns can require an auth method (``auth_method = "api_key"``): the same ``401`` means a bad key
for an API-key integration and an expired token for an OAuth one.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from alerts.models import CatalogEntry, Classification, Match, Severity

__all__ = ["Catalog", "CatalogError", "Pattern", "canonical_provider", "load_catalog"]


class CatalogError(ValueError):
    """A catalog entry or pattern is invalid; the message names the entry and key."""


@dataclass(frozen=True)
class Pattern:
    code: str
    regex: re.Pattern[str]
    provider: str | None = None
    auth_method: str | None = None
    strict: bool = False


_PREFIXES = ("tap-", "source-", "destination-", "target-", "platform.", "airbyte/source-", "singer-io/tap-")


class Catalog:
    def __init__(
        self,
        entries: Iterable[CatalogEntry],
        patterns: Iterable[Pattern],
        excludes: Iterable[re.Pattern[str]] = (),
        aliases: Mapping[str, str] | None = None,
        lifetimes: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.entries: dict[str, CatalogEntry] = {e.code: e for e in entries}
        self.patterns: list[Pattern] = list(patterns)
        self.excludes: list[re.Pattern[str]] = list(excludes)
        self.aliases: dict[str, str] = dict(aliases or {})
        self.lifetimes: dict[str, dict[str, Any]] = dict(lifetimes or {})
        order = {code: i for i, code in enumerate(self.entries)}
        self.patterns.sort(key=lambda p: order.get(p.code, len(order)))
        # One pass of a combined expression tells whether any pattern can match at all; most log
        # lines are not auth failures and cost this one search.
        self._any = re.compile("|".join(f"(?:{p.regex.pattern})" for p in self.patterns), re.IGNORECASE)

    def __contains__(self, code: str) -> bool:
        return code in self.entries

    def get(self, code: str | None) -> CatalogEntry | None:
        return self.entries.get(code) if code else None

    def canonical_provider(self, name: str | None) -> str | None:
        return canonical_provider(name, self.aliases)

    def classify(
        self, text: str | None, provider: str | None = None, auth_method: str | None = None
    ) -> Classification | None:
        """The catalog entry ``text`` describes, or ``None`` when it is not an authentication failure."""
        if not text or not self._any.search(text):
            return None
        hint = self.canonical_provider(provider)
        best: tuple[int, int, Pattern, re.Match[str]] | None = None
        for index, pat in enumerate(self.patterns):
            if pat.auth_method and pat.auth_method != auth_method:
                continue
            if pat.provider is None:
                tier = 1
            elif pat.provider == hint:
                tier = 0
            elif pat.strict:
                continue
            else:
                tier = 2
            if best is not None and (tier, index) >= (best[0], best[1]):
                continue
            m = pat.regex.search(text)
            if m is None:
                continue
            if tier > 0 and any(x.search(text) for x in self.excludes):
                continue
            best = (tier, index, pat, m)
            if tier == 0:
                break
        if best is None:
            return None
        _, _, pat, m = best
        return Classification(
            entry=self.entries[pat.code],
            match=Match(provider=pat.provider, start=m.start(), end=m.end(), text=m.group(0)),
        )

    def by_code(self, code: str | None) -> Classification | None:
        """An explicit ``error_code`` from a source, when it names a catalog entry."""
        entry = self.get(code)
        return Classification(entry=entry) if entry else None


def canonical_provider(name: str | None, aliases: Mapping[str, str] | None = None) -> str | None:
    """``Tap-HubSpot`` -> ``hubspot``; ``meta`` -> ``facebook``; unknown names pass through lower-cased."""
    if not name:
        return None
    key = name.strip().lower().replace(" ", "_")
    if aliases and key in aliases:
        return aliases[key]
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    if aliases and key in aliases:
        return aliases[key]
    return key or None


def _entry(raw: dict[str, Any], where: str) -> CatalogEntry:
    try:
        return CatalogEntry(
            code=str(raw["code"]),
            title=str(raw["title"]),
            cause=str(raw["cause"]),
            solution=str(raw["solution"]),
            action=str(raw["action"]),
            severity=Severity(raw.get("severity", "error")),
            refines=raw.get("refines"),
            docs=raw.get("docs"),
            causes=tuple(raw.get("causes", ())),
            remediation=dict(raw.get("remediation", {})),
        )
    except KeyError as exc:
        raise CatalogError(f"{where}: missing key {exc.args[0]!r}") from None
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}") from None


def _patterns(raw: dict[str, Any], code: str, where: str, aliases: Mapping[str, str]) -> list[Pattern]:
    out = []
    for i, p in enumerate(raw.get("patterns", [])):
        if isinstance(p, str):
            p = {"regex": p}
        try:
            rx = re.compile(p["regex"], re.IGNORECASE)
        except KeyError:
            raise CatalogError(f"{where}.patterns[{i}]: missing key 'regex'") from None
        except re.error as exc:
            raise CatalogError(f"{where}.patterns[{i}].regex: {exc}") from None
        out.append(
            Pattern(
                code=code,
                regex=rx,
                provider=canonical_provider(p.get("provider"), aliases),
                auth_method=p.get("auth_method"),
                strict=bool(p.get("strict", False)),
            )
        )
    return out


def _build(docs: list[tuple[str, dict[str, Any]]], disabled: Iterable[str] = ()) -> Catalog:
    aliases: dict[str, str] = {}
    lifetimes: dict[str, dict[str, Any]] = {}
    for _, doc in docs:
        for canonical, names in doc.get("providers", {}).items():
            aliases[canonical] = canonical
            for alias in names.get("aliases", []) if isinstance(names, dict) else names:
                aliases[alias.lower()] = canonical
            if isinstance(names, dict) and "token_lifetime" in names:
                lifetimes[canonical] = names["token_lifetime"]
    entries: dict[str, CatalogEntry] = {}
    patterns: dict[str, list[Pattern]] = {}
    excludes: list[re.Pattern[str]] = []
    for origin, doc in docs:
        for i, raw in enumerate(doc.get("entries", [])):
            where = f"{origin}.entries[{raw.get('code', i)}]"
            code = raw.get("code")
            if code in entries and set(raw) - {"code", "patterns"}:
                merged = {**_entry_dict(entries[code]), **raw}
                merged["remediation"] = {**entries[code].remediation, **raw.get("remediation", {})}
                entries[code] = _entry(merged, where)
            elif code not in entries:
                entries[code] = _entry(raw, where)
            patterns.setdefault(code, []).extend(_patterns(raw, code, where, aliases))
        for i, raw in enumerate(doc.get("exclude", [])):
            try:
                excludes.append(re.compile(raw["regex"] if isinstance(raw, dict) else raw, re.IGNORECASE))
            except re.error as exc:
                raise CatalogError(f"{origin}.exclude[{i}].regex: {exc}") from None
    for code in disabled:
        entries.pop(code, None)
        patterns.pop(code, None)
    for code, entry in entries.items():
        if entry.refines and entry.refines not in entries:
            raise CatalogError(f"entries[{code}].refines: unknown code {entry.refines!r}")
    flat = [p for code in entries for p in patterns.get(code, [])]
    return Catalog(entries.values(), flat, excludes, aliases, lifetimes)


def _entry_dict(e: CatalogEntry) -> dict[str, Any]:
    return {
        "code": e.code,
        "title": e.title,
        "cause": e.cause,
        "solution": e.solution,
        "action": e.action,
        "severity": str(e.severity),
        "refines": e.refines,
        "docs": e.docs,
        "causes": list(e.causes),
        "remediation": dict(e.remediation),
    }


def builtin_document() -> dict[str, Any]:
    text = resources.files("alerts").joinpath("catalog.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def load_catalog(
    extra_entries: Iterable[dict[str, Any]] = (), disabled: Iterable[str] = ()
) -> Catalog:
    """The built-in catalog, with the user's ``[catalog]`` additions and overrides applied.

    A user entry whose ``code`` exists overrides the fields it gives and adds its patterns;
    a new ``code`` adds an entry. ``disabled`` codes are removed.
    """
    docs = [("catalog.toml", builtin_document())]
    extra = list(extra_entries)
    if extra:
        docs.append(("config.catalog", {"entries": extra}))
    return _build(docs, disabled)
