"""The error catalog: is this text an authentication failure, which one, and what should a person do?

The knowledge is data (``catalog.toml`` beside this file, plus ``[catalog]`` in the user's config);
this module only loads it and matches text against it::

    catalog = load_catalog()
    result = catalog.classify("invalid_grant: Token has been expired or revoked.", provider="google")
    result.entry.code        # "invalid_grant"
    result.entry.solution    # what to do
    result.match             # which pattern matched, where

How a text is classified:

1. One prefilter pass over the text answers "which patterns and excludes could match?" — hyperscan
   over all of them at once for ASCII text (built in the background after ``HYPERSCAN_AFTER`` texts,
   or by :meth:`Catalog.prepare`), else literal anchors read off each regex. Most log lines are not
   authentication failures and cost exactly this pass; only candidates are searched with ``re``.
   (One ``re`` alternation of every pattern, the obvious prefilter, costs more than searching each
   pattern in turn: Python's ``re`` tries every branch at every position.)
2. Any ``[[exclude]]`` match (rate limits, IP allow-lists, clock skew …) vetoes the text.
3. The best matching pattern wins. Patterns are ranked, once per (provider, auth method), by

   - ``weak`` last (bare HTTP status forms such as ``401 Unauthorized``),
   - then the event's own provider, other providers' non-``strict`` wording, generic wording,
   - then a pattern naming the event's auth method before one naming none,
   - then file order.

   Patterns for another auth method, and ``strict`` patterns of another provider, never apply.
   An event without an auth method takes its provider's usual one (``[providers]``).
4. If a finer code refining the winner's code also matches, the finer code wins.

Every pattern must also compile under hyperscan (the log scanner matches whole files with it), so
lookaround, backreferences, atomic groups and possessive quantifiers are refused at load time.
"""

from __future__ import annotations

import re
import threading
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from alerts.models import BASE_CODES, CatalogEntry, Classification, Match, Severity

try:  # the log scanner's matcher, and classify's prefilter where it is installed (x86-64)
    import hyperscan
except ImportError:  # pragma: no cover - other platforms fall back to the pure-Python prefilter
    hyperscan = None  # type: ignore[assignment]

try:  # Python 3.11+: the parser behind ``re`` (used to refuse what hyperscan cannot compile)
    from re import _constants as _sre_c  # type: ignore[attr-defined]
    from re import _parser as _sre_p  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - older layouts
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_p  # type: ignore[no-redef]

__all__ = ["AUTH_METHODS", "Catalog", "CatalogError", "Pattern", "canonical_provider", "load_catalog"]

AUTH_METHODS = ("oauth2", "api_key", "basic")
FLAGS = re.IGNORECASE
BUILTIN = "catalog.toml"
HYPERSCAN_AFTER = 2000  # texts classified before the hyperscan prefilter is built (in the background)


class CatalogError(ValueError):
    """A catalog entry or pattern is invalid; the message names the entry and key."""


@dataclass(frozen=True)
class Pattern:
    code: str
    regex: re.Pattern[str]
    provider: str | None = None
    auth_method: str | None = None
    strict: bool = False
    weak: bool = False


# Singer/Meltano, Airbyte, destinations, Stitch: ``tap-hubspot``, ``source-hubspot``, ``platform.hubspot``.
_PREFIXES = ("tap-", "tap_", "source-", "source_", "destination-", "target-", "platform.")
_ENTRY_KEYS = {"code", "title", "cause", "solution", "action", "severity", "refines", "docs", "causes",
               "remediation", "patterns"}
_PATTERN_KEYS = {"regex", "provider", "auth_method", "strict", "weak"}


class Catalog:
    def __init__(
        self,
        entries: Iterable[CatalogEntry],
        patterns: Iterable[Pattern],
        excludes: Iterable[re.Pattern[str]] = (),
        aliases: Mapping[str, str] | None = None,
        lifetimes: Mapping[str, dict[str, Any]] | None = None,
        default_auth: Mapping[str, str] | None = None,
        *,
        accelerate: bool = True,
    ) -> None:
        self.entries: dict[str, CatalogEntry] = {e.code: e for e in entries}
        order = {code: i for i, code in enumerate(self.entries)}
        self.patterns: list[Pattern] = sorted(patterns, key=lambda p: order.get(p.code, len(order)))
        self.excludes: list[re.Pattern[str]] = list(excludes)
        self.aliases: dict[str, str] = dict(aliases or {})
        self.lifetimes: dict[str, dict[str, Any]] = dict(lifetimes or {})
        self.default_auth: dict[str, str] = dict(default_auth or {})
        self.providers: frozenset[str] = frozenset(self.aliases.values())
        # The prefilter: one pass over the text for every pattern and exclude at once. Most log lines
        # are not authentication failures and cost exactly this pass.
        self._prefilter = _Prefilter([p.regex.pattern for p in self.patterns] + [x.pattern for x in self.excludes],
                                     accelerate=accelerate)
        self._finer: dict[str, set[str]] = {}
        for e in self.entries.values():
            if e.refines:
                self._finer.setdefault(e.refines, set()).add(e.code)
        self._plans: dict[tuple[str | None, str | None], tuple[int, ...]] = {}

    @property
    def engine(self) -> str:
        """The prefilter in use: ``hyperscan`` (for ASCII text) or ``re`` (literal anchors)."""
        return self._prefilter.engine

    def prepare(self) -> str:
        """Build the hyperscan prefilter now rather than in the background after heavy use.

        Worth calling before classifying a large log; returns the engine now in use.
        """
        return self._prefilter.compile()

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
        if not text:
            return None
        candidates, exact = self._prefilter(text)
        if not candidates:
            return None
        n = len(self.patterns)
        for i in candidates:
            if i >= n and (exact or self.excludes[i - n].search(text)):
                return None
        hint = self.canonical_provider(provider)
        if hint not in self.providers:
            hint = None  # an unknown provider is no error: it just gets no provider-specific help
        auth = (auth_method or "").strip().lower() or self.default_auth.get(hint or "")
        if auth not in AUTH_METHODS:
            auth = None
        plan = self._plan(hint, auth)
        patterns = self.patterns
        for i in plan:
            if i in candidates:
                m = patterns[i].regex.search(text)
                if m is not None:
                    pat = patterns[i]
                    break
        else:
            return None
        finer = self._finer.get(pat.code)
        if finer:  # a refinement that also matches says more than its base code
            for i in plan:
                if i in candidates and patterns[i].code in finer:
                    fm = patterns[i].regex.search(text)
                    if fm is not None:
                        pat, m = patterns[i], fm
                        break
        return Classification(
            entry=self.entries[pat.code],
            match=Match(provider=pat.provider, start=m.start(), end=m.end(), text=m.group(0)),
        )

    def _plan(self, hint: str | None, auth: str | None) -> tuple[int, ...]:
        """Indices of the patterns that apply to this provider and auth method, best first (cached)."""
        key = (hint, auth)
        plan = self._plans.get(key)
        if plan is None:
            ranked = []
            for index, p in enumerate(self.patterns):
                if p.auth_method is not None and p.auth_method != auth:
                    continue
                if p.provider is None:
                    tier = 2
                elif p.provider == hint:
                    tier = 0
                elif p.strict:
                    continue
                else:
                    tier = 1
                ranked.append((p.weak, tier, p.auth_method is None, index))
            ranked.sort()
            plan = self._plans[key] = tuple(r[-1] for r in ranked)
        return plan

    def by_code(self, code: str | None) -> Classification | None:
        """An explicit ``error_code`` from a source, when it names a catalog entry."""
        entry = self.get(code)
        return Classification(entry=entry) if entry else None


def canonical_provider(name: str | None, aliases: Mapping[str, str] | None = None) -> str | None:
    """``Tap-HubSpot`` -> ``hubspot``; ``meta`` -> ``facebook``; ``salesforce_sandbox`` -> ``salesforce``.

    Unknown names pass through lower-cased, without a ``tap-``/``source-``/``platform.`` prefix.
    """
    if not name:
        return None
    key = name.strip().lower().replace(" ", "_")
    key = key.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]  # airbyte/source-x:1.2.3
    aliases = aliases or {}
    if _norm(key) in aliases:
        return aliases[_norm(key)]
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    norm = _norm(key)
    if norm in aliases:
        return aliases[norm]
    # Fivetran connector types and plugin variants: salesforce_sandbox, google_analytics_4, hubspot--x
    cut = len(norm)
    while (cut := norm.rfind("_", 0, cut)) > 0:
        if norm[:cut] in aliases:
            return aliases[norm[:cut]]
    return key or None


def _norm(key: str) -> str:
    return key.replace("-", "_")


class _Prefilter:
    """Which of ``sources`` (case-insensitive regexes) can match a text, in one pass.

    With hyperscan, ASCII text is scanned once against all of them and the answer is exact (for ASCII
    text hyperscan and ``re`` agree on every construct the catalog allows). Otherwise each regex has
    *anchors* — literal strings one of which every match must contain, read off its parse tree — and the
    answer is the regexes with an anchor in the case-folded text: a superset, confirmed by ``re``.
    """

    _NOT_PLAIN = re.compile("[\x1c-\x1f]")  # ``re`` counts these as whitespace, hyperscan does not

    def __init__(self, sources: list[str], *, accelerate: bool = True) -> None:
        self.sources = sources
        by_anchor: dict[str, set[int]] = {}
        self.always: frozenset[int] = frozenset(
            i for i, src in enumerate(sources) if not _add_anchors(by_anchor, i, src)
        )
        self.anchors = [(a, frozenset(ix)) for a, ix in sorted(by_anchor.items())]
        self._hs_wanted = accelerate and hyperscan is not None
        self._hs_db: Any = None
        self._hs_ids: list[tuple[int, ...]] = []
        self._hs_lock = threading.Lock()
        self._local = threading.local()
        self._uses = 0

    @property
    def engine(self) -> str:
        return "hyperscan" if self._hs_db is not None else "re"

    def __call__(self, text: str) -> tuple[frozenset[int] | set[int], bool]:
        """``(candidates, exact)``: the sources that may match (exactly those that match when ``exact``)."""
        db = self._hs_db
        if db is not None:
            if text.isascii() and not self._NOT_PLAIN.search(text):
                hits: list[int] = []
                db.scan(text.encode("ascii"), match_event_handler=_on_hit, context=hits, scratch=self._scratch(db))
                if not hits:
                    return frozenset(), True
                ids = self._hs_ids
                return {i for h in hits for i in ids[h]}, True
        elif self._hs_wanted:
            # Building the hyperscan database takes about a second: worth it for a log, not for one
            # `alerts explain`. After enough texts it is built in the background; until then, anchors.
            self._uses += 1
            if self._uses == HYPERSCAN_AFTER:
                threading.Thread(target=self.compile, name="catalog-prefilter", daemon=True).start()
        folded = text.casefold()
        found = set(self.always)
        for anchor, indices in self.anchors:
            if anchor in folded:
                found |= indices
        return found, False

    def compile(self) -> str:
        """Build the hyperscan database now (no-op without hyperscan); returns the engine in use."""
        with self._hs_lock:
            if self._hs_db is None and self._hs_wanted:
                unique: dict[str, list[int]] = {}
                for i, src in enumerate(self.sources):
                    unique.setdefault(src, []).append(i)
                db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
                flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH
                try:
                    db.compile(expressions=[s.encode() for s in unique], ids=list(range(len(unique))),
                               elements=len(unique), flags=[flags] * len(unique))
                except Exception:  # every pattern was checked at load; never lose matches over it
                    self._hs_wanted = False
                    return self.engine
                self._hs_ids = [tuple(ix) for ix in unique.values()]
                self._hs_db = db
        return self.engine

    def _scratch(self, db: Any) -> Any:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:  # hyperscan scratch space is per thread
            scratch = self._local.scratch = hyperscan.Scratch(db)
        return scratch


def _on_hit(pattern_id: int, start: int, end: int, flags: int, hits: list[int]) -> None:
    hits.append(pattern_id)


def _add_anchors(by_anchor: dict[str, set[int]], index: int, source: str) -> bool:
    """Record ``source``'s anchors; ``False`` when it has none worth gating on (then it is always tried)."""
    anchors = _anchors(_sre_p.parse(source, FLAGS))
    if not anchors or min(map(len, anchors)) < 2:
        return False
    for a in anchors:
        by_anchor.setdefault(a, set()).add(index)
    return True


# Words so common in logs that an anchor made of them lets nearly every line through.
_COMMON = frozenset({"http", "https", "http/", "status", "code", "error", "info", "access", "token", "user", "api"})


def _anchors(seq: Any) -> list[str] | None:
    """Literal strings (case-folded) one of which every match of the parsed sequence ``seq`` contains."""
    options: list[list[str]] = []
    run: list[str] = [""]  # the literal run so far, expanded over small classes like [_ ]

    def flush() -> None:
        if run != [""]:
            options.append(sorted({r.casefold() for r in run}))
        run[:] = [""]

    for op, av in seq.data:
        if op is _sre_c.LITERAL:
            run[:] = [r + chr(av) for r in run]
            continue
        if op is _sre_c.IN and len(av) <= 3 and all(o is _sre_c.LITERAL for o, _ in av) and len(run) <= 4:
            run[:] = [r + chr(v) for r in run for _, v in av]
            continue
        flush()
        inner: list[str] | None = None
        if op is _sre_c.SUBPATTERN:
            inner = _anchors(av[-1])
        elif op is _sre_c.BRANCH:
            parts = [_anchors(branch) for branch in av[1]]
            if all(parts):
                inner = sorted({a for part in parts for a in part})  # type: ignore[union-attr]
        elif op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT) and av[0] >= 1:
            inner = _anchors(av[2])
        if inner:
            options.append(inner)
    flush()
    if not options:
        return None
    return max(options, key=_selectivity)


def _selectivity(option: list[str]) -> tuple[int, int]:
    """How well a set of anchors separates matches from ordinary lines: long, uncommon, few."""
    return min(len(a) - (4 if a.strip() in _COMMON else 0) for a in option), -len(option)


# -- loading -----------------------------------------------------------------------------------


def _check_regex(source: Any, where: str, *, with_hyperscan: bool = False) -> re.Pattern[str]:
    """Compile one catalog regex, refusing what the log scanner's hyperscan cannot compile.

    ``with_hyperscan`` also compiles it with hyperscan where installed (user patterns; the built-in
    ones are tested), with the flags the log scanner uses.
    """
    if not isinstance(source, str) or not source:
        raise CatalogError(f"{where}: must be a non-empty string")
    try:
        rx = re.compile(source, FLAGS)
        re.compile(f"(?:{source})|x", FLAGS)  # it must also combine with the others
        parsed = _sre_p.parse(source, FLAGS)
    except re.error as exc:
        hint = " (patterns are already case-insensitive; drop the inline flags)" if "global flags" in str(exc) else ""
        raise CatalogError(f"{where}: {exc}{hint}") from None
    if parsed.state.groupdict:
        raise CatalogError(f"{where}: named groups are not supported; use (?:...)")
    problem = _unportable(parsed)
    if problem:
        raise CatalogError(f"{where}: {problem} are not supported (patterns must also compile under hyperscan)")
    if parsed.getwidth()[0] == 0:
        raise CatalogError(f"{where}: matches the empty string, so it would match every line")
    if with_hyperscan and hyperscan is not None:
        flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_UTF8
        try:
            hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK).compile(
                expressions=[source.encode()], ids=[0], elements=1, flags=[flags])
        except hyperscan.error as exc:
            raise CatalogError(f"{where}: hyperscan cannot compile it: {exc}") from None
    return rx


_UNPORTABLE = {
    _sre_c.ASSERT: "lookahead/lookbehind assertions",
    _sre_c.ASSERT_NOT: "lookahead/lookbehind assertions",
    _sre_c.GROUPREF: "backreferences",
    _sre_c.GROUPREF_EXISTS: "conditional groups",
}
for _name, _what in (("ATOMIC_GROUP", "atomic groups"), ("POSSESSIVE_REPEAT", "possessive quantifiers")):
    if hasattr(_sre_c, _name):
        _UNPORTABLE[getattr(_sre_c, _name)] = _what


def _unportable(node: Any) -> str | None:
    if isinstance(node, _sre_p.SubPattern):
        for op, av in node.data:
            if op in _UNPORTABLE:
                return _UNPORTABLE[op]
            found = _unportable(av)
            if found:
                return found
    elif isinstance(node, (list, tuple)):
        for item in node:
            found = _unportable(item)
            if found:
                return found
    return None


def _entry(raw: Mapping[str, Any], where: str) -> CatalogEntry:
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise CatalogError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    for key in ("code", "title", "cause", "solution", "action"):
        if key not in raw:
            raise CatalogError(f"{where}: missing key {key!r}")
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise CatalogError(f"{where}.{key}: must be a non-empty string")
    severity = raw.get("severity", "error")
    if severity not in Severity.__members__:
        raise CatalogError(f"{where}.severity: must be one of {', '.join(Severity.__members__)}, not {severity!r}")
    remediation = raw.get("remediation") or {}
    if not isinstance(remediation, Mapping):
        raise CatalogError(f"{where}.remediation: must be a table of auth method = text")
    for method, text in remediation.items():
        if method not in AUTH_METHODS:
            raise CatalogError(f"{where}.remediation.{method}: unknown auth method (use {', '.join(AUTH_METHODS)})")
        if not isinstance(text, str) or not text.strip():
            raise CatalogError(f"{where}.remediation.{method}: must be a non-empty string")
    causes = raw.get("causes") or ()
    if isinstance(causes, str) or not all(isinstance(c, str) for c in causes):
        raise CatalogError(f"{where}.causes: must be a list of strings")
    for key in ("refines", "docs"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise CatalogError(f"{where}.{key}: must be a string")
    return CatalogEntry(
        code=raw["code"],
        title=raw["title"],
        cause=raw["cause"],
        solution=raw["solution"],
        action=raw["action"],
        severity=Severity(severity),
        refines=raw.get("refines"),
        docs=raw.get("docs"),
        causes=tuple(causes),
        remediation=dict(remediation),
    )


def _patterns(
    raw: Mapping[str, Any], code: str, where: str, aliases: Mapping[str, str], *, user: bool = False
) -> list[Pattern]:
    items = raw.get("patterns") or []
    if not isinstance(items, list):
        raise CatalogError(f"{where}.patterns: must be a list")
    out = []
    for i, p in enumerate(items):
        at = f"{where}.patterns[{i}]"
        if isinstance(p, str):
            p = {"regex": p}
        if not isinstance(p, Mapping):
            raise CatalogError(f"{at}: must be a string or a table with 'regex'")
        unknown = set(p) - _PATTERN_KEYS
        if unknown:
            raise CatalogError(f"{at}: unknown key {sorted(unknown)[0]!r}")
        if "regex" not in p:
            raise CatalogError(f"{at}: missing key 'regex'")
        auth = p.get("auth_method")
        if auth is not None and auth not in AUTH_METHODS:
            raise CatalogError(f"{at}.auth_method: must be one of {', '.join(AUTH_METHODS)}, not {auth!r}")
        for flag in ("strict", "weak"):
            if not isinstance(p.get(flag, False), bool):
                raise CatalogError(f"{at}.{flag}: must be true or false")
        provider = p.get("provider")
        if provider is not None and (not isinstance(provider, str) or not provider.strip()):
            raise CatalogError(f"{at}.provider: must be a provider name")
        out.append(
            Pattern(
                code=code,
                regex=_check_regex(p["regex"], f"{at}.regex", with_hyperscan=user),
                provider=canonical_provider(provider, aliases),
                auth_method=auth,
                strict=p.get("strict", False),
                weak=p.get("weak", False),
            )
        )
    return out


def _build(docs: list[tuple[str, dict[str, Any]]], disabled: Iterable[str] = (), *, accelerate: bool = True) -> Catalog:
    aliases: dict[str, str] = {}
    lifetimes: dict[str, dict[str, Any]] = {}
    default_auth: dict[str, str] = {}
    for _, doc in docs:
        for canonical, spec in doc.get("providers", {}).items():
            aliases[_norm(canonical)] = canonical
            names = spec.get("aliases", []) if isinstance(spec, dict) else spec
            for alias in names:
                aliases[_norm(alias.lower())] = canonical
            if isinstance(spec, dict) and "token_lifetime" in spec:
                lifetimes[canonical] = spec["token_lifetime"]
            if isinstance(spec, dict) and spec.get("auth_method"):
                default_auth[canonical] = spec["auth_method"]
    entries: dict[str, CatalogEntry] = {}
    patterns: dict[str, list[Pattern]] = {}
    excludes: list[re.Pattern[str]] = []
    for origin, doc in docs:
        user = origin != BUILTIN
        for i, raw in enumerate(doc.get("entries", [])):
            if not isinstance(raw, Mapping):
                raise CatalogError(f"{origin}.entries[{i}]: must be a table")
            code = raw.get("code")
            if not isinstance(code, str) or not code.strip():
                raise CatalogError(f"{origin}.entries[{i}]: missing key 'code'")
            where = f"{origin}.entries[{code}]"
            if code in entries:  # an override: the fields it gives replace, its patterns add
                merged = {**_entry_dict(entries[code]), **raw}
                merged["remediation"] = {**entries[code].remediation, **(raw.get("remediation") or {})}
                if merged.get("refines") != entries[code].refines:
                    raise CatalogError(f"{where}.refines: cannot change what an existing entry refines")
                entries[code] = _entry(merged, where)
            else:
                refines = raw.get("refines")
                if refines is None and code not in BASE_CODES:
                    raise CatalogError(f"{where}: a new entry must name the base code it refines "
                                       f"(refines = one of {', '.join(BASE_CODES)})")
                if refines is not None and refines not in BASE_CODES:
                    raise CatalogError(f"{where}.refines: must be one of the base codes {', '.join(BASE_CODES)}")
                base = entries.get(refines or "")
                # a new finer code inherits what it does not say from its base code
                filled = {**_entry_dict(base), **raw} if base else dict(raw)
                filled.pop("patterns", None)
                entries[code] = _entry(filled, where)
            patterns.setdefault(code, []).extend(_patterns(raw, code, where, aliases, user=user))
        for i, raw in enumerate(doc.get("exclude", [])):
            source = raw.get("regex") if isinstance(raw, Mapping) else raw
            excludes.append(_check_regex(source, f"{origin}.exclude[{i}].regex", with_hyperscan=user))
    disabled = list(disabled)
    for code in disabled:
        if code not in entries:
            raise CatalogError(f"catalog.disable: unknown code {code!r}")
    gone = set(disabled) | {c for c, e in entries.items() if e.refines in disabled}  # refinements go too
    for code in gone:
        entries.pop(code, None)
        patterns.pop(code, None)
    for code, entry in entries.items():
        if entry.refines is not None and entry.refines not in entries:
            raise CatalogError(f"entries[{code}].refines: unknown code {entry.refines!r}")
    flat = [p for code in entries for p in patterns.get(code, [])]
    return Catalog(entries.values(), flat, excludes, aliases, lifetimes, default_auth, accelerate=accelerate)


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
    extra_entries: Iterable[Mapping[str, Any]] = (), disabled: Iterable[str] = (), *, accelerate: bool = True
) -> Catalog:
    """The built-in catalog, with the user's ``[catalog]`` additions and overrides applied.

    A user entry whose ``code`` exists overrides the fields it gives (``remediation`` key by key) and
    adds its patterns; a new ``code`` adds a finer entry, which must name the base code it ``refines``
    and inherits the fields it leaves out. ``disabled`` codes (and their refinements) are removed.
    Problems raise :class:`CatalogError` naming the entry and key, e.g.
    ``catalog.entries[our_sso].patterns[0].regex: missing ), unterminated subpattern at position 0``.
    ``accelerate=False`` keeps hyperscan out of the prefilter (the pure-``re`` path, for comparison).
    """
    docs = [(BUILTIN, builtin_document())]
    extra = list(extra_entries)
    if extra:
        docs.append(("catalog", {"entries": extra}))
    return _build(docs, disabled, accelerate=accelerate)
