"""The sweep: find the authentication failures in a log stream at the speed of a multi-pattern matcher.

Most lines of a log are not failures, so most bytes must cost almost nothing. A chunk of complete
lines (4 MiB) is handed to one *prefilter* that knows every catalog pattern at once; Python only
sees the lines it stops on, and the final word on each of those is :meth:`Catalog.classify` —
exactly the function a webhook event goes through. The prefilter may say "maybe" too often, never
too rarely:

* Every catalog pattern (Python ``re`` syntax, case-insensitive) is translated into a byte-level
  expression that matches *at least* what the pattern matches on a line of printable ASCII and
  tabs: each character position becomes the explicit set of ASCII characters Python would accept
  there (so ``\\b``, ``\\w``, case folding and character classes mean the same in both engines),
  lookarounds and back-references are widened to "anything", ``$`` also allows a CRLF ending.
* A line holding anything else (a non-ASCII byte, a control character, a CR inside the line, and
  in JSON a ``\\u``/``\\b``/``\\f`` escape) is always a candidate: Unicode case folding, NFC and the
  sanitiser can change such a line before classification, so only ``classify`` may judge it.
* For JSON Lines, each character position also accepts its JSON escape (``\\"``, ``\\/``, ``\\t``, a
  run of ``\\n``/``\\r`` where a space is accepted) and anchors/word boundaries are dropped, since
  the classified text is a decoded field, not the raw line.

Two engines run the same expressions: ``hyperscan`` (block mode over the chunk; the callback stops
at the first hit, Python handles that one line and the scan resumes after it) and, where hyperscan
is not installed, Python's ``re`` over the chunk. Both are over-approximations judged by the same
``classify``, so both give identical findings (``tests/test_scan.py`` checks it).

Memory is bounded: a chunk, plus at most 64 KiB of a line that is still waiting for its newline;
longer lines are cut to 64 KiB and flagged ``truncated`` (R3.7) while the offset moves past them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import queue
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any, BinaryIO

from alerts.catalog import Catalog
from alerts.models import AuthErrorEvent
from alerts.redact import redact, sanitize
from alerts.sources.logs import MAX_LINE, Ident, LineRules, derived_provider

try:  # x86-64 wheels only; the pure-re engine gives the same findings, slower
    import hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    hyperscan = None  # type: ignore[assignment]

__all__ = [
    "CHUNK",
    "Finding",
    "LineScanner",
    "ScanPlan",
    "UntranslatablePattern",
    "available_engines",
    "build_plan",
    "open_input",
    "over_approximation",
]

CHUNK = 4 * 1024 * 1024


class UntranslatablePattern(ValueError):
    """A regex construct the prefilter translator does not know (the pattern then matches every line)."""


# -- translating Python regexes into byte-level over-approximations --------------------------------

ALPHABET = "\t" + "".join(chr(c) for c in range(0x20, 0x7F))
_ANY = frozenset(ALPHABET)
# Bytes that make a line "special": always a candidate (see the module docstring). The expression
# runs on to the newline so that a line full of such bytes is reported once, not once per byte.
SPECIAL_TEXT = rb"(?:[^\x09\x0a\x0d\x20-\x7e]|\x0d[^\x0a])[^\x0a]*\x0a"
SPECIAL_JSON = rb"(?:[^\x09\x0a\x0d\x20-\x7e]|\x0d[^\x0a]|\x5c[bfu])[^\x0a]*\x0a"
EVERY_LINE = rb"[^\x0a]*\x0a"  # for a pattern the translator cannot handle: slow, never wrong

_CATEGORY = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
}
_BEGIN = {sre.AT_BEGINNING, sre.AT_BEGINNING_LINE, sre.AT_BEGINNING_STRING}
_END = {sre.AT_END, sre.AT_END_LINE, sre.AT_END_STRING}
_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", sre.MAX_REPEAT)}


def _u(cp: int) -> str:
    return f"\\U{cp:08x}"


@functools.lru_cache(maxsize=4096)
def _accepts(piece: str, flags: int) -> frozenset[str]:
    """The characters of :data:`ALPHABET` the one-character regex ``piece`` matches under ``flags``."""
    rx = re.compile(piece, flags & (re.IGNORECASE | re.ASCII))
    return frozenset(a for a in ALPHABET if rx.fullmatch(a))


def _class_piece(items: list[tuple[Any, Any]]) -> str:
    negate, parts = False, []
    for op, av in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            parts.append(_u(av))
        elif op is sre.RANGE:
            parts.append(f"{_u(av[0])}-{_u(av[1])}")
        elif op is sre.CATEGORY and av in _CATEGORY:
            parts.append(_CATEGORY[av])
        else:
            raise UntranslatablePattern(f"class item {op}")
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _byte(c: str, ere: bool = False) -> str:
    if c.isalnum() or c == "_":
        return c
    if ere:
        return "\\" + c if c in ".[]()*+?{}|^$\\" else c
    return f"\\x{ord(c):02x}"


def _byte_class(chars: frozenset[str], ere: bool = False) -> str:
    if len(chars) == 1:
        return _byte(next(iter(chars)), ere)
    if ere and len(chars) == 2 and len({c.lower() for c in chars}) == 1:
        return _byte(min(chars).lower(), ere)  # a case pair: grep runs with -i
    if ere:  # a POSIX bracket expression: ']' first, '-' last, '^' anywhere but first
        body = "".join(sorted(chars - {"]", "-", "^"}))
        return "[" + ("]" if "]" in chars else "") + body + ("^" if "^" in chars else "") + ("-" if "-" in chars else "") + "]"
    codes = sorted(ord(c) for c in chars)
    runs, start, prev = [], codes[0], codes[0]

    def one(code: int) -> str:
        c = chr(code)
        return c if c.isalnum() else f"\\x{code:02x}"

    for c in codes[1:] + [-2]:
        if c == prev + 1:
            prev = c
            continue
        runs.append(one(start) if start == prev else f"{one(start)}-{one(prev)}")
        start = prev = c
    return "[" + "".join(runs) + "]"


def _position(chars: frozenset[str], json: bool, ere: bool = False) -> str:
    """One character position of the text as bytes of the raw line."""
    if not chars:
        return "\xff" if ere else r"\xff"  # never on a plain ASCII line; other lines are candidates anyway
    body = _byte_class(chars, ere)
    if not json:
        return body
    escapes = [e for c, e in (('"', r"\x22"), ("\\", r"\x5c"), ("/", r"\x2f"), ("\t", "t")) if c in chars]
    alts = [body]
    if escapes:
        alts.append(r"\x5c[" + "".join(escapes) + "]")
    if " " in chars:  # the sanitiser turns a run of CR/LF into one space
        alts.append(r"(?:\x5c[nr])+")
    return "(?:" + "|".join(alts) + ")" if len(alts) > 1 else body


def _quant(lo: int, hi: int) -> str:
    if hi == sre.MAXREPEAT:
        return {0: "*", 1: "+"}.get(lo, f"{{{lo},}}")
    if (lo, hi) == (0, 1):
        return "?"
    return f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"


def _reducible(item: tuple[Any, Any]) -> bool:
    """Does this item end in a repeat that may match more than its minimum?"""
    op, av = item
    if op in _REPEATS:
        return av[1] != av[0]
    if op is sre.SUBPATTERN:
        return _tail_reducible(av[3])
    if op is getattr(sre, "ATOMIC_GROUP", None):
        return _tail_reducible(av)
    if op is sre.BRANCH:
        return any(_tail_reducible(b) for b in av[1])
    return False


def _tail_reducible(sub: Any) -> bool:
    items = [it for it in sub if it[0] is not sre.AT]
    return bool(items) and items[-1] is list(sub)[len(list(sub)) - 1 - _trailing_ats(sub)] and _reducible(items[-1])


def _trailing_ats(sub: Any) -> int:
    n = 0
    for op, _ in reversed(list(sub)):
        if op is not sre.AT:
            break
        n += 1
    return n


def _emit(sub: Any, flags: int, json: bool, ere: bool = False, tail: bool = False) -> str:
    """``tail``: only whether a match *ends* in the line matters, so a repeat the expression ends
    with is cut to its minimum (and the zero-width assertions after it dropped): the match then
    ends once per occurrence instead of once per extra character, which keeps hits few."""
    out: list[str] = []
    group = "(" if ere else "(?:"
    items = list(sub)
    reduce_at = -1
    if tail:
        last = len(items) - 1 - _trailing_ats(items)
        if last >= 0 and _reducible(items[last]):
            items, reduce_at = items[: last + 1], last

    def pos(piece: str) -> str:
        return _position(_accepts(piece, flags), json, ere)

    for index, (op, av) in enumerate(items):
        cut = index == reduce_at
        if op is sre.LITERAL:
            out.append(pos(re.escape(chr(av))))
        elif op is sre.NOT_LITERAL:
            out.append(pos("[^" + _u(av) + "]"))
        elif op is sre.IN:
            out.append(pos(_class_piece(av)))
        elif op is sre.ANY:
            out.append(_position(_ANY, json, ere))
        elif op is sre.AT:
            if json:
                continue  # the text is a decoded field; its edges and boundaries are not the raw line's
            if av in _BEGIN:
                out.append("^")
            elif av in _END:
                out.append("$" if ere else r"\x0d?$")
            elif av in (sre.AT_BOUNDARY, getattr(sre, "AT_UNI_BOUNDARY", None), getattr(sre, "AT_LOC_BOUNDARY", None)):
                out.append(r"\b")
            elif av in (sre.AT_NON_BOUNDARY, getattr(sre, "AT_UNI_NON_BOUNDARY", None)):
                out.append(r"\B")
            # anything else: an assertion we widen to "true"
        elif op is sre.BRANCH:
            out.append(group + "|".join(_emit(b, flags, json, ere, cut) for b in av[1]) + ")")
        elif op is sre.SUBPATTERN:
            _group, add, remove, p = av
            inner = _emit(p, (flags | add) & ~remove, json, ere, cut)
            if inner:
                out.append(group + inner + ")")
        elif op in _REPEATS:
            lo, hi, item = av
            if cut:
                hi = lo
                if lo == 0:
                    continue
            inner = _emit(item, flags, json, ere, cut and lo == 1)
            if inner:
                out.append(group + inner + ")" + ("" if (lo, hi) == (1, 1) else _quant(lo, hi)))
        elif op is getattr(sre, "ATOMIC_GROUP", None):
            inner = _emit(av, flags, json, ere, cut)
            if inner:
                out.append(group + inner + ")")
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            continue  # lookarounds only ever remove matches: dropping them over-approximates
        elif op is sre.GROUPREF:
            out.append("[^\n]*" if ere else r"[^\x0a]*")
        elif op is sre.GROUPREF_EXISTS:
            _group, yes, no = av
            out.append(group + _emit(yes, flags, json, ere) + "|" + (_emit(no, flags, json, ere) if no else "") + ")")
        else:
            raise UntranslatablePattern(f"unsupported construct {op}")
    return "".join(out)


@functools.lru_cache(maxsize=2048)
def over_approximation(pattern: str, flags: int = re.IGNORECASE, *, json: bool = False) -> bytes:
    """A bytes regex (hyperscan and Python ``re`` syntax) matching a line of printable ASCII whenever
    ``re.compile(pattern, flags)`` matches the line's text (for ``json``: a decoded string field of it).

    Raises :class:`UntranslatablePattern` for a construct it does not know.
    """
    parsed = sre_parse.parse(pattern, flags)
    return _emit(parsed, parsed.state.flags, json, tail=True).encode("ascii")


_JSON_ESCAPED = frozenset('"\\/\t ')  # characters a JSON string may hold as an escape sequence
MIN_LITERAL = 3


def _literal_char(chars: frozenset[str], json: bool) -> str | None:
    """The one lower-case byte a position stands for, if it is one character (in either case)."""
    lowered = {c.lower() for c in chars}
    if len(lowered) != 1:
        return None
    c = lowered.pop()
    if json and c in _JSON_ESCAPED:
        return None
    return c


def _necessary(sub: Any, flags: int, json: bool) -> frozenset[str] | None:
    """A set of literals one of which every match of ``sub`` contains, or ``None``."""
    candidates: list[frozenset[str]] = []
    run: list[str] = []

    def close() -> None:
        if len(run) >= MIN_LITERAL:
            candidates.append(frozenset(["".join(run)]))
        run.clear()

    for op, av in sub:
        char = None
        if op is sre.LITERAL:
            char = _literal_char(_accepts(re.escape(chr(av)), flags), json)
        elif op is sre.IN:
            char = _literal_char(_accepts(_class_piece(av), flags), json)
        elif op is sre.AT or op in (sre.ASSERT, sre.ASSERT_NOT):
            if json and op is sre.AT:
                close()
            continue  # zero-width: the literal run goes on
        if char is not None:
            run.append(char)
            continue
        close()
        inner: frozenset[str] | None = None
        if op is sre.SUBPATTERN:
            inner = _necessary(av[3], (flags | av[1]) & ~av[2], json)
        elif op is getattr(sre, "ATOMIC_GROUP", None):
            inner = _necessary(av, flags, json)
        elif op in _REPEATS and av[0] >= 1:
            inner = _necessary(av[2], flags, json)
        elif op is sre.BRANCH:
            alts = [_necessary(b, flags, json) for b in av[1]]
            if all(a is not None for a in alts):
                inner = frozenset().union(*alts)  # type: ignore[arg-type]
        if inner:
            candidates.append(inner)
    close()
    if not candidates:
        return None
    return max(candidates, key=lambda c: (min(len(x) for x in c), -len(c)))


@functools.lru_cache(maxsize=2048)
def required_literals(pattern: str, flags: int = re.IGNORECASE, *, json: bool = False) -> frozenset[bytes] | None:
    """Lower-case byte strings one of which is in every line :func:`over_approximation` matches
    (``None`` when the pattern has no literal of at least three characters on every path)."""
    try:
        parsed = sre_parse.parse(pattern, flags)
        found = _necessary(parsed, parsed.state.flags, json)
    except (UntranslatablePattern, re.error):
        return None
    if not found or not all(x.isascii() for x in found):
        return None
    return frozenset(x.encode("ascii") for x in found)


def as_posix_ere(pattern: str, flags: int = re.IGNORECASE) -> bytes:
    """The same over-approximation as a POSIX extended regex for ``LC_ALL=C grep -iE`` (benchmarks).

    Letters whose case does not matter are written once, in lower case: run grep with ``-i``.
    """
    parsed = sre_parse.parse(pattern, flags)
    return _emit(parsed, parsed.state.flags, False, ere=True).encode("latin-1")


# -- the two engines ---------------------------------------------------------------------------------


def available_engines() -> list[str]:
    return (["hyperscan"] if hyperscan is not None else []) + ["re"]


class _Sweep:
    """``hits(buf, pos, end)``: offsets, ascending, each inside a line of ``buf[pos:end]`` that may match.

    ``buf[pos:end]`` must end with a newline. A line can be reported more than once.
    """

    engine = "?"

    def hits(self, buf: bytes, pos: int, end: int) -> list[int]:
        raise NotImplementedError


def _collect(_id: int, _from: int, to: int, _flags: int, found: list[int]) -> None:
    found.append(to)


class _HyperscanSweep(_Sweep):
    """Block mode over the whole range, every match collected (hyperscan's literal matcher makes a
    pass over the whole block even when a callback stops it early, so stopping at each hit and
    rescanning the rest would cost the rest each time)."""

    engine = "hyperscan"

    def __init__(self, key: str, translate: Callable[[], list[bytes]]) -> None:
        """``key`` names the source patterns; ``translate`` is only called when no compiled database
        for them is cached (translating and compiling take half a second; loading, milliseconds)."""
        assert hyperscan is not None
        db = _load_cached(key)
        if db is None:
            expressions = translate()
            base = hyperscan.HS_FLAG_MULTILINE | hyperscan.HS_FLAG_ALLOWEMPTY
            flags = [base] * len(expressions)
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            try:
                db.compile(expressions=expressions, ids=list(range(len(expressions))), flags=flags)
            except hyperscan.error:
                # Find the expressions hyperscan refuses; compile those in prefilter mode (a superset).
                for i, expr in enumerate(expressions):
                    probe = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
                    try:
                        probe.compile(expressions=[expr], ids=[0], flags=[base])
                    except hyperscan.error:
                        flags[i] = base | hyperscan.HS_FLAG_PREFILTER
                db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
                db.compile(expressions=expressions, ids=list(range(len(expressions))), flags=flags)
            _store_cached(key, db)
        self._db = db
        self._local = threading.local()  # one scratch per thread (a deserialised database has none)

    def hits(self, buf: bytes, pos: int, end: int) -> list[int]:
        if pos >= end:
            return []
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        found: list[int] = []
        self._db.scan(memoryview(buf)[pos:end], match_event_handler=_collect, context=found, scratch=scratch)
        # ``to`` is exclusive: its last byte is inside the line (the newline, for SPECIAL_*).
        return [pos + max(to - 1, 0) for to in found]


class _ReSweep(_Sweep):
    """The standard library only. One alternation of every expression would cost Python's ``re`` a
    try of each alternative at each byte (well under 1 MB/s), so each expression is reduced to the
    literals one of which any match must contain (:func:`required_literals`): ``bytes.find`` looks
    for those in the lower-cased chunk, and the expression itself confirms a line that has one.
    Expressions without a usable literal are searched one by one; special lines are looked for
    only in a chunk that has a byte outside printable ASCII.
    """

    engine = "re"

    def __init__(self, expressions: list[bytes], literals: list[frozenset[bytes] | None]) -> None:
        by_literal: dict[bytes, list[re.Pattern[bytes]]] = {}
        self._scanned: list[re.Pattern[bytes]] = []
        self._special: re.Pattern[bytes] | None = None
        for expr, lits in zip(expressions, literals, strict=True):
            rx = re.compile(expr, re.MULTILINE)
            if expr in (SPECIAL_TEXT, SPECIAL_JSON):
                self._special = rx
            elif lits is None:
                self._scanned.append(rx)
            else:
                for lit in lits:
                    by_literal.setdefault(lit, []).append(rx)
        self._literals = by_literal
        self._by_literal: list[tuple[bytes, list[re.Pattern[bytes]]]] | None = None  # chosen on first use
        self._json = SPECIAL_JSON in expressions

    def hits(self, buf: bytes, pos: int, end: int) -> list[int]:
        # No translated expression crosses a newline except to end at one, so non-overlapping
        # matches cannot hide a line: every line that matches yields a match that starts in it.
        out = [m.start() for rx in self._scanned for m in rx.finditer(buf, pos, end)]
        if self._special is not None and self._maybe_special(buf, pos, end):
            out += [m.start() for m in self._special.finditer(buf, pos, end)]
        if self._by_literal is None and self._literals:
            self._by_literal = _cover(self._literals, buf[pos : min(end, pos + 256 * 1024)])
        if self._by_literal:
            low = buf[pos:end].lower()
            for lit, confirm in self._by_literal:
                i = low.find(lit)
                while i >= 0:
                    ls = low.rfind(b"\n", 0, i) + 1
                    le = low.find(b"\n", i) + 1
                    if any(rx.search(buf, pos + ls, pos + le) for rx in confirm):
                        out.append(pos + i)
                    i = low.find(lit, le)
        out.sort()
        return out

    def _maybe_special(self, buf: bytes, pos: int, end: int) -> bool:
        region = buf[pos:end]
        if self._json and b"\\" in region:
            return True
        rest = region.translate(None, _PLAIN)
        # only CRs that end a line (CRLF files) are harmless
        return bool(rest) and not (rest.count(b"\r") == len(rest) == region.count(b"\r\n"))


_PLAIN = bytes([9, 10, *range(0x20, 0x7F)])


def _cover(by_literal: dict[bytes, list[re.Pattern[bytes]]], sample: bytes) -> list[tuple[bytes, list[re.Pattern[bytes]]]]:
    """Fewer search strings: any piece of a required literal is required too, so pieces shared by
    several literals can replace them — each string costs one ``find`` pass over every chunk, and
    each of its occurrences a confirming regex search. The choice is a greedy weighted set cover,
    with the occurrence rates measured on ``sample`` (the first chunk): a piece as common as
    ``status`` or ``account`` costs more in confirmations than the passes it saves."""
    shared: dict[bytes, set[bytes]] = {}
    for lit in by_literal:
        for n in range(4, min(8, len(lit)) + 1):
            for i in range(len(lit) - n + 1):
                shared.setdefault(lit[i : i + n], set()).add(lit)
    options = {piece: lits for piece, lits in shared.items() if len(lits) > 1}
    options.update({lit: {lit} for lit in by_literal})
    low = sample.lower()
    rate = {piece: low.count(piece) / max(len(low), 1) for piece in options}
    uncovered = set(by_literal)
    chosen: list[tuple[bytes, list[re.Pattern[bytes]]]] = []
    while uncovered:
        best = max(options, key=lambda g: (len(options[g] & uncovered) / (1 + 50_000 * rate[g]), len(g), g))
        confirm: dict[int, re.Pattern[bytes]] = {}
        for lit in options[best] & uncovered:
            for rx in by_literal[lit]:
                confirm[id(rx)] = rx
        uncovered -= options[best]
        chosen.append((best, list(confirm.values())))
    return chosen


TRANSLATOR_VERSION = "3"  # bump when over_approximation or the SPECIAL expressions change


def _cache_file(key: str) -> Path | None:
    root = os.environ.get("ALERTS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "alerts")
    if not root or root == "-":
        return None
    return Path(root) / f"hs-{key}.db"


def _load_cached(key: str) -> Any:
    """A database compiled earlier for the same patterns."""
    path = _cache_file(key)
    try:
        return hyperscan.loadb(path.read_bytes(), mode=hyperscan.HS_MODE_BLOCK) if path else None
    except Exception:  # missing, stale, or built for another CPU: compile again
        return None


def _store_cached(key: str, db: Any) -> None:
    path = _cache_file(key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(hyperscan.dumpb(db))
        os.replace(tmp, path)
    except OSError:
        pass


@functools.lru_cache(maxsize=32)
def _sweep(patterns: tuple[tuple[str, int], ...], json: bool, engine: str) -> _Sweep:
    if engine == "hyperscan":
        ident = repr((TRANSLATOR_VERSION, getattr(hyperscan, "__version__", ""), sys.version_info[:2], json, patterns))
        key = hashlib.sha256(ident.encode()).hexdigest()[:32]
        return _HyperscanSweep(key, lambda: [e for e, _ in _translate_all(patterns, json=json)])
    translated = _translate_all(patterns, json=json, literals=True)
    return _ReSweep([e for e, _ in translated], [lits for _, lits in translated])


def _translate_all(patterns: Iterable[tuple[str, int]], *, json: bool,
                   literals: bool = False) -> tuple[tuple[bytes, frozenset[bytes] | None], ...]:
    out: dict[bytes, frozenset[bytes] | None] = {}
    for pattern, flags in patterns:
        try:
            expr = over_approximation(pattern, flags, json=json)
        except (UntranslatablePattern, re.error):
            out[EVERY_LINE] = None
            continue
        lits = required_literals(pattern, flags, json=json) if literals else None
        if expr in out and (out[expr] is None or lits is None):
            lits = None
        out[expr] = lits
    out[SPECIAL_JSON if json else SPECIAL_TEXT] = None
    return tuple(out.items())


def resolve_engine(engine: str = "auto") -> str:
    if engine == "auto":
        engine = os.environ.get("ALERTS_SCAN_ENGINE", "auto")
    if engine == "auto":
        return "hyperscan" if hyperscan is not None else "re"
    if engine not in ("hyperscan", "re"):
        raise ValueError(f"unknown scan engine {engine!r} (use auto, hyperscan or re)")
    if engine == "hyperscan" and hyperscan is None:
        raise ValueError("the hyperscan engine is not installed on this machine (pip install hyperscan)")
    return engine


# -- the plan: catalog + source rules + engine ----------------------------------------------------

Registry = Callable[[str], tuple[str | None, str | None] | None]  # integration id -> (provider, auth method)


def registry_of(settings: Any) -> Registry:
    """What ``[[integrations]]`` says about an integration's provider and auth method (ingest uses the
    same to fill gaps, so a finding is classified here exactly as it will be when ingested)."""

    def lookup(integration_id: str) -> tuple[str | None, str | None] | None:
        reg = settings.integration(integration_id)
        return (reg.provider, reg.auth_method) if reg else None

    return lookup


@dataclass
class ScanPlan:
    catalog: Catalog
    rules: LineRules
    candidates: _Sweep
    context: _Sweep | None
    registry: Registry | None = None

    @property
    def engine(self) -> str:
        return self.candidates.engine


def build_plan(catalog: Catalog, rules: LineRules, *, engine: str = "auto", registry: Registry | None = None) -> ScanPlan:
    """Compile the catalog's patterns (as they are now) and the source's integration rules."""
    name = resolve_engine(engine)
    json = rules.format == "json"
    patterns = [(p.regex.pattern, p.regex.flags) for p in catalog.patterns]
    candidates = _sweep(tuple(patterns), json, name)
    ident = rules.ident_patterns()
    context = _sweep(tuple(ident), json, name) if ident else None
    return ScanPlan(catalog=catalog, rules=rules, candidates=candidates, context=context, registry=registry)


# -- findings -----------------------------------------------------------------------------------------


@dataclass
class Finding:
    path: str
    line_no: int
    offset: int
    integration_id: str
    code: str
    base_code: str
    text: str
    provider: str | None = None
    auth_method: str | None = None
    account_id: str | None = None
    occurred_at: datetime | None = None
    level: str | None = None
    truncated: bool = False
    via: str = "line"
    labels: dict[str, str] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """The ``alerts scan --json`` line: contract fields first, the text redacted."""
        return {
            "path": self.path,
            "line_no": self.line_no,
            "integration_id": self.integration_id,
            "code": self.code,
            "text": redact(self.text),
            "base_code": self.base_code,
            "provider": self.provider,
            "auth_method": self.auth_method,
            "account_id": self.account_id,
            "offset": self.offset,
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
            "level": self.level,
            "truncated": self.truncated,
            "integration_from": self.via,
        }

    def event(self, *, event_id: str | None = None) -> AuthErrorEvent:
        labels = dict(self.labels)
        if self.truncated:
            labels["truncated"] = "true"
        return AuthErrorEvent(
            integration_id=self.integration_id,
            error=self.text,
            source="log",
            provider=self.provider,
            auth_method=self.auth_method,
            account_id=self.account_id,
            occurred_at=self.occurred_at,
            event_id=event_id,
            labels=labels,
        )


# -- the line scanner ---------------------------------------------------------------------------


class LineScanner:
    """Push bytes in, get findings out; keeps the partial last line and the file's context.

    ``offset`` is the byte offset just after the last *complete* line consumed (where a restart
    resumes), ``line_no`` the number of lines before it, ``context`` the last integration named at
    or before it. :meth:`finish` treats a final line without a newline as complete.
    """

    def __init__(
        self,
        plan: ScanPlan,
        *,
        path: str | None = None,
        offset: int = 0,
        line_no: int = 0,
        context: Ident | None = None,
        skip_partial: bool = False,
    ) -> None:
        self.plan = plan
        self.path = path
        self.offset = offset
        self.line_no = line_no
        self.context = context
        self.lines = 0  # complete lines consumed by this scanner
        self._fallback = plan.rules.fallback(path)
        self._carry = b""
        self._carry_len = 0  # length of the pending line so far (may exceed what _carry keeps)
        self._discard = skip_partial  # started mid-line: drop the fragment up to the next newline

    @property
    def pending(self) -> int:
        """Bytes of an incomplete last line seen but not yet consumed."""
        return self._carry_len

    def feed(self, data: bytes, hits: list[int] | None = None) -> list[Finding]:
        """Judge the complete lines in ``data`` (after what is pending); keep its incomplete end.

        ``hits``: the candidate sweep's :meth:`~_Sweep.hits` over ``data[:data.rfind(b"\\n") + 1]``,
        when another thread computed them already.
        """
        out: list[Finding] = []
        if not data:
            return out
        start = 0
        if self._discard or self._carry_len:
            nl = data.find(b"\n")
            if nl < 0:  # still inside the pending line
                if not self._discard and self._carry_len < MAX_LINE:
                    self._carry += data[: MAX_LINE - self._carry_len]
                self._carry_len += len(data)
                return out
            start = nl + 1
            if self._discard:
                self.offset += self._carry_len + start
                self._carry, self._carry_len, self._discard = b"", 0, False
            elif self._carry_len + start > MAX_LINE + 1:
                self._carry_len += start
                self._long_line(out)
            else:  # the pending line is complete: judge it on its own (a small copy)
                line = self._carry + data[:start]
                self._carry, self._carry_len = b"", 0
                self._sweep(line, 0, len(line), out)
        end = data.rfind(b"\n", start) + 1
        if end > start:
            self._sweep(data, start, end, out, hits)
        else:
            end = start
        rest = len(data) - end
        self._carry = data[end : end + min(rest, MAX_LINE)] if rest else b""
        self._carry_len = rest
        return out

    def finish(self) -> list[Finding]:
        """End of input (or rotation): a last line without a newline is a line too."""
        out: list[Finding] = []
        if self._discard:
            self.offset += self._carry_len
        elif self._carry_len > MAX_LINE:
            self._long_line(out)
        elif self._carry_len:
            line = self._carry + b"\n"
            self._carry, self._carry_len = b"", 0
            self._sweep(line, 0, len(line), out)
            self.offset -= 1  # the newline we added is not in the file
        self._carry, self._carry_len, self._discard = b"", 0, False
        return out

    # -- internals ---------------------------------------------------------------------------

    def _sweep(self, buf: bytes, start: int, end: int, out: list[Finding], hits: list[int] | None = None) -> None:
        """Judge the complete lines ``buf[start:end]`` (``buf[end - 1]`` is a newline)."""
        base = self.offset - start  # the file offset of buf[0]
        counted = next_line = start
        lines = self.line_no
        self._ctx_pos = start
        for hit in self.plan.candidates.hits(buf, start, end) if hits is None else hits:
            if hit < next_line:
                continue  # another hit in a line already judged
            ls = buf.rfind(b"\n", start, hit) + 1 or start
            le = buf.find(b"\n", hit, end)
            lines += buf.count(b"\n", counted, ls)
            counted = ls
            self._line(buf, ls, le, base, lines + 1, out)
            next_line = le + 1
        lines += buf.count(b"\n", counted, end)
        self.lines += lines - self.line_no
        self.line_no = lines
        self.offset = base + end
        self._context_before(buf, end)

    def _line(self, buf: bytes, ls: int, le: int, base: int, line_no: int, out: list[Finding]) -> None:
        truncated = le - ls > MAX_LINE
        raw = buf[ls : min(le, ls + MAX_LINE)]
        rules = self.plan.rules
        record = rules.parse(raw)
        ident = record.own
        if ident is None:
            ident = self._context_before(buf, ls) or self._fallback
        found = self._classify(record.texts, ident)
        if found is not None:
            entry, text, provider, auth = found
            if record.occurred_at is None:  # a traceback's lines carry no time; the line before it did
                record.occurred_at = self._time_before(buf, ls)
            out.append(Finding(
                path=self.path or "-",
                line_no=line_no,
                offset=base + ls,
                integration_id=ident.integration_id,
                code=entry.code,
                base_code=entry.base_code,
                text=text,
                provider=provider,
                auth_method=auth,
                account_id=ident.account_id,
                occurred_at=record.occurred_at,
                level=record.level,
                truncated=truncated,
                via=ident.via,
                labels={**rules.labels, "log_source": rules.name},
            ))
        if record.own is not None:
            self.context = replace(record.own, via="context")
            self._ctx_pos = le + 1

    def _time_before(self, buf: bytes, pos: int, lines: int = 64) -> datetime | None:
        """The timestamp of the nearest earlier line (in this chunk, at most ``lines`` back) that has one."""
        parse = self.plan.rules.parse
        end = pos - 1
        for _ in range(lines):
            if end <= 0:
                return None
            start = buf.rfind(b"\n", 0, end) + 1
            if end - start <= MAX_LINE:
                at = parse(buf[start:end]).occurred_at
                if at is not None:
                    return at
            end = start - 1
        return None

    def _classify(self, texts: list[str], ident: Ident) -> tuple[Any, str, str | None, str | None] | None:
        rules, plan = self.plan.rules, self.plan
        known = plan.registry(ident.integration_id) if plan.registry else None
        provider = plan.catalog.canonical_provider(ident.provider or rules.provider or (known[0] if known else None)
                                                   or derived_provider(ident.integration_id))
        auth = rules.auth_method or (known[1] if known else None)
        for text in texts:
            clean = sanitize(text) or ""
            result = plan.catalog.classify(clean, provider, auth)
            if result is not None:
                return result.entry, clean, provider, auth
        return None

    def _context_before(self, buf: bytes, pos: int) -> Ident | None:
        """Bring ``context`` up to ``pos``: the last line in [``_ctx_pos``, ``pos``) naming an integration."""
        sweep = self.plan.context
        if sweep is not None and self._ctx_pos < pos:
            found = self._last_ident(sweep, buf, self._ctx_pos, pos)
            if found is not None:
                self.context = replace(found, via="context")
        self._ctx_pos = max(self._ctx_pos, pos)
        return self.context

    def _last_ident(self, sweep: _Sweep, buf: bytes, lo: int, hi: int) -> Ident | None:
        # Look back in growing windows: where lines name their integration often, the first
        # small window answers; where they never do, the whole range costs one native sweep.
        right, size = hi, 4096
        own = self.plan.rules.own
        while right > lo:
            left = max(lo, right - size)
            if left > lo:
                left = buf.rfind(b"\n", lo, left) + 1 or lo
            seen = right
            for hit in reversed(sweep.hits(buf, left, right)):
                if hit >= seen:
                    continue
                ls = buf.rfind(b"\n", left, hit) + 1 or left
                le = buf.find(b"\n", hit, right)
                found = own(buf[ls : min(le, ls + MAX_LINE)])
                if found is not None:
                    return found
                seen = ls
            right, size = left, size * 8
        return None

    def _long_line(self, out: list[Finding]) -> None:
        """A line longer than MAX_LINE ended: judge its first 64 KiB, flagged truncated."""
        prefix, total = self._carry, self._carry_len
        self._carry, self._carry_len = b"", 0
        buf = prefix + b"\n"
        base = self.offset
        self._ctx_pos = 0
        if self.plan.candidates.hits(buf, 0, len(buf)):
            before = len(out)
            self._line(buf, 0, len(prefix), base, self.line_no + 1, out)
            for f in out[before:]:
                f.truncated = True
        else:
            self._context_before(buf, len(buf))
        self.line_no += 1
        self.lines += 1
        self.offset = base + total


# -- inputs ----------------------------------------------------------------------------------------


class InputError(OSError):
    """A file that cannot be read; ``str()`` is one line naming it."""


def check_readable(path: str) -> None:
    """Raise :class:`InputError` unless ``path`` is ``-`` or a readable regular file (or FIFO)."""
    if path == "-":
        return
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: Permission denied")
    del st


def open_input(path: str) -> BinaryIO:
    """A binary stream over ``path`` (``-`` = stdin); gzip is recognised by its magic bytes."""
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from None
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw, buffer_size=CHUNK)  # type: ignore[arg-type,type-var]
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered  # type: ignore[return-value]


def file_identity(path: str) -> str | None:
    """A key for "this file, as it is now" (device, inode, size, mtime): rescanning an unchanged file
    gives the same event ids, so ``alerts scan`` twice does not count a failure twice."""
    if path == "-":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def event_id_for(identity: str | None, finding: Finding) -> str | None:
    if identity is None:
        return None
    digest = hashlib.sha256(f"{identity}:{finding.offset}".encode()).hexdigest()
    return f"log-{digest[:40]}"


def scan_stream(
    stream: BinaryIO,
    plan: ScanPlan,
    *,
    path: str | None,
    progress: Callable[[int, int, int], None] | None = None,
    chunk: int = CHUNK,
) -> Iterator[Finding]:
    """Findings of a whole stream, in order. ``progress(bytes, lines, findings)`` after each chunk.

    A second thread reads the next chunk and runs the candidate sweep over it (hyperscan releases
    the GIL while it scans) while this one counts lines and judges the candidates of the last.
    """
    scanner = LineScanner(plan, path=path)
    total = found = 0
    chunks: queue.Queue[tuple[bytes, list[int]] | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                data = stream.read(chunk)
                if not data:
                    break
                end = data.rfind(b"\n") + 1
                item: tuple[bytes, list[int]] | BaseException | None = (data, plan.candidates.hits(data, 0, end))
                while not stop.is_set():
                    try:
                        chunks.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # handed to the consumer, which raises it
            chunks.put(exc)
            return
        chunks.put(None)

    reader = threading.Thread(target=produce, name="scan-reader", daemon=True)
    reader.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            data, hits = item
            total += len(data)
            for f in scanner.feed(data, hits):
                found += 1
                yield f
            if progress:
                progress(total, scanner.lines, found)
        for f in scanner.finish():
            found += 1
            yield f
        if progress:
            progress(total, scanner.lines, found)
    finally:
        stop.set()
        reader.join(timeout=5)
